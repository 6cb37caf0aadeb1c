"""Tests for prresq.metrics: SRCC/PLCC against scipy, the 4-parameter logistic, NaN and degenerate handling."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from prresq import metrics
from prresq.metrics import (
    DegenerateInputWarning,
    LogisticFitWarning,
    correlation_table,
    logistic4,
    logistic4_fit,
    plcc,
    plcc_logistic,
    srcc,
    summary_table,
    write_results,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("ties", [False, True])
def test_srcc_plcc_match_scipy(rng, ties):
    mos = rng.uniform(1, 5, 60)
    pred = mos + rng.normal(0, 0.8, 60)
    if ties:  # model outputs rounded to one decimal, as parsed answers often are
        pred = np.round(pred, 0)
    assert srcc(pred, mos) == pytest.approx(spearmanr(pred, mos).statistic, abs=1e-6)
    assert plcc(pred, mos) == pytest.approx(pearsonr(pred, mos).statistic, abs=1e-9)


def test_accepts_tensors_and_lists(rng):
    mos = rng.uniform(1, 5, 20)
    pred = mos**2
    expected = spearmanr(pred, mos).statistic
    assert srcc(torch.tensor(pred, dtype=torch.float32), torch.tensor(mos)) == pytest.approx(expected, abs=1e-6)
    assert srcc(pred.tolist(), mos.tolist()) == pytest.approx(expected, abs=1e-6)


def test_negative_correlation_keeps_sign(rng):
    mos = rng.uniform(0, 100, 30)
    assert srcc(-mos, mos) == pytest.approx(-1.0, abs=1e-6)
    assert plcc(-mos, mos) == pytest.approx(-1.0, abs=1e-9)


def test_logistic_fit_recovers_known_parameters(rng):
    true = np.array([4.8, 1.2, 0.3, 0.7])  # b1 (upper), b2 (lower), b3 (centre), b4 (slope scale)
    x = rng.uniform(-3, 3, 400)
    y = logistic4(x, *true) + rng.normal(0, 0.02, x.size)
    params, fitted = logistic4_fit(x, y)
    assert params is not None
    got = params.copy()
    got[3] = abs(got[3])
    np.testing.assert_allclose(got, true, atol=0.05)
    np.testing.assert_allclose(fitted, logistic4(x, *params))
    again, _ = logistic4_fit(x, y)  # deterministic
    np.testing.assert_array_equal(params, again)


def test_logistic_fit_handles_decreasing_relation(rng):
    x = rng.uniform(0, 10, 200)
    y = logistic4(x, 1.0, 5.0, 5.0, 1.5)  # decreasing: b1 < b2
    params, fitted = logistic4_fit(x, y)
    assert params is not None
    np.testing.assert_allclose(fitted, y, atol=1e-3)


def test_plcc_logistic_linearises_a_monotone_nonlinearity(rng):
    pred = rng.uniform(-4, 4, 200)
    mos = logistic4(pred, 5, 1, 0.0, 0.5) + rng.normal(0, 0.01, pred.size)
    assert plcc(pred, mos) < 0.95
    assert plcc_logistic(pred, mos) > 0.999


def test_logistic_fit_failure_falls_back_to_identity(rng, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics, "curve_fit", boom)
    pred = rng.uniform(1, 5, 20)
    with pytest.warns(LogisticFitWarning, match="identity"):
        params, fitted = logistic4_fit(pred, pred + 1)
    assert params is None
    np.testing.assert_array_equal(fitted, pred)
    with pytest.warns(LogisticFitWarning):  # PLCC(logistic) then equals raw PLCC
        assert plcc_logistic(pred, 2 * pred) == pytest.approx(plcc(pred, 2 * pred))


def test_logistic_fit_keeps_nan_positions(rng):
    pred = rng.uniform(0, 1, 30)
    mos = 1 + 4 * pred
    pred[[3, 7]] = np.nan
    params, fitted = logistic4_fit(pred, mos)
    assert params is not None
    assert fitted.shape == pred.shape
    assert np.isnan(fitted[[3, 7]]).all() and np.isfinite(np.delete(fitted, [3, 7])).all()


def test_nan_predictions_are_excluded_and_counted(rng):
    mos = rng.uniform(1, 5, 40)
    pred = mos + rng.normal(0, 0.5, 40)
    pred[[0, 5, 9, 30]] = np.nan
    row = correlation_table(pred, mos, logistic=True)
    keep = ~np.isnan(pred)
    assert row["n"] == 36 and row["n_failed"] == 4
    assert row["parse_fail_rate"] == pytest.approx(0.1)
    assert row["srcc"] == pytest.approx(spearmanr(pred[keep], mos[keep]).statistic, abs=1e-6)
    assert row["plcc"] == pytest.approx(pearsonr(pred[keep], mos[keep]).statistic, abs=1e-9)
    assert row["plcc_logistic"] >= row["plcc"] - 1e-6
    assert srcc(pred, mos) == pytest.approx(row["srcc"])


def test_correlation_table_without_logistic(rng):
    mos = rng.uniform(1, 5, 10)
    row = correlation_table(mos * 2, mos, logistic=False)
    assert set(row) == {"n", "n_failed", "parse_fail_rate", "srcc", "plcc", "plcc_logistic"}
    assert math.isnan(row["plcc_logistic"]) and row["srcc"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("pred", "mos", "reason"),
    [
        ([1.0, 2.0], [1.0, 2.0], "valid pair"),
        ([3.0, 3.0, 3.0, 3.0], [1.0, 2.0, 3.0, 4.0], "constant predictions"),
        ([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], "constant MOS"),
        ([np.nan, np.nan, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0], "valid pair"),
        ([], [], "valid pair"),
    ],
)
def test_degenerate_inputs_give_nan_and_warn(pred, mos, reason):
    for fn in (srcc, plcc, plcc_logistic):
        with pytest.warns(DegenerateInputWarning, match=reason):
            assert math.isnan(fn(pred, mos))
    with pytest.warns(DegenerateInputWarning):
        row = correlation_table(pred, mos)
    assert all(math.isnan(row[k]) for k in ("srcc", "plcc", "plcc_logistic"))
    with pytest.warns(LogisticFitWarning):
        params, fitted = logistic4_fit(pred, mos)
    assert params is None and len(fitted) == len(pred)


def test_all_failed_counts_everything():
    with pytest.warns(DegenerateInputWarning):
        row = correlation_table([np.nan] * 5, [1, 2, 3, 4, 5])
    assert row["n"] == 0 and row["n_failed"] == 5 and row["parse_fail_rate"] == 1.0


def test_length_mismatch_is_a_programming_error():
    with pytest.raises(ValueError, match="same length"):
        srcc([1, 2, 3], [1, 2])


def test_summary_table_adds_average_row():
    rows = [
        {"benchmark": "a", "n": 90, "n_failed": 10, "parse_fail_rate": 0.1, "srcc": 0.8, "plcc": 0.7},
        {"benchmark": "b", "n": 50, "n_failed": 0, "parse_fail_rate": 0.0, "srcc": 0.6, "plcc": math.nan},
    ]
    df = summary_table(rows)
    assert list(df["benchmark"]) == ["a", "b", "average"]
    avg = df.iloc[-1]
    assert avg["srcc"] == pytest.approx(0.7)
    assert avg["plcc"] == pytest.approx(0.7)  # NaN skipped
    assert avg["n"] == 140 and avg["n_failed"] == 10
    assert avg["parse_fail_rate"] == pytest.approx(10 / 150)
    assert list(df.columns) == ["benchmark", "n", "n_failed", "parse_fail_rate", "srcc", "plcc"]


def test_summary_table_needs_benchmark_key():
    with pytest.raises(KeyError, match="benchmark"):
        summary_table([{"srcc": 0.5}])
    with pytest.raises(ValueError):
        summary_table([])


def test_write_results_csv_and_markdown(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean table writes without warnings
        df = summary_table(
            [
                {"benchmark": "kadid10k", **correlation_table([1, 2, 3, 4.5], [1, 2, 3, 4])},
                {"benchmark": "a|b", "n": 3, "n_failed": 0, "srcc": math.nan},
            ]
        )
    csv_path, md_path = write_results(df, tmp_path / "eval")
    assert csv_path == tmp_path / "eval" / "results.csv" and md_path.name == "results.md"
    back = pd.read_csv(csv_path)
    assert list(back["benchmark"]) == ["kadid10k", "a|b", "average"]
    assert back["srcc"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    lines = md_path.read_text().splitlines()
    assert lines[0].startswith("| benchmark | n | n_failed |")
    assert lines[1].startswith("|:---|---:|")
    assert "| kadid10k | 4 | 0 |" in lines[2] and "1.0000" in lines[2]
    assert lines[3].startswith("| a\\|b |") and "nan" in lines[3]
    assert lines[-1].startswith("| average |")


def test_logistic_fit_with_three_points_falls_back_to_identity():
    import warnings

    from prresq.metrics import logistic4_fit

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        params, fitted = logistic4_fit([1.0, 2.0, 3.0], [1.5, 2.5, 4.0])
    assert params is None
    assert list(fitted) == [1.0, 2.0, 3.0]
