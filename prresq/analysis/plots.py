"""Figures of runs, sweeps and studies (matplotlib): `plot_curves`, `plot_bands`, `plot_error_hists`.
See `prresq.analysis`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from prresq.analysis.events import _labels
from prresq.analysis.runs import _ema, _sort_key, bands, label_column, study_errors

# ----------------------------------------------------------------------------------------------- plotting


def plot_curves(
    df: pd.DataFrame,
    tags: str | Sequence[str],
    hue: str | Sequence[str] | None = None,
    smooth: float = 0.6,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    ncols: int = 3,
    raw_alpha: float = 0.2,
) -> Figure:
    """One panel per tag: value against step, one line per run, coloured by `hue` (an override column, a list
    of them, or None for per-run colours). Smoothed (EMA `smooth`) solid, raw values faint.

    `ax`: an Axes for a single tag, or one Axes per tag; a new figure otherwise. Tags that were not
    logged get an empty panel saying so. Returns the figure.
    """
    import matplotlib.pyplot as plt

    tags = [tags] if isinstance(tags, str) else list(tags)
    if not tags:
        raise ValueError("no tags to plot")
    if ax is None:
        ncols = min(ncols, len(tags))
        nrows = math.ceil(len(tags) / ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[len(tags) :]:
            extra.set_visible(False)
    else:
        axes = list(np.ravel(ax)) if isinstance(ax, Sequence | np.ndarray) else [ax]
        if len(axes) < len(tags):
            raise ValueError(f"{len(tags)} tags but {len(axes)} axes")
        fig = axes[0].figure
    sub = df[df["tag"].isin(tags)]
    data = _ema(sub, smooth) if smooth > 0 and not sub.empty else sub.assign(smoothed=sub["value"])
    data = data.assign(_hue=label_column(data, hue).to_numpy()) if not data.empty else data.assign(_hue="")
    levels = sorted(data["_hue"].unique(), key=_sort_key)
    cmap = plt.get_cmap("tab10" if len(levels) <= 10 else "viridis")
    colours = {h: cmap(i if len(levels) <= 10 else i / max(1, len(levels) - 1)) for i, h in enumerate(levels)}
    hue_name = hue if isinstance(hue, str) else ", ".join(hue) if hue else "run"
    for tag, a in zip(tags, axes):
        part = data[data["tag"] == tag]
        a.set_title(tag, fontsize=10)
        a.set_xlabel("step")
        if part.empty:
            a.text(0.5, 0.5, "not logged", ha="center", va="center", transform=a.transAxes, color="grey")
            continue
        labelled = set()
        for (h, _run), g in part.groupby(["_hue", "run"], sort=False):
            c = colours[h]
            if raw_alpha > 0 and smooth > 0:
                a.plot(g["step"], g["value"], color=c, alpha=raw_alpha, lw=0.8)
            a.plot(g["step"], g["smoothed"], color=c, lw=1.5, label=None if h in labelled else h)
            labelled.add(h)
        a.grid(alpha=0.3)
    shown = [a for a, t in zip(axes, tags) if a.get_legend_handles_labels()[0]]
    if shown:
        handles, labels = shown[0].get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: _sort_key(labels[i]))
        handles, labels = [handles[i] for i in order], [labels[i] for i in order]
        if ax is None:  # own figure: one legend right of the panels
            fig.tight_layout()
            fig.legend(handles, labels, title=hue_name, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
            return fig
        shown[0].legend(handles, labels, title=hue_name, fontsize=8)
    fig.tight_layout()
    return fig


def plot_bands(
    df: pd.DataFrame, tags: str | Sequence[str], by: str = "arm", smooth: float = 0.0, *, ncols: int = 3
) -> Figure:
    """One panel per tag: per `by` group the mean over its runs (line) and their min..max (band) against the
    step; `smooth` applies TensorBoard's EMA to each run first. Tags not logged get a panel saying so."""
    import matplotlib.pyplot as plt

    tags = [tags] if isinstance(tags, str) else list(tags)
    ncols = min(ncols, len(tags))
    nrows = math.ceil(len(tags) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    axes = list(grid.ravel())
    for extra in axes[len(tags) :]:
        extra.set_visible(False)
    data = df[df["tag"].isin(tags)]
    if smooth > 0 and not data.empty:
        data = _ema(data, smooth).drop(columns="value").rename(columns={"smoothed": "value"})
    groups = sorted(_labels(df[by]).unique(), key=_sort_key) if by in df.columns else ["all"]
    cmap = plt.get_cmap("tab10")
    for tag, a in zip(tags, axes):
        a.set_title(tag, fontsize=10)
        a.set_xlabel("step")
        b = bands(data, tag, by)
        if b.empty:
            a.text(0.5, 0.5, "not logged", ha="center", va="center", transform=a.transAxes, color="grey")
            continue
        for i, group in enumerate(groups):
            part = b[b[by] == group]
            if part.empty:
                continue
            c = cmap(i % 10)
            a.plot(part["step"], part["mean"], color=c, lw=1.5, label=f"{group} (n={int(part['n'].max())})")
            a.fill_between(part["step"], part["low"], part["high"], color=c, alpha=0.15, lw=0)
        a.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout()
    if handles:
        fig.legend(handles, labels, title=by, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def plot_arm_intervals(intervals: pd.DataFrame, columns: Sequence[str] | None = None, *, ncols: int = 4) -> Figure:
    """One panel per column of `arm_intervals` (e.g. held-out SRCC and parse-failure rate after RL): per arm its
    mean over folds x seeds (dot) and 95% bootstrap CI (bar), arms top to bottom, each labelled with its number of
    finished runs (`n=`: an arm of 2 units next to arms of 6 says so); an arm without a finite value (e.g. an SRCC
    of constant answers in every run) has no dot in that panel."""
    import matplotlib.pyplot as plt

    columns = list(dict.fromkeys(intervals["column"])) if columns is None else list(columns)
    ncols = max(1, min(ncols, len(columns)))
    nrows = math.ceil(len(columns) / ncols)
    arms = list(dict.fromkeys(intervals["arm"]))
    runs = (intervals["n"] + intervals["nan"]).groupby(intervals["arm"]).max()  # finite + NaN = finished runs
    labels = [f"{arm} (n={int(runs[arm])})" for arm in arms]
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 0.9 + 0.32 * max(len(arms), 1) * nrows), squeeze=False, sharey=True
    )
    axes = list(grid.ravel())
    for extra in axes[len(columns) :]:
        extra.set_visible(False)
    for col, a in zip(columns, axes):
        part = intervals[intervals["column"] == col].set_index("arm").reindex(arms)
        y = np.arange(len(arms))[::-1]
        err = np.vstack([part["mean"] - part["low"], part["high"] - part["mean"]])
        a.errorbar(part["mean"], y, xerr=err, fmt="o", ms=4, capsize=3)
        a.set_yticks(y, labels, fontsize=8)
        a.set_title(col, fontsize=10)
        a.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_error_hists(root: str | os.PathLike[str], by: str = "arm", bins: int = 40) -> Figure:
    """Histograms of held-out answer errors after RL, one panel per `by` group (all its folds x seeds pooled),
    with the errors of the same runs before RL (the warm-up) in grey; unparseable answers are counted."""
    import matplotlib.pyplot as plt

    after, before = study_errors(root, "after"), study_errors(root, "before")
    if after.empty:
        raise FileNotFoundError(f"no eval/after/predictions_*.csv below {root}")
    groups = sorted(_labels(after[by]).unique(), key=_sort_key)
    ncols = min(4, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.0 * nrows), squeeze=False, sharex=True)
    axes = list(grid.ravel())
    for extra in axes[len(groups) :]:
        extra.set_visible(False)
    finite = pd.concat([after["error"], before["error"]]).dropna()
    edges = np.linspace(finite.min(), finite.max(), bins + 1) if len(finite) and finite.min() < finite.max() else bins
    for a, group in zip(axes, groups):
        for frame, label, style in ((before, "before RL", dict(color="grey", alpha=0.35)), (after, "after RL", {})):
            part = frame[_labels(frame[by]) == group] if not frame.empty else frame
            vals = part["error"].dropna()
            if vals.empty:
                continue
            text = f"{label}: MAE {vals.abs().mean():.2f}, fail {int(part['error'].isna().sum())}/{len(part)}"
            if style:
                a.hist(vals, bins=edges, label=text, **style)
            else:
                a.hist(vals, bins=edges, histtype="step", lw=1.6, label=text)
        a.axvline(0, color="k", lw=0.8, ls="--")
        a.set_title(str(group), fontsize=10)
        a.set_xlabel("predicted - MOS")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=6)
        else:
            a.text(0.5, 0.5, "no parsed answers", ha="center", va="center", transform=a.transAxes, color="grey")
    fig.tight_layout()
    return fig
