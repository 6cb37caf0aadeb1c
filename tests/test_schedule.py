"""PreResQ-R1 two-stage schedule: K, prompt pool and reward weights switch at the configured rollout batch.

The fast tests drive the callback by hand; the slow ones run `prresq.train.run` on the real composed
`tiny_preresq` config (tiny model, real DataLoader workers, real Trainer) with a probe callback.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from conftest import compose_config
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import prresq.train as train
from prresq.config import GRPOConfig
from prresq.data.collate import PromptCollator
from prresq.data.records import Record
from prresq.models import load_processor
from prresq.rewards import build_reward_mix
from prresq.schedule import TwoStageSchedule


def _schedule(cfg: DictConfig) -> TwoStageSchedule:
    spec = OmegaConf.to_container(cfg.schedule, resolve=True)
    spec.pop("enabled"), spec.pop("_target_")
    return TwoStageSchedule(**spec)


@pytest.fixture(scope="module")
def collate(tiny_model_dir) -> PromptCollator:
    return PromptCollator(load_processor(tiny_model_dir), ["main prompt", "paraphrase 1", "paraphrase 2"])


def _module(reward: dict) -> SimpleNamespace:
    return SimpleNamespace(grpo=GRPOConfig(k=6), rewards=build_reward_mix(reward), log=lambda *a, **k: None)


@pytest.mark.parametrize(("task", "penalty"), [("iqa", -1 / 3), ("vqa", -1.0)])
def test_stage_weights_follow_the_task_reward_config(task, penalty, collate):
    """Pins: the composed two_stage schedule keeps each task's own stage-1 penalty weight and zeroes it in stage 2.

    Released PreResQ-R1 combinations (docs/design rewards.md): IQA (... - P ...) / 3, so -1/3; VQA ... - P ..., so -1.
    A hard-coded -1/3 would replace the VQA weight in stage 1.
    """
    overrides = ["experiment=preresq_iqa_kadid", f"reward=[preresq_{task},preresq_format]", "schedule.stage1.k=12"]
    cfg = compose_config("train", overrides)  # stage 1's K = 12 (the recipe keeps the released script's 6)
    reward = OmegaConf.to_container(cfg.reward, resolve=True)
    module = _module(reward)
    others = {k: v for k, v in module.rewards.weights.items() if k != "response_penalty"}
    schedule = _schedule(cfg)
    trainer = SimpleNamespace(
        global_step=0, estimated_stepping_batches=10, train_dataloader=SimpleNamespace(collate_fn=collate)
    )
    schedule.on_train_start(trainer, module)
    assert module.grpo.k == 12 and collate.pool_in_use
    assert module.rewards.weights["response_penalty"] == pytest.approx(penalty)
    for step in range(1, 10):
        trainer.global_step = step
        schedule.on_train_batch_start(trainer, module, None, step)
        assert module.grpo.k == (12 if step < 5 else 6), step
        assert module.rewards.weights["response_penalty"] == (pytest.approx(penalty) if step < 5 else 0.0), step
        assert collate.pool_in_use == (step < 5), step
    assert {k: v for k, v in module.rewards.weights.items() if k != "response_penalty"} == others


def test_resume_after_the_switch_starts_in_stage_two(collate):
    """Pins: the stage is a function of global_step, so a run resumed past the switch starts in stage 2."""
    module = _module({"response_penalty": {"weight": -1.0}, "rank": {"weight": 1 / 3}})
    schedule = TwoStageSchedule(
        switch_fraction=0.5,
        stage1={"k": 12, "prompt_pool": True, "reward_scale": {"response_penalty": 1.0}},
        stage2={"k": 6, "prompt_pool": False, "reward_scale": {"response_penalty": 0.0}},
    )
    trainer = SimpleNamespace(
        global_step=7, estimated_stepping_batches=10, train_dataloader=SimpleNamespace(collate_fn=collate)
    )
    schedule.on_train_start(trainer, module)
    assert module.grpo.k == 6 and not collate.pool_in_use and schedule.current == 2
    assert module.rewards.weights["response_penalty"] == 0.0


def test_a_mix_without_the_scheduled_term_is_a_clear_error(collate):
    """Pins: the combined `preresq` reward (penalty inside) cannot be scheduled: a ValueError naming the key, not KeyError."""
    cfg = compose_config("train", ["experiment=preresq_iqa_kadid", "reward=[preresq,preresq_format]"])
    module = _module(OmegaConf.to_container(cfg.reward, resolve=True))
    trainer = SimpleNamespace(
        global_step=0, estimated_stepping_batches=10, train_dataloader=SimpleNamespace(collate_fn=collate)
    )
    with pytest.raises(ValueError, match=r"schedule.stage1.reward_scale .*response_penalty.*preresq_iqa"):
        _schedule(cfg).on_train_start(trainer, module)


def test_bad_switch_fraction_and_stage_keys_are_clear_errors():
    with pytest.raises(ValueError, match="switch_fraction"):
        TwoStageSchedule(switch_fraction=1.5)
    with pytest.raises(ValueError, match=r"schedule.stage2: unknown keys \['reward_weights'\]"):
        TwoStageSchedule(switch_fraction=0.5, stage2={"reward_weights": {"response_penalty": 0.0}})


# ----------------------------------------------------------------------------- real runs


class Probe(L.Callback):
    """Per rollout batch: global step, stage, K and which prompts the batch holds; the optimiser at the end."""

    def __init__(self, pool: list[str]) -> None:
        self.pool = pool
        self.steps: list[dict[str, Any]] = []
        self.end: dict[str, Any] = {}
        self.schedule: TwoStageSchedule | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        tok = pl_module.processor.tokenizer
        texts = tok.batch_decode(batch["model_inputs"]["input_ids"])
        prompts = []
        for text in texts:
            found = [i for i, p in enumerate(self.pool) if p in text]
            assert len(found) == 1, (found, text)
            prompts.append(found[0])
        self.steps.append({"global_step": trainer.global_step, "prompts": prompts})

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        self.steps[-1].update(k=pl_module.k, stage=float(trainer.callback_metrics["train/stage"]))

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        opt = trainer.optimizers[0]
        steps = {int(s["step"]) for s in opt.state.values()}
        self.end = {"lr": opt.param_groups[0]["lr"], "adam_steps": steps, "global_step": trainer.global_step}


def _run_tiny_preresq(overrides: list[str], tmp_path: Path, cache_dir: Path, monkeypatch) -> tuple[Probe, DictConfig]:
    cfg = compose_config(
        "train",
        [
            "experiment=tiny_preresq",
            "warmup=none",
            "eval_before_after=false",
            "export_dir=null",
            "grpo.max_new_tokens=4",
            "schedule.stage1.k=3",
            "schedule.stage2.k=2",
            "data.batch_size=2",
            "data.synthetic.crops_per_photo=4",
            "trainer.max_time=null",
            "trainer.val_check_interval=null",
            "trainer.limit_val_batches=0",
            "callbacks.checkpoint.every_n_train_steps=1000",
            *overrides,
        ],
        root_dir=tmp_path,
        output_dir=tmp_path,
        cache_dir=cache_dir,
        data_dir=cache_dir / "data",
    )
    probe = Probe(list(cfg.prompt.pool))
    build_trainer = train.build_trainer

    def with_probe(c: DictConfig) -> L.Trainer:
        trainer = build_trainer(c)
        probe.schedule = next(cb for cb in trainer.callbacks if isinstance(cb, TwoStageSchedule))
        trainer.callbacks.append(probe)
        return trainer

    monkeypatch.setattr(train, "build_trainer", with_probe)
    train.run(cfg)
    return probe, cfg


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_stage_two_prompt_reaches_persistent_dataloader_workers(tmp_path, cache_dir, monkeypatch):
    """Pins: with 2 persistent DataLoader workers, every batch from the switch on holds only the stage-2 prompt.

    Real `prresq.train.run` (QualityDataModule loader, Lightning Trainer), 4-batch epochs so persistent
    workers serve several epochs. A worker is handed batch j only once the loop has taken batch
    j - num_workers * prefetch_factor - 1 (Lightning fetches one ahead), so batches from switch + 6 on
    were built by the workers after the switch whatever the timing; the ones prefetched before it are
    rebuilt at their step (counted). Stage-1 batches must draw from the pool.
    """
    workers, prefetch = 2, 2
    probe, _ = _run_tiny_preresq(
        [
            f"data.num_workers={workers}",
            "+data.persistent_workers=true",
            "trainer.max_epochs=-1",
            "trainer.max_steps=20",
            "trainer.limit_train_batches=4",
            "schedule.switch_fraction=0.2",
        ],
        tmp_path,
        cache_dir,
        monkeypatch,
    )
    switch = 4
    assert [s["global_step"] for s in probe.steps] == list(range(20))
    assert [s["stage"] for s in probe.steps] == [1.0] * switch + [2.0] * 16
    assert any(p != 0 for s in probe.steps[:switch] for p in s["prompts"]), "stage 1 should draw from the pool"
    assert all(s["prompts"] == [0, 0] for s in probe.steps[switch:]), [s["prompts"] for s in probe.steps]
    # At most the batches in flight at the switch were rebuilt: the other (>= 11) stage-2 batches came from the workers.
    assert 1 <= probe.schedule.recollated <= workers * prefetch + 1


@pytest.mark.slow
def test_num_iterations_two_counts_rollout_batches(tmp_path, cache_dir, monkeypatch):
    """Pins: with grpo.num_iterations = 2, max_steps, the stage switch and the LR schedule count rollout batches.

    6 batches of 2 optimiser steps each: global_step 0..5, stage 2 from batch 3 (0.5 * 6), the linear LR
    decays to exactly 0 after the last batch, and AdamW took 12 steps.
    """
    probe, cfg = _run_tiny_preresq(
        [
            "grpo.num_iterations=2",
            "trainer.max_epochs=-1",
            "trainer.max_steps=6",
            "lr_scheduler.decay=linear",
            "schedule.switch_fraction=0.5",
        ],
        tmp_path,
        cache_dir,
        monkeypatch,
    )
    assert [s["global_step"] for s in probe.steps] == [0, 1, 2, 3, 4, 5]
    assert [s["stage"] for s in probe.steps] == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    assert [s["k"] for s in probe.steps] == [3, 3, 3, 2, 2, 2]
    assert probe.end == {"lr": 0.0, "adam_steps": {12}, "global_step": 6}


def test_recollate_equals_a_batch_built_after_the_switch(tiny_model_dir, tmp_path):
    """Pins: a batch built with the pool and rebuilt after the switch equals one built with the single prompt."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (56, 56 + 28 * i, 3), dtype=np.uint8)).save(path)
        records.append(Record(f"r{i}", "toy", path, float(i), 1.0 + i, {}, f"toy.jsonl:{i + 1}"))
    pool = ["main prompt", "paraphrase 1", "paraphrase 2"]
    collate = PromptCollator(load_processor(tiny_model_dir), pool, dataset_ids={"toy": 0})
    before = collate(records)
    assert before["prompt_pool"] is True
    assert {collate.prompt_for(r) for r in records} != {"main prompt"}, "the pool must be drawn from"
    collate.use_pool(False)
    rebuilt, fresh = collate.recollate(before), collate(records)
    assert rebuilt["prompt_pool"] is False and fresh["prompt_pool"] is False
    for key in fresh["model_inputs"]:
        torch.testing.assert_close(rebuilt["model_inputs"][key], fresh["model_inputs"][key])
    assert not torch.equal(before["model_inputs"]["input_ids"], fresh["model_inputs"]["input_ids"])
    assert rebuilt["ids"] == fresh["ids"] and rebuilt["media"] == fresh["media"]
    torch.testing.assert_close(rebuilt["mos"], fresh["mos"])
    torch.testing.assert_close(rebuilt["dataset_ids"], fresh["dataset_ids"])
