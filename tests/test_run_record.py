"""A trained model carries its prompt, scoring settings and pixel caps: eval and infer score with them."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_TRAIN, compose_config

from prresq.run_record import RECORD_FILE, read_run_record

# A tiny_synthetic run on fold 1 (not the default fold 0), one optimiser step, held-out scores before and after.
TRAIN = [*TINY_TRAIN, "data.synthetic.fold=1", "trainer.max_steps=1", "trainer.limit_val_batches=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prresq.train import run

    out = tmp_path_factory.mktemp("run")
    cache = out / "cache"
    cfg = compose_config("train", TRAIN, root_dir=out, cache_dir=cache, data_dir=cache / "data", output_dir=out)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(cfg)
    (out / "printed.txt").write_text(printed.getvalue())
    (out / "warnings.txt").write_text("\n".join(str(w.message) for w in caught))
    return out


def compose_scoring_app(name: str, run_dir: Path, out: Path, overrides: list[str]):
    return compose_config(
        name,
        [f"checkpoint={run_dir / 'export'}", *overrides],
        return_hydra_config=True,  # the command line's keys, as `python -m prresq.<name>` sees them
        root_dir=out,
        cache_dir=run_dir / "cache",
        data_dir=run_dir / "cache" / "data",
        output_dir=out,
    )


def test_export_and_checkpoint_record_the_prompt_scoring_and_pixel_caps(trained):
    record = json.loads((trained / "export" / RECORD_FILE).read_text())
    assert record["prompt"]["name"] == "tiny" and record["prompt"]["text"].startswith("Rate the quality")
    # The whole scoring block as the run validated with it (the train.yaml deltas resolved).
    assert record["scoring"]["mode"] == "both" and record["scoring"]["max_new_tokens"] == 8
    assert record["scoring"]["n"] == 2 and "temperature" in record["scoring"] and "shared_prefix" in record["scoring"]
    assert (record["min_pixels"], record["max_pixels"], record["batch_size"], record["seed"]) == (12544, 16384, 16, 42)
    assert record["synthetic"]["fold"] == 1
    from_ckpt, where = read_run_record(trained / "checkpoints" / "last.ckpt")
    assert from_ckpt == record, where


def test_eval_of_the_export_reproduces_the_held_out_table(trained, tmp_path):
    """Pins: `python -m prresq.eval checkpoint=RUN/export` with no other override scores the run's own test split
    (its fold, not fold 0) with its prompt and scoring settings: the same answers, predictions and SRCC/PLCC as
    the held-out table after RL. Before the run record, eval used the vq_r1 prompt, 256 new tokens, greedy
    scoring and fold 0's test photos."""
    from prresq.eval import run

    run(compose_scoring_app("eval", trained, tmp_path, ["benchmark=[synthetic_iqa]"]))  # selecting is not overriding
    held = pd.read_csv(trained / "eval" / "after" / "predictions_test.csv")
    ours = pd.read_csv(tmp_path / "eval" / "predictions_synthetic_iqa.csv")
    assert list(ours["id"]) == list(held["id"])
    assert list(ours["text"].fillna("")) == list(held["text"].fillna(""))
    for column in ("mos", "greedy", "sample_mean", "pred"):
        pd.testing.assert_series_equal(ours[column], held[column], check_names=False)
    metrics = json.loads((trained / "heldout_metrics.json").read_text())["after"]
    table = pd.read_csv(tmp_path / "eval" / "results.csv").set_index("benchmark").loc["synthetic_iqa"]
    for ours_key, held_key in (("srcc", "srcc_mean"), ("plcc", "plcc_mean")):
        held_value = math.nan if metrics[held_key] is None else metrics[held_key]  # null: NaN (strict JSON)
        assert table[ours_key] == pytest.approx(held_value, nan_ok=True, abs=1e-12)


def test_an_explicit_different_prompt_wins_with_a_warning_naming_both(trained, tmp_path, caplog):
    """Pins: with no `prompt=` eval answers the recorded prompt (the expected score, read from the answer-digit
    probabilities, depends on every prompt token); `prompt=vq_r1` is used as given, with one warning naming both
    prompts and the record; `prompt=tiny` (the recorded one) warns about nothing."""
    from prresq.eval import run

    expected = {}
    for prompt in ("", "prompt=tiny", "prompt=vq_r1"):
        caplog.clear()
        out = tmp_path / (prompt or "default")
        with caplog.at_level(logging.WARNING, logger="prresq.run_record"):
            run(compose_scoring_app("eval", trained, out, [*([prompt] if prompt else []), "scoring.mode=expected"]))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        expected[prompt] = pd.read_csv(out / "eval" / "predictions_synthetic_iqa.csv")["expected"]
        if prompt == "prompt=vq_r1":
            (warning,) = warnings
            assert "'vq_r1'" in warning and "'tiny'" in warning and str(trained / "export") in warning
        else:
            assert not warnings
    pd.testing.assert_series_equal(expected[""], expected["prompt=tiny"])
    assert (expected[""] - expected["prompt=vq_r1"]).abs().max() > 1e-4


