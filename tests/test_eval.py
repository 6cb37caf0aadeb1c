"""`python -m prresq.eval` on the tiny model and a small synthetic test split; checkpoint loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from omegaconf import DictConfig, OmegaConf, open_dict

from prresq.checkpoint_loading import read_lightning_checkpoint
from prresq.eval import run
from prresq.metrics import correlation_table
from prresq.models import load_policy, load_scoring_model
from prresq.rewards.parse import score_answers

RESULT_COLUMNS = ["benchmark", "n", "n_failed", "parse_fail_rate", "srcc", "plcc", "plcc_logistic"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def compose_app(name: str, overrides: list[str], out_dir: Path, model_dir: Path) -> DictConfig:
    return compose_config(
        name,
        overrides,
        model_dir=model_dir,
        root_dir=out_dir,
        cache_dir=out_dir / "cache",
        data_dir=out_dir / "data",
        output_dir=out_dir,
    )


def compose_eval(overrides: list[str], out_dir: Path, model_dir: Path, data: Path) -> DictConfig:
    cfg = compose_app("eval", ["scoring.max_new_tokens=4", "scoring.batch_size=4", *overrides], out_dir, model_dir)
    with open_dict(cfg):
        cfg.benchmark.synthetic_iqa.root = str(data)
        cfg.benchmark.synthetic_iqa.options.labels = "test.jsonl"  # the fixture set has no folds
    return cfg


def test_eval_writes_results_predictions_and_plots(tmp_path, tiny_model_dir, synthetic_iqa, capsys):
    cfg = compose_eval(["scoring.mode=expected", "limit=8"], tmp_path, tiny_model_dir, synthetic_iqa)
    with open_dict(cfg):  # a second benchmark: the same split under another name
        cfg.benchmark.copy = {**cfg.benchmark.synthetic_iqa, "name": "synthetic_copy"}
    table = run(cfg)
    out = tmp_path / "eval"
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    assert results["benchmark"].tolist() == ["synthetic_iqa", "synthetic_copy", "average"]
    assert results["n"].tolist() == [8, 8, 16] and results["n_failed"].tolist() == [0, 0, 0]
    assert results[["srcc", "plcc", "plcc_logistic"]].notna().all().all()
    assert (out / "results.md").read_text() in capsys.readouterr().out
    pd.testing.assert_frame_equal(table.reset_index(drop=True), results, check_dtype=False)

    pred = pd.read_csv(out / "predictions_synthetic_iqa.csv")
    assert list(pred.columns[:6]) == ["id", "media", "mos", "pred", "n_parsed", "text"]
    assert len(pred) == 8 and pred["pred"].between(1, 5).all() and (pred["status"] == "ok").all()
    assert pred["mos"].between(1, 5).all()
    first = (synthetic_iqa / "test.jsonl").read_text().splitlines()[:8]
    assert pred["id"].tolist() == [json.loads(r)["id"] for r in first]
    row = correlation_table(pred["pred"].to_numpy(), pred["mos"].to_numpy())
    assert results.loc[0, "srcc"] == pytest.approx(row["srcc"])
    for name in ("synthetic_iqa", "synthetic_copy"):
        for kind in ("error_hist", "scatter"):
            png = out / f"{kind}_{name}.png"
            assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


@pytest.mark.filterwarnings("ignore::prresq.metrics.DegenerateInputWarning")
def test_failed_answers_are_counted_not_invented(tmp_path, tiny_model_dir, synthetic_iqa):
    """The random tiny model writes no <answer>: every item fails, scores stay NaN, the run still completes."""
    overrides = ["prompt=tiny", "scoring.mode=sample", "scoring.n=2", "limit=4"]  # tiny: answer_first
    cfg = compose_eval(overrides, tmp_path, tiny_model_dir, synthetic_iqa)
    results = run(cfg)
    pred = pd.read_csv(tmp_path / "eval" / "predictions_synthetic_iqa.csv")
    assert pred["pred"].isna().all() and (pred["n_parsed"] == 0).all()
    assert results.loc[0, "n_failed"] == 4 and results.loc[0, "parse_fail_rate"] == 1.0
    assert (tmp_path / "eval" / "error_hist_synthetic_iqa.png").exists()


@pytest.mark.filterwarnings("ignore::prresq.metrics.DegenerateInputWarning")
def test_two_runs_give_identical_results(tmp_path, tiny_model_dir, synthetic_iqa):
    common = ["scoring.mode=sample", "scoring.n=2", "scoring.temperature=1.0", "limit=3"]
    frames, tables = [], []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        cfg = compose_eval([*common, f"seed={seed}"], tmp_path / name, tiny_model_dir, synthetic_iqa)
        tables.append(run(cfg))
        frames.append(pd.read_csv(tmp_path / name / "eval" / "predictions_synthetic_iqa.csv", keep_default_na=False))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(tables[0], tables[1])
    # the sampled answers do depend on the seed, so the equality above is not trivial
    assert frames[0]["text"].tolist() != frames[2]["text"].tolist()


@pytest.mark.filterwarnings("ignore::prresq.metrics.DegenerateInputWarning")
def test_shared_prefix_switch_gives_the_plain_path_predictions(tmp_path, tiny_model_dir, synthetic_iqa, monkeypatch):
    """`scoring.shared_prefix` (default true) picks the N-sample engine; both engines give the same predictions."""
    import prresq.engine.shared as engine_shared

    calls: list[int] = []
    shared = engine_shared.generate_completions_shared
    monkeypatch.setattr(
        engine_shared, "generate_completions_shared", lambda *a, **kw: calls.append(1) or shared(*a, **kw)
    )
    common = ["scoring.mode=sample", "scoring.n=3", "limit=4", "scoring.max_new_tokens=6"]  # text: a sampled answer
    frames, used = [], []
    for name, extra in (("shared", []), ("plain", ["scoring.shared_prefix=false"])):
        calls.clear()
        run(compose_eval([*common, *extra], tmp_path / name, tiny_model_dir, synthetic_iqa))
        used.append(len(calls))
        frames.append(pd.read_csv(tmp_path / name / "eval" / "predictions_synthetic_iqa.csv", keep_default_na=False))
    assert used == [1, 0]  # one batch of 4 items: one shared-prefix generation, none with the switch off
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert frames[0]["text"].nunique() == 4  # sampled answers differ between items


SMALL_GRID = [
    "video_dataflow.rows=2",
    "video_dataflow.cols=2",
    "video_dataflow.num_local=1",
    "video_dataflow.tile_size=56",
    "video_dataflow.local_size=56",
]


@pytest.fixture(scope="module")
def synthetic_vqa(tmp_path_factory) -> Path:
    from prresq.data.synthetic_video import generate_synthetic_vqa

    out = tmp_path_factory.mktemp("synthetic_vqa") / "set"
    return generate_synthetic_vqa(out, types=["blur"], levels=2, frames=8, width=64, height=48, progress=False)


@pytest.mark.filterwarnings("ignore::prresq.metrics.DegenerateInputWarning")
def test_video_benchmark_goes_through_the_video_flow(tmp_path, tiny_model_dir, synthetic_vqa):
    overrides = ["prompt=preresq_vqa", "limit=3", "benchmark=[]", *SMALL_GRID]
    cfg = compose_app("eval", ["scoring.max_new_tokens=4", *overrides], tmp_path, tiny_model_dir)
    assert cfg.video_dataflow._target_.endswith("VideoGridFlow") and cfg.dataflow._target_.endswith("ImageFlow")
    with open_dict(cfg):
        cfg.benchmark = {
            "synthetic_vqa": {
                "name": "synthetic_vqa",
                "adapter": "jsonl",
                "root": str(synthetic_vqa),
                "task": "vqa",
                "split": None,
                "options": {"labels": "test.jsonl"},
            }
        }
    results = run(cfg)
    pred = pd.read_csv(tmp_path / "eval" / "predictions_synthetic_vqa.csv")
    assert len(pred) == 3 and pred["media"].str.endswith(".mp4").all()
    assert (pred["status"] == pred["pred"].isna().map({True: "no_answer", False: "ok"})).all()  # no 3.0 padding
    assert (
        results.loc[0, "n"] + results.loc[0, "n_failed"] == 3
        and results.loc[0, "n_failed"] == pred["pred"].isna().sum()
    )


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def grpo_checkpoint(tmp_path_factory, tiny_model_dir) -> tuple[Path, dict[str, torch.Tensor]]:
    """A GRPOModule checkpoint in Lightning's layout (state_dict with policy.* and reference.*, hyper_parameters)."""
    from prresq.module import GRPOModule

    root = tmp_path_factory.mktemp("root")
    cfg = compose_config(
        "train", ["model=tiny", "loss.beta=0.04"], model_dir=tiny_model_dir, root_dir=root, output_dir=root
    )
    with open_dict(cfg):
        cfg.model.tiny = None
    plain = OmegaConf.to_container(cfg, resolve=True)
    module = GRPOModule(
        **{k: plain[k] for k in ("model", "grpo", "loss", "reward", "optim", "lr_scheduler", "scoring")}
    )
    with torch.no_grad():  # "trained" weights: differ from the base model's
        for p in module.policy.parameters():
            p.add_(0.01)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": 0}, path)
    return path, {k: v.clone() for k, v in module.policy.state_dict().items()}


