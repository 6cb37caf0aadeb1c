"""Bootstrap confidence intervals for small studies (folds x seeds), paired across arms.

A study measures each arm on the same units (one unit = one fold and one seed). The mean of an arm
gets a percentile-bootstrap CI (Efron & Tibshirani 1993, ch. 13): resample the units with
replacement `n_boot` times, take the mean each time, and read the (1 - level)/2 and (1 + level)/2
quantiles. The difference of an arm from a reference arm is bootstrapped *paired*: the per-unit
differences are resampled, so the between-unit spread (an easy fold, a lucky seed) cancels.

    from prresq.stats import bootstrap_ci, paired_bootstrap
    bootstrap_ci([0.61, 0.70, 0.66])                 # Interval(mean, low, high, n)
    paired_bootstrap(arm_scores, default_scores)     # the same for arm - default, unit by unit

An ordering claim "A >= B" is `reproduced` when the paired CI of A - B lies above 0, `contradicted`
when it lies below 0, and `unresolved` when it contains 0 (`verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

N_BOOT = 10_000
LEVEL = 0.95


class Interval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _finite(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected a 1-d sequence of per-unit values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {int((~np.isfinite(x)).sum())} of {len(x)} values are NaN or infinite")
    return x


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> Interval:
    """Mean of `values` with its percentile-bootstrap CI at `level` (one value per unit)."""
    x = _finite(values, "bootstrap_ci")
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: must be in (0, 1)")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(float(x.mean()), float(low), float(high), len(x))


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Mean of `a - b` over paired units with its bootstrap CI (units resampled together)."""
    xa, xb = _finite(a, "paired_bootstrap a"), _finite(b, "paired_bootstrap b")
    if xa.shape != xb.shape:
        raise ValueError(f"paired_bootstrap: {len(xa)} and {len(xb)} values; pairs need one of each per unit")
    return bootstrap_ci(xa - xb, n_boot=n_boot, level=level, seed=seed)


MIN_UNITS = 3  # below this a percentile bootstrap has too few distinct resamples to bound anything


def verdict(diff: Interval) -> str:
    """`reproduced` (CI above 0), `contradicted` (CI below 0) or `unresolved` for a claim `A >= B` on A - B.

    With fewer than `MIN_UNITS` paired units the CI is degenerate (one unit gives [d, d]), so no verdict.
    """
    if diff.n == 0 or not np.isfinite(diff.low):
        return "no data"
    if diff.n < MIN_UNITS:
        return f"too few units (n = {diff.n})"
    if diff.low > 0.0:
        return "reproduced"
    if diff.high < 0.0:
        return "contradicted"
    return "unresolved"
