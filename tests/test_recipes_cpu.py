"""The paper recipes run on CPU from native-layout mirrors of their datasets (issue 12).

Each recipe is composed unchanged except for the overrides a CPU forces: `model=tiny` (the tiny
model directory as `model.name_or_path`), `strategy=single`, `trainer.precision=32`, sizes and
steps, and `paths.data_dir=<mirror>` (`prresq.data.mirrors`: KADID-10K `dmos.csv` + `images/`,
SPAQ `.xlsx` + `TestImage/`, LSVQ label csv + `<name>.mp4`). A probe callback records every
training batch the real Lightning Trainer hands to the module; each test asserts what that
recipe alone exercises.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import pytest
import torch
from conftest import compose_config
from omegaconf import DictConfig, OmegaConf

import prresq.train as train
from prresq.data.mirrors import generate_mirrors

pytestmark = pytest.mark.slow
BUILD_TRAINER = train.build_trainer  # the unpatched builder (a test may run several recipes)

CPU = ["model=tiny", "strategy=single", "trainer.precision=32", "trainer.devices=1"]
SMALL = [
    "grpo.max_new_tokens=8",
    "scoring.n=2",
    "data.eval_batch_size=2",
    "eval_before_after=false",
    "export_dir=null",
    "trainer.max_time=null",
    "trainer.val_check_interval=null",
    "trainer.limit_val_batches=0",
]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """KADID-10K, SPAQ and LSVQ mirrors of the synthetic sets (about 10 s)."""
    return generate_mirrors(tmp_path_factory.mktemp("mirror"), ["kadid10k", "spaq", "lsvq"])


class Probe(L.Callback):
    """Records, for every training batch: step, dataset ids, MOS, ids, decoded prompt text, image
    grids, K, reward weights; and the logged metrics after the step."""

    def __init__(self, shift_policy: float = 0.0) -> None:
        self.batches: list[dict[str, Any]] = []
        self.shift_policy = shift_policy

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        """Optionally move the policy off the reference (seeded noise), so that the KL term and its
        gradient are not zero on a tiny random model whose answers all fail to parse."""
        if self.shift_policy:
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in pl_module.policy.parameters():
                    p.add_(torch.randn(p.shape, generator=gen).to(p) * self.shift_policy)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        inputs = batch["model_inputs"]
        tok = pl_module.processor.tokenizer
        self.batches.append(
            {
                "step": trainer.global_step,
                "dataset_ids": batch["dataset_ids"].tolist(),
                "mos": batch["mos"].tolist(),
                "ids": list(batch["ids"]),
                "text": tok.batch_decode(inputs["input_ids"]),
                "image_grid_thw": inputs.get("image_grid_thw"),
                "names": dict(trainer.datamodule.dataset_names),
            }
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        self.batches[-1].update(k=pl_module.k, weights=dict(pl_module.rewards.weights), metrics=metrics)


def run_recipe(
    name: str,
    overrides: list[str],
    mirror: Path,
    tiny: Path,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    shift_policy: float = 0.0,
) -> tuple[DictConfig, Probe, float]:
    cfg = compose_config(
        "train",
        [f"experiment={name}", *CPU, f"paths.data_dir={mirror}", *SMALL, *overrides],
        model_dir=tiny,
        root_dir=out,
        output_dir=out / "run",
    )
    probe = Probe(shift_policy)

    def with_probe(c: DictConfig) -> L.Trainer:
        trainer = BUILD_TRAINER(c)
        trainer.callbacks.append(probe)
        return trainer

    monkeypatch.setattr(train, "build_trainer", with_probe)
    start = time.perf_counter()
    train.run(cfg)
    return cfg, probe, time.perf_counter() - start


def test_vq_r1_kadid_batches_are_kadid_and_micro_batches_match(mirror, tiny_model_dir, tmp_path, monkeypatch):
    """vq_r1_kadid reads only KADID-10K (dmos.csv + images/); splitting the step's K x B
    completions into micro-batches of one image's K completions gives the loss and gradient norm
    of one batch (policy shifted off the reference, so the KL part of the loss is not zero)."""
    sizes = ["data.batch_size=2", "data.num_workers=0", "grpo.k=3", "trainer.max_steps=2"]
    losses = {}
    for micro in ("null", "3"):
        cfg, probe, wall = run_recipe(
            "vq_r1_kadid",
            [*sizes, f"grpo.micro_batch_size={micro}"],
            mirror,
            tiny_model_dir,
            tmp_path / micro,
            monkeypatch,
            shift_policy=0.05,
        )
        print(f"vq_r1_kadid micro_batch_size={micro}: {wall:.1f} s")
        assert len(probe.batches) == 2
        for b in probe.batches:
            assert b["names"] == {0: "kadid10k"} and b["dataset_ids"] == [0, 0]
            assert all(i.endswith(".png") and i.startswith("I") for i in b["ids"])
        losses[micro] = [(b["metrics"]["train/loss"], b["metrics"]["train/grad_norm"]) for b in probe.batches]
    assert all(math.isfinite(v) and abs(v) > 1e-9 for pair in losses["null"] for v in pair), losses
    for (l1, g1), (l2, g2) in zip(losses["null"], losses["3"]):
        assert l2 == pytest.approx(l1, rel=1e-4, abs=1e-6) and g2 == pytest.approx(g1, rel=1e-4, abs=1e-6)


def test_kadid_spaq_batches_never_mix_and_mos_is_mapped_per_dataset(mirror, tiny_model_dir, tmp_path, monkeypatch):
    """The multi-dataset recipe (vq_r1_kadid with data=kadid_spaq): every batch comes from one
    dataset, both datasets are trained on, and each MOS is its native value mapped to [1, 5] over
    the min and max of that dataset's whole label file (mos_scaling: observed, as the released make_data.py)."""
    sizes = ["data=kadid_spaq", "data.batch_size=2", "data.num_workers=0", "grpo.k=2", "trainer.max_steps=8"]
    _, probe, wall = run_recipe("vq_r1_kadid", sizes, mirror, tiny_model_dir, tmp_path, monkeypatch)
    print(f"kadid_spaq: {wall:.1f} s")
    kadid = pd.read_csv(mirror / "kadid10k/dmos.csv").set_index("dist_img")["dmos"]
    spaq = pd.read_excel(mirror / "spaq/Annotations/MOS and Image attribute scores.xlsx").set_index("Image name")["MOS"]
    seen = set()
    for b in probe.batches:
        assert len(set(b["dataset_ids"])) == 1, b["dataset_ids"]
        name = b["names"][b["dataset_ids"][0]]
        seen.add(name)
        col = kadid if name == "kadid10k" else spaq
        native = [1 + 4 * (col[i] - col.min()) / (col.max() - col.min()) for i in b["ids"]]
        assert b["mos"] == pytest.approx(native, abs=1e-5)
    assert seen == {"kadid10k", "spaq"}