def test_lightning_checkpoint_loads_the_policy_weights(grpo_checkpoint, tiny_model_dir):
    path, expected = grpo_checkpoint
    hparams, state = read_lightning_checkpoint(path)
    assert hparams["model"]["name_or_path"] == str(tiny_model_dir)
    assert not any(k.startswith(("policy.", "reference.")) for k in state)
    model, processor = load_scoring_model({"dtype": "float32", "attn_implementation": "sdpa"}, checkpoint=path)
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    base = load_policy(tiny_model_dir).state_dict()
    assert not all(torch.equal(base[k], loaded[k]) for k in base)
    assert not model.training and processor.tokenizer.padding_side == "left"


def test_checkpoint_errors_are_explicit(tmp_path, tiny_model_dir):
    bad = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(1)}, "hyper_parameters": {}}, bad)
    with pytest.raises(KeyError, match="policy"):
        read_lightning_checkpoint(bad)
    wrong = tmp_path / "wrong.ckpt"
    torch.save(
        {
            "state_dict": {"policy.w": torch.zeros(1)},
            "hyper_parameters": {"model": {"name_or_path": str(tiny_model_dir)}},
        },
        wrong,
    )
    with pytest.raises(RuntimeError, match="do not match"):
        load_scoring_model({}, checkpoint=wrong)
    with pytest.raises(ValueError, match="directory"):
        read_lightning_checkpoint(tmp_path)


