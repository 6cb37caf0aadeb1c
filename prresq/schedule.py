"""PreResQ-R1's two-stage "exploration-to-stability" schedule, as a Lightning callback.

Stage 1 explores: a pool of prompts (one drawn per image), the response-std penalty on, many
samples per image (K = 12). Stage 2 stabilises: one prompt, fewer samples (K = 6). The switch
happens at `switch_fraction` of the run's optimiser steps (released: ~780 of ~1560).

The stage is a pure function of `global_step`, so a run resumed from a checkpoint on either side
of the switch continues in the right stage. Because Lightning collates one batch ahead, the
prompt change reaches the data one batch after the step that crosses the switch point (K and
reward weights change exactly at the switch).

    python -m prresq.train experiment=preresq_iqa_kadid schedule.stage1.k=12 schedule.stage2.k=6
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class TwoStageSchedule(L.Callback):
    """Switch K, the prompt pool and reward weights from stage 1 to stage 2 at a fraction of training."""

    def __init__(
        self,
        switch_fraction: float = 0.5,
        stage1: Mapping[str, Any] | None = None,
        stage2: Mapping[str, Any] | None = None,
        total_steps: int | None = None,
    ) -> None:
        if not 0.0 <= switch_fraction <= 1.0:
            raise ValueError(f"schedule.switch_fraction={switch_fraction}: expected a value in [0, 1]")
        self.switch_fraction = switch_fraction
        self.stages = {1: dict(stage1 or {}), 2: dict(stage2 or {})}
        self.total_steps = total_steps
        self.current: int | None = None

    def switch_step(self, trainer: L.Trainer) -> int:
        total = self.total_steps or int(trainer.estimated_stepping_batches)
        return math.ceil(self.switch_fraction * total)  # at least one stage-1 step when the fraction > 0

    def stage_at(self, trainer: L.Trainer, step: int) -> int:
        return 1 if step < self.switch_step(trainer) else 2

    def _apply(self, trainer: L.Trainer, module: Any, stage: int) -> None:
        spec = self.stages[stage]
        if "k" in spec:
            module.grpo["k"] = int(spec["k"])
        for name, weight in (spec.get("reward_weights") or {}).items():
            module.rewards.set_weight(name, float(weight))
        if "prompt_pool" in spec:
            collate = getattr(trainer.train_dataloader, "collate_fn", None)
            if collate is not None and hasattr(collate, "pool"):
                full = getattr(collate, "full_pool", None) or list(collate.pool)
                collate.full_pool = full
                collate.pool = full if spec["prompt_pool"] else full[:1]
        if self.current != stage:
            log.info("PreResQ schedule: stage %d from step %d (%s)", stage, trainer.global_step, spec)
        self.current = stage

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module, self.stage_at(trainer, trainer.global_step))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        stage = self.stage_at(trainer, trainer.global_step)
        if stage != self.current:
            self._apply(trainer, pl_module, stage)
        pl_module.log("train/stage", float(stage))
