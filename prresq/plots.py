"""Evaluation figures (matplotlib, Agg backend, no display needed), written by `python -m prresq.eval`.

- `error_histogram`: the answer-error distribution, a histogram of prediction minus MOS (both on
  the [1, 5] scale), as on the PreResQ-R1 project page, with mean, std, MAE and the share of
  answers within 0.5 of the MOS.
- `prediction_scatter`: prediction vs MOS with the fitted 4-parameter logistic curve
  (`prresq.metrics.logistic4_fit`), SRCC and PLCC in the title.

    from prresq.plots import error_histogram, prediction_scatter
    error_histogram(pred, mos, "eval/error_hist_kadid10k.png", title="kadid10k")

Failed predictions (NaN) are left out and counted in the legend; with none left, the figure
says so instead of failing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from prresq.metrics import LogisticFitWarning, logistic4, logistic4_fit, plcc, srcc

ArrayLike = Sequence[float] | np.ndarray

__all__ = ["error_histogram", "prediction_scatter"]


def _valid(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    m = np.asarray(mos, dtype=np.float64).reshape(-1)
    keep = np.isfinite(p) & np.isfinite(m)
    return p[keep], m[keep], int((~np.isfinite(p)).sum())


def _figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _empty(ax: Axes, n_failed: int) -> None:
    ax.text(0.5, 0.5, f"no valid predictions\n({n_failed} failed)", ha="center", va="center", transform=ax.transAxes)


def error_histogram(
    pred: ArrayLike, mos: ArrayLike, path: str | Path, title: str = "", bin_width: float = 0.25, span: float = 4.0
) -> Path:
    """Histogram of `pred - mos` (bins of `bin_width` centred on multiples of it, over +-`span`) -> PNG path."""
    p, m, n_failed = _valid(pred, mos)
    fig = _figure((6.0, 4.0))
    ax = fig.add_subplot()
    if p.size:
        err = p - m
        lim = max(span, float(np.ceil(np.abs(err).max() / bin_width) * bin_width))
        edges = np.arange(-lim - bin_width / 2, lim + bin_width, bin_width)
        ax.hist(err, bins=edges, color="#4C72B0", edgecolor="white", linewidth=0.6)
        ax.axvline(0.0, color="black", linewidth=1.0)
        ax.axvline(float(err.mean()), color="#C44E52", linestyle="--", linewidth=1.2, label=f"mean {err.mean():+.2f}")
        stats = (
            f"n = {p.size}, failed = {n_failed}\n"
            f"std = {err.std():.2f}, MAE = {np.abs(err).mean():.2f}\n"
            f"|error| <= 0.5: {100 * np.mean(np.abs(err) <= 0.5):.0f}%"
        )
        ax.legend(title=stats, loc="upper left", fontsize=8, title_fontsize=8, frameon=False)
        ax.set_xlim(-lim, lim)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _empty(ax, n_failed)
    ax.set_xlabel("prediction - MOS")
    ax.set_ylabel("items")
    ax.set_title(f"{title}: answer-error distribution" if title else "answer-error distribution")
    return _save(fig, path)


def prediction_scatter(
    pred: ArrayLike, mos: ArrayLike, path: str | Path, title: str = "", logistic: bool = True
) -> Path:
    """Prediction vs MOS with the 4-parameter logistic fit (when it succeeds) -> PNG path."""
    p, m, n_failed = _valid(pred, mos)
    fig = _figure((5.0, 4.5))
    ax = fig.add_subplot()
    heading = title or "prediction vs MOS"
    if p.size:
        ax.scatter(p, m, s=12, alpha=0.6, color="#4C72B0", edgecolor="none", label=f"items (failed: {n_failed})")
        if logistic and p.size >= 4 and np.ptp(p) > 0 and np.ptp(m) > 0:  # 4 parameters
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LogisticFitWarning)
                params, _ = logistic4_fit(p, m)
            if params is not None:
                xs = np.linspace(p.min(), p.max(), 200)
                ax.plot(xs, logistic4(xs, *params), color="#C44E52", linewidth=1.5, label="logistic fit")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            heading += f"  (SRCC {srcc(p, m):.3f}, PLCC {plcc(p, m):.3f})"
        ax.legend(loc="best", fontsize=8, frameon=False)
    else:
        _empty(ax, n_failed)
    ax.set_xlabel("prediction")
    ax.set_ylabel("MOS")
    ax.set_title(heading, fontsize=10)
    return _save(fig, path)