def test_eval_from_an_exported_model_dir(tmp_path, tiny_model_dir, synthetic_iqa, grpo_checkpoint):
    path, _ = grpo_checkpoint
    model, processor = load_scoring_model({}, checkpoint=path)
    export = tmp_path / "export"
    model.save_pretrained(export)
    processor.save_pretrained(export)
    cfg = compose_eval(
        ["scoring.mode=expected", "limit=3", f"checkpoint={export}"], tmp_path, tiny_model_dir, synthetic_iqa
    )
    from_export = run(cfg)
    cfg = compose_eval(
        ["scoring.mode=expected", "limit=3", f"checkpoint={path}"], tmp_path / "ck", tiny_model_dir, synthetic_iqa
    )
    from_ckpt = run(cfg)
    pd.testing.assert_frame_equal(from_export, from_ckpt)


def test_missing_synthetic_benchmark_is_written_with_the_data_config_options(tmp_path, tiny_model_dir, monkeypatch):
    import prresq.data.synthetic as synthetic

    real = synthetic.generate_synthetic_iqa
    seen: dict = {}

    def small(out_dir, **options):
        seen.update(options, out_dir=Path(out_dir))
        return real(out_dir, **{**options, "crops_per_photo": 1, "size": 56, "progress": False})

    monkeypatch.setattr(synthetic, "generate_synthetic_iqa", small)
    cfg = compose_app(
        "eval", ["scoring.max_new_tokens=2", "scoring.mode=expected", "limit=4"], tmp_path, tiny_model_dir
    )
    run(cfg)
    assert seen["out_dir"] == tmp_path / "data" / "synthetic_iqa"
    # Every option, the directory included, is what a training run with data=synthetic_iqa generates.
    train_cfg = compose_config("train", ["data=synthetic_iqa"], data_dir=tmp_path / "data")
    trained = OmegaConf.to_container(train_cfg.data.synthetic, resolve=True)
    assert trained.pop("_target_") == "prresq.data.synthetic.generate_synthetic_iqa"
    assert {**seen, "out_dir": str(seen["out_dir"])} == trained and trained["crops_per_photo"] == 40
    assert (tmp_path / "eval" / "predictions_synthetic_iqa.csv").exists()


