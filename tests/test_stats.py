"""prresq.stats: percentile bootstrap of the mean and its paired form, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from prresq.stats import bootstrap_ci, paired_bootstrap, verdict


def test_bootstrap_ci_matches_the_binomial_hand_computation():
    """Units [0, 0, 0, 1]: a resampled mean is k/4 with k ~ Binomial(4, 1/4), so P(mean <= 1/2) = 0.949 and
    P(mean <= 3/4) = 0.996: the 2.5 % quantile is 0 and the 97.5 % quantile is 3/4."""
    ci = bootstrap_ci([0.0, 0.0, 0.0, 1.0], n_boot=40_000, seed=1)
    assert ci.mean == 0.25 and ci.n == 4
    assert ci.low == 0.0 and ci.high == 0.75


def test_bootstrap_ci_narrows_with_more_units_and_contains_the_mean():
    """The CI of n i.i.d. N(0, 1) draws has width about 2 * 1.96 / sqrt(n)."""
    rng = np.random.default_rng(0)
    for n in (16, 256):
        ci = bootstrap_ci(rng.standard_normal(n))
        assert ci.low < ci.mean < ci.high
        assert ci.high - ci.low == pytest.approx(2 * 1.96 / np.sqrt(n), rel=0.3)


def test_paired_bootstrap_cancels_the_spread_between_units():
    """a = b + 0.1 unit by unit, b spread over [0, 1]: the paired CI of a - b is exactly [0.1, 0.1], while the
    unpaired CIs of a and of b overlap almost entirely."""
    b = np.array([0.0, 0.9, 0.3, 0.6, 0.1, 1.0])
    a = b + 0.1
    diff = paired_bootstrap(a, b)
    assert diff.mean == pytest.approx(0.1) and diff.low == pytest.approx(0.1) and diff.high == pytest.approx(0.1)
    assert bootstrap_ci(a).low < bootstrap_ci(b).high
    assert verdict(diff) == "reproduced" and verdict(paired_bootstrap(b, a)) == "contradicted"


def test_verdict_unresolved_and_bad_input_is_named():
    """A CI containing 0 is unresolved; NaN values and unpaired lengths are errors that say so."""
    assert verdict(paired_bootstrap([0.1, -0.1, 0.2, -0.2], [0.0] * 4)) == "unresolved"
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0.1, float("nan")])
    with pytest.raises(ValueError, match="pairs"):
        paired_bootstrap([0.1, 0.2], [0.1])


def test_no_verdict_from_fewer_than_three_units() -> None:
    """Pins: one or two paired units give a degenerate bootstrap CI ([d, d] for one unit), so a clear
    difference there is not called reproduced or contradicted; three units are judged."""
    assert paired_bootstrap([0.9], [0.1]).low == paired_bootstrap([0.9], [0.1]).high
    assert verdict(paired_bootstrap([0.9], [0.1])) == "too few units (n = 1)"
    assert verdict(paired_bootstrap([0.1, 0.2], [0.8, 0.9])) == "too few units (n = 2)"
    assert verdict(paired_bootstrap([0.9, 0.8, 0.85], [0.1, 0.2, 0.15])) == "reproduced"