def test_infer_scores_with_the_recorded_prompt(trained, tmp_path):
    """Pins: `python -m prresq.infer input=IMAGE checkpoint=RUN/export` answers as the held-out scoring did."""
    from prresq.infer import run

    held = pd.read_csv(trained / "eval" / "after" / "predictions_test.csv")
    media = Path(held["media"][0])
    image = media if media.is_absolute() else trained / "cache" / "data" / "synthetic_iqa" / media
    out = tmp_path / "scores.csv"
    run(compose_scoring_app("infer", trained, tmp_path, [f"input={image}", f"output={out}"]))
    (row,) = pd.read_csv(out).to_dict("records")
    assert str(row["text"]) == str(held["text"][0]).replace("\n", "\\n")


def test_heldout_metrics_json_is_strict(trained):
    """Pins: a NaN metric (the random model parses no answer) is written as `null`, not the bare `NaN` that strict
    JSON readers (jq, JavaScript, `json.loads(..., parse_constant=...)`) refuse."""
    text = (trained / "heldout_metrics.json").read_text()

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    metrics = json.loads(text, parse_constant=refuse)
    assert metrics["after"]["srcc_greedy"] is None and metrics["after"]["fail_greedy"] == 1.0


def test_train_and_eval_say_where_things_went_and_why_scores_are_nan(trained, tmp_path, capsys):
    """Pins: training prints its run directory first, the before-RL table when it is computed (before RL), and at
    the end the export with the commands that score it; a table of NaN comes with its likely cause. Eval prints
    where its results go."""
    printed = (trained / "printed.txt").read_text()
    assert printed.startswith(f"run directory: {trained} (the policy is exported to {trained / 'export'})\n")
    before = printed.index("| before RL |")
    assert before < printed.index("| after RL |")
    assert printed.count("test split (before RL): no answer parsed") == 1 and "untrained model" in printed
    tail = printed[printed.rindex("run directory:") :]
    assert f"export: {trained / 'export'}" in tail and f"python -m prresq.eval checkpoint={trained / 'export'}" in tail
    from prresq.eval import run

    run(compose_scoring_app("eval", trained, tmp_path, ["limit=2"]))
    out = capsys.readouterr().out
    assert f"results go to {tmp_path / 'eval'}" in out and f"results: {tmp_path / 'eval' / 'results.csv'}" in out
    assert "synthetic_iqa: no answer parsed for any of the 2 items" in out


def test_prediction_hint_names_nan_and_constant_predictions():
    from prresq.metrics import prediction_hint

    nan = float("nan")
    assert "no answer parsed for any of the 3 items" in prediction_hint([nan, nan, nan], "x")
    assert "every parsed prediction is 3 (2 of 3 items)" in prediction_hint([3.0, nan, 3.0], "x")
    assert prediction_hint([3.0, nan, 3.5], "x") is None


def test_the_frozen_reference_in_eval_mode_is_not_a_warning(trained):
    """Pins: Lightning's "Found N module(s) in eval mode at the start of training" (the frozen KL reference, by
    design) is not shown; training says once, at info level, why those modules are in eval mode."""
    caught = (trained / "warnings.txt").read_text()
    assert "in eval mode at the start of training" not in caught
    assert "SRCC is NaN" not in caught  # the printed hint says it once, with the cause


def test_command_line_keys_win_over_the_record(tmp_path):
    """Pins which value wins, key by key: the record fills what the command line did not set (`seed=7` is the
    scoring seed too; `benchmark=[...]` only selects benchmarks), and the synthetic benchmark reads its fold's test
    split."""
    from omegaconf import OmegaConf

    from prresq.run_record import apply_run_record

    cfg = compose_config(
        "eval", ["seed=7", "scoring.n=3", "benchmark=[synthetic_iqa]"], return_hydra_config=True, data_dir=tmp_path
    )
    synthetic = {**OmegaConf.to_container(cfg.benchmark.synthetic_iqa.synthetic, resolve=True), "fold": 2}
    record = {
        "prompt": {"name": "tiny", "text": "Rate it.", "num_aspects": 1, "pool": None},
        "scoring": {"mode": "both", "n": 8, "max_new_tokens": 24},
        "batch_size": 16,
        "seed": 42,
        "min_pixels": 100,
        "max_pixels": 200,
        "synthetic": synthetic,
    }
    applied = apply_run_record(cfg, record, "a record")
    assert cfg.prompt.name == "tiny" and "prompt" in applied
    assert (cfg.scoring.mode, cfg.scoring.n, cfg.scoring.max_new_tokens, cfg.scoring.seed) == ("both", 3, 24, 7)
    assert (cfg.scoring.batch_size, cfg.scoring.min_pixels, cfg.scoring.max_pixels) == (16, 100, 200)
    assert cfg.benchmark.synthetic_iqa.options.labels == "folds5/fold2/test.jsonl"
