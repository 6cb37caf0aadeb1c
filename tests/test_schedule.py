"""PreResQ-R1 two-stage schedule: K, prompt pool and reward weights switch at the configured step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from prresq.rewards import build_reward_mix
from prresq.schedule import TwoStageSchedule


def _setup(step: int):
    collate = SimpleNamespace(pool=["main prompt", "paraphrase 1", "paraphrase 2"])
    trainer = SimpleNamespace(
        global_step=step, estimated_stepping_batches=10, train_dataloader=SimpleNamespace(collate_fn=collate)
    )
    module = SimpleNamespace(
        grpo={"k": 6},
        rewards=build_reward_mix({"response_penalty": {"weight": -1 / 3}, "rank": {"weight": 1 / 3}}),
        log=lambda *a, **k: None,
    )
    schedule = TwoStageSchedule(
        switch_fraction=0.5,
        stage1={"k": 12, "prompt_pool": True, "reward_weights": {"response_penalty": -1 / 3}},
        stage2={"k": 6, "prompt_pool": False, "reward_weights": {"response_penalty": 0.0}},
    )
    return schedule, trainer, module, collate


def test_stage_one_then_two_at_half_of_training():
    schedule, trainer, module, collate = _setup(step=0)
    schedule.on_train_start(trainer, module)
    assert module.grpo["k"] == 12 and len(collate.pool) == 3
    assert module.rewards.weights["response_penalty"] == pytest.approx(-1 / 3)
    for step in range(1, 10):
        trainer.global_step = step
        schedule.on_train_batch_start(trainer, module, None, step)
        expected = 12 if step < 5 else 6
        assert module.grpo["k"] == expected, step
    assert collate.pool == ["main prompt"]
    assert module.rewards.weights["response_penalty"] == 0.0


def test_resume_after_the_switch_starts_in_stage_two():
    schedule, trainer, module, collate = _setup(step=7)
    schedule.on_train_start(trainer, module)
    assert module.grpo["k"] == 6 and collate.pool == ["main prompt"] and schedule.current == 2


def test_bad_switch_fraction_is_a_clear_error():
    with pytest.raises(ValueError, match="switch_fraction"):
        TwoStageSchedule(switch_fraction=1.5)