def test_preresq_iqa_kadid_stage_switch_reaches_worker_batches(mirror, tiny_model_dir, tmp_path, monkeypatch):
    """preresq_iqa_kadid with data.num_workers=2 across the two-stage switch: after it, K and the
    reward weights are stage 2's, and the batches the worker processes build carry stage 2's single
    prompt from the switch step on (before it, stage 1's pool); batches prefetched before the switch
    are rebuilt, so none lags."""
    # 45 training images / 2 = 22 batches per epoch: the switch (step 7) and the checked steps share
    # one epoch, so no fresh worker process hides the crossing.
    sizes = ["data.batch_size=2", "data.num_workers=2", "grpo.max_new_tokens=8", "trainer.max_steps=14"]
    cfg, probe, wall = run_recipe(
        "preresq_iqa_kadid",
        [*sizes, "schedule.stage1.k=3", "schedule.stage2.k=2"],
        mirror,
        tiny_model_dir,
        tmp_path,
        monkeypatch,
    )
    print(f"preresq_iqa_kadid: {wall:.1f} s")
    pool = list(OmegaConf.to_container(cfg.prompt, resolve=True)["pool"])
    switch = math.ceil(float(cfg.schedule.switch_fraction) * 14)
    stage = {s: OmegaConf.to_container(cfg.schedule[f"stage{s}"], resolve=True) for s in (1, 2)}
    assert len(probe.batches) == 14

    def prompts(b: dict[str, Any]) -> list[int]:
        return [next(j for j, p in enumerate(pool) if " ".join(p.split()) in " ".join(t.split())) for t in b["text"]]

    before = [b for b in probe.batches if b["step"] < switch]
    after = [b for b in probe.batches if b["step"] >= switch]
    assert {b["k"] for b in before} == {stage[1]["k"]} and {b["k"] for b in after} == {stage[2]["k"]}
    configured = float(cfg.reward.response_penalty.weight)
    for b in before:
        assert b["weights"]["response_penalty"] == pytest.approx(
            configured * stage[1]["reward_scale"]["response_penalty"]
        )
    for b in after:
        assert b["weights"]["response_penalty"] == pytest.approx(
            configured * stage[2]["reward_scale"]["response_penalty"]
        )
    assert any(j != 0 for b in before for j in prompts(b)), "stage 1 draws from the pool"
    assert after and all(prompts(b) == [0] * len(b["ids"]) for b in after), [prompts(b) for b in after]


def test_preresq_vqa_lsvq_grid_and_local_frames_reach_the_model(mirror, tiny_model_dir, tmp_path, monkeypatch):
    """preresq_vqa_lsvq (LSVQ label csv + <name>.mp4, dataflow=video_grid): each video reaches the
    model as a 4x4 grid of its 160x112 frames (640x448 -> 448x644 after Qwen's 28 px rounding ->
    grid 1x32x46 patches) plus 3 local frames (112x160 -> 112x168 -> 1x8x12), each labelled."""
    sizes = ["data.batch_size=2", "data.num_workers=0", "grpo.k=2", "trainer.max_steps=2"]
    _, probe, wall = run_recipe("preresq_vqa_lsvq", sizes, mirror, tiny_model_dir, tmp_path, monkeypatch)
    print(f"preresq_vqa_lsvq: {wall:.1f} s")
    assert len(probe.batches) == 2
    for b in probe.batches:
        assert b["names"] == {0: "lsvq"} and all(i.startswith("ia-batch") for i in b["ids"])
        per_video = [[1, 32, 46], [1, 8, 12], [1, 8, 12], [1, 8, 12]]
        assert b["image_grid_thw"].tolist() == per_video * len(b["ids"])
        for text in b["text"]:
            assert text.count("Global multiframe picture:") == 1
            assert all(text.count(f"Local single frame picture {i}:") == 1 for i in (1, 2, 3))
        assert all(math.isfinite(v) for v in (b["metrics"]["train/loss"],))
