"""Correlation metrics for quality assessment: SRCC, PLCC and the 4-parameter logistic fit.

What it is: the numbers every IQA/VQA table reports. SRCC and PLCC are computed with
torchmetrics' functional forms; PLCC is offered both raw (what VisualQuality-R1 and PreResQ-R1
report) and after the standard VQEG 4-parameter logistic mapping of predictions to MOS
(common in the IQA literature).

How it is used:

    from prresq.metrics import correlation_table, summary_table, write_results
    row = {"benchmark": "kadid10k", **correlation_table(pred, mos, logistic=True)}
    df = summary_table([row, ...])          # adds an "average" row
    write_results(df, run_dir / "eval")     # results.csv + results.md

Conventions:
- NaN predictions are failed items (unparseable answers): they are dropped and counted in
  `n_failed`; `n` is the number of (pred, mos) pairs actually correlated.
- Degenerate inputs (fewer than 3 valid pairs, constant predictions or constant MOS) give NaN
  correlations and a `DegenerateInputWarning`; nothing here raises on data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

__all__ = [
    "DegenerateInputWarning",
    "prediction_hint",
    "LogisticFitWarning",
    "correlation_table",
    "logistic4",
    "logistic4_fit",
    "plcc",
    "plcc_logistic",
    "srcc",
    "summary_table",
    "write_results",
]

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor

MIN_PAIRS = 3
# Columns of summary_table that are counts: summed (not averaged) in the "average" row.
COUNT_COLUMNS = ("n", "n_failed")


class DegenerateInputWarning(UserWarning):
    """Correlation undefined: too few valid pairs, or constant predictions / MOS."""


class LogisticFitWarning(UserWarning):
    """The 4-parameter logistic fit failed; the identity mapping was used instead."""


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _clean(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop pairs whose prediction (or MOS) is not finite; return (pred, mos, n_failed predictions)."""
    p, m = _to_numpy(pred), _to_numpy(mos)
    if p.shape != m.shape:
        raise ValueError(f"pred and mos must have the same length, got {p.shape[0]} and {m.shape[0]}")
    failed = ~np.isfinite(p)
    keep = ~failed & np.isfinite(m)
    return p[keep], m[keep], int(failed.sum())


def _degenerate(p: np.ndarray, m: np.ndarray) -> str | None:
    """Why a correlation of (p, m) is undefined, or None when it is fine."""
    if p.size < MIN_PAIRS:
        return f"only {p.size} valid pair(s) (need at least {MIN_PAIRS})"
    if np.ptp(p) == 0:
        return "constant predictions"
    if np.ptp(m) == 0:
        return "constant MOS"
    return None


def _warn_degenerate(metric: str, reason: str) -> float:
    warnings.warn(f"{metric} is NaN: {reason}", DegenerateInputWarning, stacklevel=3)
    return math.nan


def _spearman(p: np.ndarray, m: np.ndarray) -> float:
    return float(spearman_corrcoef(torch.from_numpy(p), torch.from_numpy(m)))


def _pearson(p: np.ndarray, m: np.ndarray) -> float:
    return float(pearson_corrcoef(torch.from_numpy(p), torch.from_numpy(m)))


def srcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Spearman rank correlation of predictions with MOS (NaN predictions dropped)."""
    p, m, _ = _clean(pred, mos)
    reason = _degenerate(p, m)
    return _warn_degenerate("SRCC", reason) if reason else _spearman(p, m)


def plcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Pearson linear correlation of raw predictions with MOS (no logistic mapping)."""
    p, m, _ = _clean(pred, mos)
    reason = _degenerate(p, m)
    return _warn_degenerate("PLCC", reason) if reason else _pearson(p, m)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: `(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`."""
    scale = abs(b4) + 1e-12
    return (b1 - b2) * expit((np.asarray(x, dtype=np.float64) - b3) / scale) + b2


def logistic4_fit(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray | None, np.ndarray]:
    """Fit `logistic4` mapping predictions to MOS; return (params [b1, b2, b3, b4], fitted predictions).

    NaN predictions are dropped before fitting and stay NaN in `fitted` (same length as `pred`).
    Initial guess (deterministic): b1 = max(MOS), b2 = min(MOS), b3 = mean(pred), b4 = std(pred),
    with b1/b2 swapped when predictions and MOS are negatively correlated. When the fit fails
    (degenerate data, no convergence, non-finite result) a `LogisticFitWarning` is emitted and the
    identity mapping is returned with params None.
    """
    p_all = _to_numpy(pred)
    p, m, _ = _clean(pred, mos)
    fitted = p_all.copy()
    reason = _degenerate(p, m)
    if reason is None and len(p) < 4:
        reason = f"{len(p)} valid pair(s): the 4-parameter fit needs at least 4"
    if reason is None:
        lo, hi = float(m.min()), float(m.max())
        if np.corrcoef(p, m)[0, 1] < 0:
            lo, hi = hi, lo
        p0 = [hi, lo, float(p.mean()), float(p.std()) or 1.0]
        try:
            with warnings.catch_warnings():
                # "covariance could not be estimated" is not a failed fit (e.g. n <= 4 points)
                warnings.simplefilter("ignore", OptimizeWarning)
                params, _ = curve_fit(logistic4, p, m, p0=p0, maxfev=20000)
        except (RuntimeError, ValueError, TypeError) as err:
            reason = f"curve_fit failed ({err})"
        else:
            mapped = logistic4(p_all, *params)
            if np.all(np.isfinite(params)) and np.all(np.isfinite(mapped[np.isfinite(p_all)])):
                return params, mapped
            reason = "non-finite parameters"
    warnings.warn(f"4-parameter logistic fit: {reason}; using identity mapping", LogisticFitWarning, stacklevel=2)
    return None, fitted


def plcc_logistic(pred: ArrayLike, mos: ArrayLike) -> float:
    """PLCC after mapping predictions to MOS with the 4-parameter logistic (identity if the fit fails)."""
    p, m, _ = _clean(pred, mos)
    reason = _degenerate(p, m)
    if reason:
        return _warn_degenerate("PLCC (logistic)", reason)
    _, fitted = logistic4_fit(p, m)
    if _degenerate(fitted, m):  # a flat fit (e.g. a step fitted far outside the data) has no correlation
        return _warn_degenerate("PLCC (logistic)", "logistic fit is constant over the data")
    return _pearson(fitted, m)


def prediction_hint(pred: ArrayLike, what: str) -> str | None:
    """A sentence with the likely cause when `what`'s predictions carry no ranking: all NaN or all one value.

    None when at least two finite predictions differ. Printed by training's held-out scoring and by `prresq.eval`,
    where such a table otherwise shows only NaN.
    """
    p = _to_numpy(pred)
    finite = p[np.isfinite(p)]
    if p.size == 0:
        return None
    if finite.size == 0:
        return (
            f"{what}: no answer parsed for any of the {p.size} items (every prediction is NaN). Likely cause: an "
            "untrained model (the tiny default starts from random weights: keep its warm-up, warmup=prior_sft, "
            "or score a trained export), a prompt the model was not trained with, or too few new tokens "
            "(scoring.max_new_tokens) to reach <answer>"
        )
    if finite.size >= 2 and np.all(finite == finite[0]):
        return (
            f"{what}: every parsed prediction is {finite[0]:g} ({finite.size} of {p.size} items), so SRCC/PLCC are "
            "NaN. Likely cause: a model that has not learned to rate (an untrained or collapsed policy; with the "
            "tiny default, a run without its warm-up)"
        )
    return None


def correlation_table(pred: ArrayLike, mos: ArrayLike, logistic: bool = True) -> dict[str, float | int]:
    """All metrics of one benchmark: n, n_failed, parse_fail_rate, srcc, plcc, plcc_logistic.

    `n` counts the valid pairs used; `parse_fail_rate = n_failed / total items`.
    `plcc_logistic` is NaN when `logistic` is False. Degenerate data warns once and gives NaNs.
    """
    total = _to_numpy(pred).size
    p, m, n_failed = _clean(pred, mos)
    row: dict[str, float | int] = {
        "n": int(p.size),
        "n_failed": n_failed,
        "parse_fail_rate": n_failed / total if total else math.nan,
        "srcc": math.nan,
        "plcc": math.nan,
        "plcc_logistic": math.nan,
    }
    reason = _degenerate(p, m)
    if reason:
        _warn_degenerate("SRCC/PLCC", reason)
        return row
    row["srcc"] = _spearman(p, m)
    row["plcc"] = _pearson(p, m)
    if logistic:
        row["plcc_logistic"] = plcc_logistic(p, m)
    return row


def summary_table(rows: list[dict]) -> pd.DataFrame:
    """One row per benchmark (each dict needs a "benchmark" key) plus an "average" row.

    The average row holds the mean of each metric column over benchmarks (NaNs skipped), the sum
    of count columns (`n`, `n_failed`), and `parse_fail_rate` recomputed from those sums.
    """
    if not rows:
        raise ValueError("summary_table needs at least one row")
    missing = [i for i, r in enumerate(rows) if "benchmark" not in r]
    if missing:
        raise KeyError(f"rows {missing} have no 'benchmark' key")
    df = pd.DataFrame(rows)
    cols = [c for c in df.columns if c != "benchmark"]
    numeric = [c for c in cols if pd.api.types.is_numeric_dtype(df[c])]
    avg: dict[str, object] = {"benchmark": "average"}
    for c in numeric:
        avg[c] = df[c].sum() if c in COUNT_COLUMNS else df[c].mean(skipna=True)
    if {"n", "n_failed", "parse_fail_rate"} <= set(numeric):
        total = avg["n"] + avg["n_failed"]
        avg["parse_fail_rate"] = avg["n_failed"] / total if total else math.nan
    df = pd.concat([df, pd.DataFrame([avg])], ignore_index=True)
    return df[["benchmark", *cols]]


def _markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub-flavoured Markdown table (no `tabulate` dependency)."""

    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            return "nan" if math.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    align = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else ":---" for c in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


def write_results(df: pd.DataFrame, out_dir: str | Path, stem: str = "results") -> tuple[Path, Path]:
    """Write `df` to `<out_dir>/<stem>.csv` and `<out_dir>/<stem>.md`; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    df.to_csv(csv_path, index=False)
    md_path.write_text(_markdown(df))
    return csv_path, md_path