def test_predictions_align_by_order_and_list_skipped_items():
    from prresq.data.records import Record
    from prresq.eval import predictions_frame

    recs = [Record(id=i, dataset="b", media=Path(f"/d/{i}.png"), mos=m, mos_mapped=m / 2, source=f"/d/{i}.png")
            for i, m in (("a", 2.0), ("b", 4.0), ("a", 6.0))]  # fmt: skip
    scored = {
        "ids": ["a", "a"],
        "pred": torch.tensor([1.5, float("nan")]),
        "greedy": torch.tensor([1.5, float("nan")]),
        "n_parsed": torch.tensor([1, 0]),
        "texts": ["<answer>1.5</answer>", "??"],
    }
    df = predictions_frame(recs, scored, skipped=["/d/b.png: corrupt or unreadable image"])
    assert df["id"].tolist() == ["a", "b", "a"] and df["mos"].tolist() == [1.0, 2.0, 3.0]
    assert df["pred"].iloc[0] == 1.5 and df["pred"].iloc[1:].isna().all()
    assert df["status"].tolist() == ["ok", "error: /d/b.png: corrupt or unreadable image", "no_answer"]
    assert df["n_parsed"].tolist() == [1, 0, 0] and df["text"].tolist() == ["<answer>1.5</answer>", "", "??"]
    assert df["sample_mean"].isna().all() and df["mos_raw"].tolist() == [2.0, 4.0, 6.0]


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_missing_media_follow_on_bad_sample(tmp_path, tiny_model_dir, synthetic_iqa, policy):
    """Issue 14.8: `on_bad_sample` governs missing media as it governs unreadable media. `raise`
    names the label file and row and points at the config key; `skip` scores the rest and lists the
    missing item in the predictions CSV with its status, counted in `n_failed`."""
    from prresq.data.benchmarks import MissingMediaError

    data = tmp_path / "set"
    rows = (synthetic_iqa / "test.jsonl").read_text().splitlines()[:4]
    for row in rows:
        rel = json.loads(row)["image"][0]
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes((synthetic_iqa / rel).read_bytes())
    (data / "test.jsonl").write_text("\n".join(rows) + "\n")
    gone = json.loads(rows[1])
    (data / gone["image"][0]).unlink()
    cfg = compose_eval(["scoring.mode=expected", f"on_bad_sample={policy}"], tmp_path, tiny_model_dir, data)
    if policy == "raise":
        with pytest.raises(MissingMediaError) as err:
            run(cfg)
        assert f"{data / 'test.jsonl'} row 2: media file not found" in str(err.value)
        assert "on_bad_sample=skip" in str(err.value) and "skip_missing" not in str(err.value)
        return
    results = run(cfg)
    pred = pd.read_csv(tmp_path / "eval" / "predictions_synthetic_iqa.csv")
    assert len(pred) == 4 and pred["id"].tolist().count(gone["id"]) == 1
    row = pred[pred["id"] == gone["id"]].iloc[0]
    assert row["status"].startswith("skipped: ") and "row 2: media file not found" in row["status"]
    assert pd.isna(row["pred"]) and row["mos_raw"] == pytest.approx(float(gone["conversations"][-1]["value"]))
    assert (pred[pred["id"] != gone["id"]]["status"] == "ok").all()
    assert results.loc[0, "n"] + results.loc[0, "n_failed"] == 4 and results.loc[0, "n_failed"] >= 1


def test_an_unwritable_output_folder_fails_before_the_model_loads(tmp_path, synthetic_iqa):
    """Pins (issue 25 item 9): `prresq.eval` into a folder it cannot write fails first, naming the setting, not with
    a bare OSError (the model here does not exist: loading it first would fail on that instead)."""
    from prresq.write_errors import OutputFolderError

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = compose_eval([], blocker, tmp_path / "no_model", synthetic_iqa)
    with pytest.raises(OutputFolderError, match=r"paths\.output_dir: cannot write in .*a_file/eval"):
        run(cfg)


@pytest.mark.filterwarnings("ignore::prresq.metrics.DegenerateInputWarning")
@pytest.mark.parametrize("prompt", ["tiny", "vq_r1", "preresq_iqa", "preresq_iqa_ours", "preresq_vqa"])
def test_unreadable_answers_are_nan_counted_and_listed_for_every_prompt(
    tmp_path, tiny_model_dir, synthetic_iqa, prompt
):
    """The random tiny model's short answers: every prompt's default rule (scoring.answer_rule, the paper's) gives
    NaN where it cannot read the answer, never 3.0 or a padded mean; those rows say `no_answer` and count in
    n_failed; the `name score` file holds the others, as the anchors' SRCC.py reads them."""
    cfg = compose_eval(
        [f"prompt={prompt}", "limit=6", "paper=VisualQuality-R1"], tmp_path, tiny_model_dir, synthetic_iqa
    )
    own = {"tiny": "answer_first", "preresq_iqa_ours": "aspect_mean"}  # the prompts that name their rule
    assert cfg.scoring.answer_rule == own.get(prompt, "released")
    rule = {**own, "preresq_vqa": "answer_mean"}
    results = run(cfg)
    out = tmp_path / "eval"
    pred = pd.read_csv(out / "predictions_synthetic_iqa.csv", keep_default_na=False, na_values=[""])
    d = int(cfg.prompt.num_aspects)
    expected = score_answers(pred["text"].fillna("").tolist(), rule.get(prompt, "answer_first_or_text"), d)[0].numpy()
    np.testing.assert_allclose(pred["pred"].to_numpy(dtype=float), expected, rtol=1e-6)
    failed = pred["pred"].isna()
    assert (pred.loc[failed, "status"] == "no_answer").all() and (pred.loc[~failed, "status"] == "ok").all()
    assert results.loc[0, "n_failed"] == failed.sum() and failed.sum() >= 1
    lines = (out / "predictions_synthetic_iqa.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == pred.loc[~failed, "id"].tolist()
    assert [float(ln.split()[1]) for ln in lines] == pytest.approx(pred.loc[~failed, "pred"].tolist())
    beside = pd.read_csv(out / "results_vs_paper.csv")
    assert beside.loc[beside["benchmark"] == "average", "paper_srcc"].item() == 0.777
