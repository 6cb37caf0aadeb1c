"""prresq.analysis on a small fake Hydra sweep written with torch's SummaryWriter (tags of prresq/CONTRACTS.md)."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from prresq import analysis as A

TRAIN_TAGS = [
    "train/reward/fidelity_mean",
    "train/reward/fidelity_std",
    "train/reward/format_mean",
    "train/reward/format_std",
    "train/reward_total_mean",
    "train/frac_reward_zero_std",
    "train/kl",
    "train/clip_ratio_low",
    "train/clip_ratio_high",
    "train/completion_len",
    "train/parse_fail_rate",
    "train/score_std_per_image",
    "train/loss",
]
LR_TAG = "lr-AdamW"  # written in the tensor ("new style") format of the scalars plugin
VAL_TAGS = ["val/srcc", "val/plcc"]
STEPS = 12
VAL_EVERY = 4
TEXT_STEPS = (5, 11)
RESUME_FROM = 8  # run 2 is resumed: version_1 rewrites steps >= RESUME_FROM with other values
RUN_OVERRIDES = {
    "0": ["grpo.k=4", "reward=[fidelity,format]", "reward.fidelity.variant=thurstone", "+seed=0"],
    "1": ["grpo.k=8", "reward=[fidelity,format]", "reward.fidelity.variant=thurstone", "+seed=0"],
    "2": ["grpo.k=8", "reward=[fidelity,format]", "reward.fidelity.variant=gaussian", "+seed=1", "optim.lr=1e-5"],
}
BENCHMARKS = ("koniq", "spaq")


def value(run: int, tag_idx: int, step: int, resumed: bool = False) -> float:
    """Exactly representable in float32, distinct per (run, tag, step)."""
    return (run * 1000 + tag_idx * 40 + step + (500 if resumed else 0)) / 8


def completions(run: str, step: int) -> str:
    return (
        "| id | mos | score | completion |\n|---|---|---|---|\n"
        f"| img{step} | 3.25 | 3.5 | <think>run {run} a\\|b</think><answer>3.5</answer> |\n"
        f"| img{step + 1} | 2.00 | nan | no answer |"
    )


def _write_events(logdir: Path, run: int, steps: range, resumed: bool = False) -> None:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(logdir))
    for s in steps:
        for i, tag in enumerate(TRAIN_TAGS):
            w.add_scalar(tag, value(run, i, s, resumed), s)
        w.add_scalar(LR_TAG, value(run, len(TRAIN_TAGS), s, resumed), s, new_style=True)
        if s % VAL_EVERY == VAL_EVERY - 1:
            for j, tag in enumerate(VAL_TAGS):
                w.add_scalar(tag, value(run, len(TRAIN_TAGS) + 1 + j, s, resumed), s)
        if s in TEXT_STEPS:
            w.add_text(A.TEXT_TAG, completions(str(run), s), s)
    w.close()


def _write_eval(eval_dir: Path, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    eval_dir.mkdir(parents=True)
    rows = []
    for b, bench in enumerate(BENCHMARKS):
        n = 40
        mos = rng.uniform(1, 5, n)
        pred = np.clip(mos + shift + rng.normal(0, 0.4, n), 1, 5).round(2)
        pred[: b + 1] = np.nan  # unparseable answers
        pd.DataFrame(
            {
                "id": [f"{bench}_{i}" for i in range(n)],
                "media": [f"/data/{bench}/{i}.jpg" for i in range(n)],
                "mos": mos.round(3),
                "pred": pred,
                "n_parsed": np.where(np.isnan(pred), 0, 1),
                "text": ["<answer>x</answer>"] * n,
            }
        ).to_csv(eval_dir / f"predictions_{bench}.csv", index=False)
        rows.append(
            {"benchmark": bench, "n": n, "srcc": 0.5 + b / 10 - shift / 10, "plcc": 0.6 + b / 10, "plcc_logistic": 0.61}
            | {"parse_fail_rate": (b + 1) / n}
        )
    pd.DataFrame(rows).to_csv(eval_dir / "results.csv", index=False)


def _hydra(run_dir: Path, overrides: list[str]) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    lines = "".join(f"- {o}\n" for o in overrides)
    (run_dir / ".hydra" / "overrides.yaml").write_text(lines)
    (run_dir / ".hydra" / "config.yaml").write_text("grpo:\n  k: 4\n")


def build_fake_sweep(root: Path) -> dict[str, Path]:
    """`root/sweep/{0,1,2}` (Hydra multirun jobs with events + eval), `root/sweep/3` (a failed job: no events),
    `root/base_eval` (an evaluation-only run of the untrained model). Run 0 also has `eval/base`."""
    sweep = root / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for name, overrides in RUN_OVERRIDES.items():
        run, run_dir = int(name), sweep / name
        _hydra(run_dir, overrides)
        if run == 2:
            _write_events(run_dir / "tb" / "prresq" / "version_0", run, range(STEPS))
            _write_events(run_dir / "tb" / "prresq" / "version_1", run, range(RESUME_FROM, STEPS), resumed=True)
        else:
            _write_events(run_dir / "tb" / "prresq" / "version_0", run, range(STEPS))
        (run_dir / "csv").mkdir()
        (run_dir / "csv" / "metrics.csv").write_text("step,train/kl\n0,0.1\n")
        _write_eval(run_dir / "eval", shift=0.0, seed=run)
    _hydra(sweep / "3", ["grpo.k=16"])
    base = root / "base_eval"
    _hydra(base, ["model=base"])
    _write_eval(base / "eval", shift=0.8, seed=10)
    _write_eval(sweep / "0" / "eval" / "base", shift=0.8, seed=11)
    old = time.time() - 3600  # the base eval is older than the final one
    os.utime(sweep / "0" / "eval" / "base", (old, old))
    return {"root": root, "sweep": sweep, "base": base}


def expected_scalars(run: int) -> dict[tuple[str, int], float]:
    out = {}
    for s in range(STEPS):
        resumed = run == 2 and s >= RESUME_FROM
        for i, tag in enumerate([*TRAIN_TAGS, LR_TAG]):
            out[(tag, s)] = value(run, i, s, resumed)
        if s % VAL_EVERY == VAL_EVERY - 1:
            for j, tag in enumerate(VAL_TAGS):
                out[(tag, s)] = value(run, len(TRAIN_TAGS) + 1 + j, s, resumed)
    return out


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_fake_sweep(tmp_path_factory.mktemp("analysis"))


# ----------------------------------------------------------------------------------------------- overrides


def test_parse_overrides() -> None:
    got = A.parse_overrides(
        ["grpo.k=4", "+seed=1", "++optim.lr=1e-5", "reward=[fidelity,format]", "~prompt.extra", "name='a=b'", "x=.5"]
    )
    assert got == {
        "grpo.k": 4,
        "seed": 1,
        "optim.lr": 1e-5,
        "reward": "[fidelity,format]",
        "prompt.extra": None,
        "name": "a=b",
        "x": 0.5,
    }
    assert isinstance(got["grpo.k"], int) and isinstance(got["optim.lr"], float)
    assert A.parse_value("true") == "true" and A.parse_value("1e3x") == "1e3x" and A.parse_value("-3") == -3


# ----------------------------------------------------------------------------------------------- load_run


def test_load_run_tidy_and_exact(fake: dict[str, Path]) -> None:
    df = A.load_run(fake["sweep"] / "0")
    assert list(df.columns) == [
        "run",
        "grpo.k",
        "reward",
        "reward.fidelity.variant",
        "seed",
        "step",
        "tag",
        "value",
        "wall_time",
    ]
    assert A.override_columns(df) == ["grpo.k", "reward", "reward.fidelity.variant", "seed"]
    assert (df["run"] == "0").all() and (df["grpo.k"] == 4).all() and (df["seed"] == 0).all()
    assert (df["reward"] == "[fidelity,format]").all()
    assert df["step"].dtype == np.int64 and df["value"].dtype == np.float64
    assert df["wall_time"].between(time.time() - 3600, time.time() + 60).all()
    got = {(t, s): v for t, s, v in zip(df["tag"], df["step"], df["value"])}
    assert got == expected_scalars(0)  # every scalar, exactly, incl. the tensor-format lr and no text tag
    assert sorted(df.loc[df["tag"] == "val/srcc", "step"]) == [3, 7, 11]


def test_load_run_resumed_keeps_latest(fake: dict[str, Path]) -> None:
    run2 = fake["sweep"] / "2"
    df = A.load_run(run2, name="resumed")
    assert (df["run"] == "resumed").all()
    got = {(t, s): v for t, s, v in zip(df["tag"], df["step"], df["value"])}
    assert got == expected_scalars(2)
    raw = A.load_run(run2, dedupe=False)
    assert len(raw) == len(df) + (STEPS - RESUME_FROM) * (len(TRAIN_TAGS) + 1) + len(VAL_TAGS)


def test_verify_crc_reader_agrees(fake: dict[str, Path]) -> None:
    fast = A.load_run(fake["sweep"] / "1")
    checked = A.load_run(fake["sweep"] / "1", verify_crc=True)
    pd.testing.assert_frame_equal(fast, checked)


def test_truncated_event_file_is_read_up_to_the_tail(tmp_path: Path, fake: dict[str, Path]) -> None:
    src = fake["sweep"] / "1"
    run = tmp_path / "run"
    _hydra(run, RUN_OVERRIDES["1"])
    (run / "tb").mkdir()
    (ev,) = A.event_files(src)
    data = ev.read_bytes()
    (run / "tb" / ev.name).write_bytes(data[:-7])  # a run still writing its last record (the step-11 text)
    pd.testing.assert_frame_equal(A.load_run(run, name="1"), A.load_run(src))
    assert A.load_texts(run)["step"].tolist() == list(TEXT_STEPS[:-1])


def test_no_event_files_error_says_where(tmp_path: Path, fake: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match=r"events\.out\.tfevents.*" + str(fake["sweep"] / "3")):
        A.load_run(fake["sweep"] / "3")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        A.load_run(tmp_path / "missing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no TensorBoard event files .* under .*empty"):
        A.load_sweep(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="base_eval"):
        A.load_texts(fake["base"])
    with pytest.raises(FileNotFoundError, match="4 run dirs below it: use load_sweep"):
        A.load_run(fake["sweep"])  # 4 run dirs, one without events


# ----------------------------------------------------------------------------------------------- load_sweep


def test_load_sweep(fake: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="prresq.analysis"):
        df = A.load_sweep(fake["sweep"], workers=1)
    assert "no event files" in caplog.text and str(fake["sweep"] / "3") in caplog.text
    assert sorted(df["run"].unique()) == ["0", "1", "2"]
    assert list(df.columns[:6]) == ["run", "grpo.k", "reward", "reward.fidelity.variant", "seed", "optim.lr"]
    assert list(df.columns[-4:]) == ["step", "tag", "value", "wall_time"]
    per_run = df.drop_duplicates("run").set_index("run")
    assert per_run["grpo.k"].to_dict() == {"0": 4, "1": 8, "2": 8}
    assert math.isnan(per_run.loc["0", "optim.lr"]) and per_run.loc["2", "optim.lr"] == pytest.approx(1e-5)
    assert A.varying_overrides(df) == ["grpo.k", "reward.fidelity.variant", "seed", "optim.lr"]
    for run in (0, 1, 2):
        sub = df[df["run"] == str(run)]
        assert {(t, s): v for t, s, v in zip(sub["tag"], sub["step"], sub["value"])} == expected_scalars(run)


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_load_sweep_parallel_equals_serial(fake: dict[str, Path], executor: str) -> None:
    serial = A.load_sweep(fake["sweep"], workers=1)
    parallel = A.load_sweep(fake["sweep"], workers=2, executor=executor)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(serial, parallel)


def test_load_sweep_of_one_run_dir(fake: dict[str, Path]) -> None:
    df = A.load_sweep(fake["sweep"] / "1")
    assert df["run"].unique().tolist() == ["1"]
    assert len(df) == len(expected_scalars(1))


# ----------------------------------------------------------------------------------------------- texts


def test_load_texts(fake: dict[str, Path]) -> None:
    texts = A.load_texts(fake["sweep"] / "1")
    assert list(texts.columns) == ["run", "step", "text"]
    assert texts["step"].tolist() == list(TEXT_STEPS)
    assert texts["text"].tolist() == [completions("1", s) for s in TEXT_STEPS]
    sweep = A.load_texts(fake["sweep"])
    assert sorted(set(sweep["run"])) == ["0", "1", "2"] and len(sweep) == 3 * len(TEXT_STEPS)
    assert A.load_texts(fake["sweep"] / "1", tag="train/nothing").empty


def test_parse_markdown_table() -> None:
    table = A.parse_markdown_table(completions("7", 3))
    assert table is not None
    assert table.columns.tolist() == ["id", "mos", "score", "completion"]
    assert table.iloc[0].tolist() == ["img3", "3.25", "3.5", "<think>run 7 a|b</think><answer>3.5</answer>"]
    assert table.shape == (2, 4)
    assert A.parse_markdown_table("just text\nmore") is None


# ----------------------------------------------------------------------------------------------- utilities


def test_smooth_matches_tensorboard_ema() -> None:
    df = pd.DataFrame(
        {
            "run": ["a"] * 4 + ["b"] * 2,
            "tag": ["t"] * 6,
            "step": [3, 0, 1, 2, 0, 1],
            "value": [8.0, 1.0, 2.0, np.nan, 100.0, 0.0],
        }
    )
    out = A.smooth(df, 0.5)
    a = out[out["run"] == "a"]
    assert a["step"].tolist() == [0, 1, 2, 3]
    # debiased EMA over finite values 1, 2, 8: 1, (0.25+1)/0.75, (0.625+4)/0.875
    np.testing.assert_allclose(a["smoothed"].to_numpy(), [1.0, 5 / 3, np.nan, 4.625 / 0.875])
    b = out[out["run"] == "b"]["smoothed"].tolist()
    assert b == pytest.approx([100.0, 25 / 0.75])  # groups do not leak into each other
    assert A.smooth(df, 0.0)["smoothed"].equals(A.smooth(df, 0.0)["value"])
    with pytest.raises(ValueError, match="alpha"):
        A.smooth(df, 1.0)


def test_pivot_and_last_values(fake: dict[str, Path]) -> None:
    df = A.load_sweep(fake["sweep"], workers=1)
    table = A.pivot_metric(df, "val/srcc", by="grpo.k")
    assert table.index.tolist() == [3, 7, 11] and table.columns.tolist() == [4, 8]
    want = (value(1, len(TRAIN_TAGS) + 1, 11) + value(2, len(TRAIN_TAGS) + 1, 11, resumed=True)) / 2
    assert table.loc[11, 8] == pytest.approx(want)  # mean over the two k=8 runs
    by_run = A.pivot_metric(df, "train/kl")
    assert by_run.shape == (STEPS, 3)
    with pytest.raises(KeyError, match="val/nope"):
        A.pivot_metric(df, "val/nope")
    last = A.last_values(df, ["val/srcc", "train/kl"])
    assert last["run"].tolist() == ["0", "1", "2"]
    assert last.loc[0, "val/srcc"] == value(0, len(TRAIN_TAGS) + 1, 11)
    assert "grpo.k" in last.columns
    present, missing = A.select_tags(df, ["train/reward/*_mean", "train/kl", "train/nope"])
    assert present == ["train/reward/fidelity_mean", "train/reward/format_mean", "train/kl"]
    assert missing == ["train/nope"]


def test_plot_curves(fake: dict[str, Path]) -> None:
    df = A.load_sweep(fake["sweep"], workers=1)
    fig = A.plot_curves(df, ["train/kl", "val/srcc", "train/absent"], hue="grpo.k", smooth=0.6)
    try:
        kl, srcc, absent = fig.axes[:3]
        assert len(kl.lines) == 2 * 3  # raw + smoothed per run
        (legend,) = fig.legends  # one legend for the figure, right of the panels
        assert [t.get_text() for t in legend.get_texts()] == ["4", "8"]
        assert legend.get_title().get_text() == "grpo.k"
        assert len(srcc.lines) == 6 and len(absent.lines) == 0
        assert any(t.get_text() == "not logged" for t in absent.texts)
    finally:
        plt.close(fig)
    fig, ax = plt.subplots()
    try:
        assert A.plot_curves(df, "train/loss", hue=["grpo.k", "seed"], smooth=0, ax=ax) is fig
        assert len(ax.lines) == 3 and "grpo.k=8, seed=1" in [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(fig)
    fig = A.plot_curves(df, ["train/kl"], hue="optim.lr", smooth=0.3)
    try:
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["1e-05", "default"]  # unset override
    finally:
        plt.close(fig)
    assert A.varying_overrides(df, ignore=("seed", "lr")) == ["grpo.k", "reward.fidelity.variant"]


# ----------------------------------------------------------------------------------------------- eval


def test_load_eval(fake: dict[str, Path]) -> None:
    ev = A.load_eval(fake["sweep"])
    res, pred = ev
    assert sorted(set(zip(res["run"], res["eval"]))) == [
        ("0", "eval"),
        ("0", "eval/base"),
        ("1", "eval"),
        ("2", "eval"),
    ]
    assert res.columns[:6].tolist() == ["run", "grpo.k", "reward", "reward.fidelity.variant", "seed", "eval"]
    assert {"benchmark", "n", "srcc", "plcc", "plcc_logistic", "parse_fail_rate"} <= set(res.columns)
    assert set(pred["benchmark"]) == set(BENCHMARKS)
    assert {"id", "media", "mos", "pred", "n_parsed", "text"} <= set(pred.columns)
    one = pred[(pred["run"] == "1") & (pred["benchmark"] == "spaq")]
    assert len(one) == 40 and one["pred"].isna().sum() == 2
    written = pd.read_csv(fake["sweep"] / "1" / "eval" / "predictions_spaq.csv")
    np.testing.assert_array_equal(one["mos"].to_numpy(), written["mos"].to_numpy())
    assert (pred.loc[pred["run"] == "2", "optim.lr"] == 1e-5).all()

    direct = A.load_eval(fake["sweep"] / "1" / "eval")  # an eval folder: overrides found upwards
    assert set(direct.results["run"]) == {"1"} and (direct.results["grpo.k"] == 8).all()
    with pytest.raises(FileNotFoundError, match="no evaluation CSVs"):
        A.load_eval(fake["sweep"] / "3")


def test_pick_before_after(fake: dict[str, Path]) -> None:
    run0 = fake["sweep"] / "0"
    assert A.pick_before_after(run0) == (run0 / "eval" / "base", run0 / "eval")
    with pytest.raises(ValueError, match="two eval folders of one run"):
        A.pick_before_after(fake["sweep"] / "1")
    with pytest.raises(ValueError, match="run"):
        A.pick_before_after(fake["sweep"])


def test_default_run_dir(tmp_path: Path) -> None:
    """The newest sweep or `outputs/<task>/<date>_<time>` run holding what is asked for (event files or eval CSVs);
    newer folders without it are passed over; `outputs` when nothing qualifies."""
    assert A.default_run_dir(tmp_path) == tmp_path / "outputs"
    for name in ("2025-01-01/10-00-00", "2025-01-02/09-00-00"):
        (tmp_path / "multirun" / name / "0" / "tb").mkdir(parents=True)
        (tmp_path / "multirun" / name / "0" / "tb" / "events.out.tfevents.1").touch()
    old = time.time() - 100
    os.utime(tmp_path / "multirun" / "2025-01-01" / "10-00-00", (old, old))
    os.utime(tmp_path / "multirun" / "2025-01-02" / "09-00-00", (old + 10, old + 10))
    assert A.default_run_dir(tmp_path) == tmp_path / "multirun" / "2025-01-02" / "09-00-00"
    assert A.default_run_dir(tmp_path, contains="eval") == tmp_path / "outputs"
    run = tmp_path / "outputs" / "tiny_synthetic" / "2025-01-03_08-00-00"
    (run / "eval" / "after").mkdir(parents=True)
    (run / "eval" / "after" / "results.csv").write_text("benchmark,n\ntest,1\n")
    (tmp_path / "multirun" / "2025-01-04" / "07-00-00").mkdir(parents=True)  # newest, holds nothing
    assert A.default_run_dir(tmp_path, contains="eval") == run
    assert A.default_run_dir(tmp_path) == tmp_path / "multirun" / "2025-01-02" / "09-00-00"


def test_cli_prints_last_values(fake: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    A.main([str(fake["sweep"]), "--tags", "val/*", "--workers", "1"])
    out = capsys.readouterr().out
    assert "val/srcc" in out and "3 runs" in out


def test_arm_intervals_are_mean_and_bootstrap_ci_over_finished_runs() -> None:
    """Arm a: finished runs with failure rates 0.25 and 0.75 (a running run's 1.0 left out): mean 0.5, and the
    bootstrap means of 2 units are 0.25, 0.5, 0.75 (p = 1/4, 1/2, 1/4), so the 95% CI is [0.25, 0.75]. Arm b: one
    SRCC NaN of two -> mean of the other, nan = 1. Arms follow `order`."""
    study = pd.DataFrame(
        {
            "arm": ["a", "a", "a", "b", "b"],
            "status": ["done", "done", "running", "done", "done"],
            "after_fail_mean": [0.25, 0.75, 1.0, 0.5, 0.5],
            "after_srcc_mean": [0.6, 0.8, float("nan"), float("nan"), 0.3],
        }
    )
    got = A.arm_intervals(study, ["after_srcc_mean", "after_fail_mean"], order=["b", "a"])
    assert list(got["arm"]) == ["b", "b", "a", "a"]
    rows = got.set_index(["arm", "column"])
    assert rows.loc[("a", "after_fail_mean")].tolist() == [0.5, 0.25, 0.75, 2, 0]
    assert rows.loc[("b", "after_fail_mean")].tolist() == [0.5, 0.5, 0.5, 2, 0]
    assert rows.loc[("b", "after_srcc_mean")].tolist() == [0.3, 0.3, 0.3, 1, 1]
    assert rows.loc[("a", "after_srcc_mean")].tolist()[0] == pytest.approx(0.7)


def test_plot_arm_intervals_draws_one_panel_per_column() -> None:
    """One panel per column; each arm's label gives its finished runs (a's NaN SRCC still counts as a run)."""
    study = pd.DataFrame(
        {
            "arm": ["a", "a", "b"],
            "status": ["done", "done", "done"],
            "after_fail_mean": [0.1, 0.3, 0.2],
            "after_srcc_mean": [float("nan"), 0.5, 0.4],
        }
    )
    fig = A.plot_arm_intervals(A.arm_intervals(study, ["after_fail_mean", "after_srcc_mean"]))
    assert [a.get_title() for a in fig.axes if a.get_visible()] == ["after_fail_mean", "after_srcc_mean"]
    assert sorted(t.get_text() for t in fig.axes[0].get_yticklabels()) == ["a (n=2)", "b (n=1)"]
    plt.close(fig)
