"""PreResQ-R1's two-stage "exploration-to-stability" schedule, as a Lightning callback.

Stage 1 explores: a pool of prompts (one drawn per image), the response-std penalty on, many
samples per image (K = 12). Stage 2 stabilises: one prompt, fewer samples (K = 6). The switch
happens at `switch_fraction` of the run's rollout batches (released: ~780 of ~1560).

Reward weights are scaled, not set: `reward_scale: {response_penalty: 0.0}` multiplies the weight
the reward config gives the term, so one schedule serves every task (IQA's -1/3 and VQA's -1 alike).
A mix without a scaled term (e.g. the combined `preresq` reward, whose penalty is inside) is a
clear error when training starts, not at the switch.

The stage is a pure function of `global_step`, which counts rollout batches whatever
`grpo.num_iterations` is (`GRPOModule._clip_and_step`), so a run resumed from a checkpoint on
either side of the switch continues in the right stage. K and reward weights change exactly at the
switch, and so do the prompts: the choice lives in the collator (`PromptCollator.use_pool`) in
shared memory, so DataLoader workers, persistent ones included, use it for every batch they build
after the switch, and the few batches built ahead of the loop before it (Lightning fetches one
ahead, workers prefetch `num_workers * prefetch_factor`) are rebuilt in the main process at their
step (`PromptCollator.recollate`, counted in `recollated`).

    python -m prresq.train experiment=preresq_iqa_kadid schedule.stage1.k=12 schedule.stage2.k=6
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

STAGE_KEYS = ("k", "prompt_pool", "reward_scale")


class TwoStageSchedule(L.Callback):
    """Switch K, the prompt pool and reward weights from stage 1 to stage 2 at a fraction of training."""

    def __init__(
        self,
        switch_fraction: float,  # its one default: conf/schedule/two_stage.yaml
        stage1: Mapping[str, Any] | None = None,
        stage2: Mapping[str, Any] | None = None,
        total_steps: int | None = None,
    ) -> None:
        if not 0.0 <= switch_fraction <= 1.0:
            raise ValueError(f"schedule.switch_fraction={switch_fraction}: expected a value in [0, 1]")
        self.switch_fraction = switch_fraction
        self.stages = {1: dict(stage1 or {}), 2: dict(stage2 or {})}
        for stage, spec in self.stages.items():
            unknown = sorted(set(spec) - set(STAGE_KEYS))
            if unknown:
                raise ValueError(f"schedule.stage{stage}: unknown keys {unknown}; expected some of {STAGE_KEYS}")
        self.total_steps = total_steps
        self.current: int | None = None
        self.recollated = 0
        self._base_weights: dict[str, float] | None = None
        self._base_of: Any = None

    def switch_step(self, trainer: L.Trainer) -> int:
        """The first rollout batch (global step) of stage 2."""
        total = self.total_steps or int(trainer.estimated_stepping_batches)
        return math.ceil(self.switch_fraction * total)  # at least one stage-1 step when the fraction > 0

    def stage_at(self, trainer: L.Trainer, step: int) -> int:
        return 1 if step < self.switch_step(trainer) else 2

    def _base(self, rewards: Any) -> dict[str, float]:
        """The configured reward weights (captured before the schedule changes any)."""
        if self._base_of is not rewards:
            self._base_weights, self._base_of = dict(rewards.weights), rewards
            for stage, spec in self.stages.items():
                missing = sorted(set(spec.get("reward_scale") or {}) - set(self._base_weights))
                if missing:
                    raise ValueError(
                        f"schedule.stage{stage}.reward_scale scales {missing}, which the reward mix lacks "
                        f"(terms: {sorted(self._base_weights)}). The combined `preresq` reward keeps its "
                        "response penalty inside: use reward=[preresq_iqa,preresq_format] (or the VQA pair), "
                        "or schedule=none"
                    )
        assert self._base_weights is not None
        return self._base_weights

    def _apply(self, trainer: L.Trainer, module: Any, stage: int) -> None:
        spec = self.stages[stage]
        base = self._base(module.rewards)
        if "k" in spec:
            module.grpo.k = int(spec["k"])
        for name, scale in (spec.get("reward_scale") or {}).items():
            module.rewards.set_weight(name, base[name] * float(scale))
        if "prompt_pool" in spec:
            collate = getattr(trainer.train_dataloader, "collate_fn", None)
            if not hasattr(collate, "use_pool"):
                raise ValueError(
                    f"schedule.stage{stage}.prompt_pool needs the train loader to collate with a PromptCollator, "
                    f"got {type(collate).__name__}"
                )
            collate.use_pool(bool(spec["prompt_pool"]))
        if self.current != stage:
            log.info("PreResQ schedule: stage %d from step %d (%s)", stage, trainer.global_step, spec)
        self.current = stage

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module, self.stage_at(trainer, trainer.global_step))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        stage = self.stage_at(trainer, trainer.global_step)
        if stage != self.current:
            self._apply(trainer, pl_module, stage)
        self._match_prompts(trainer, batch)
        pl_module.log("train/stage", float(stage))

    def _match_prompts(self, trainer: L.Trainer, batch: Any) -> None:
        """Rebuild, in place, a batch built before the switch with the other prompt choice."""
        collate = getattr(trainer.train_dataloader, "collate_fn", None)
        if not isinstance(batch, dict) or "prompt_pool" not in batch or not hasattr(collate, "recollate"):
            return
        if bool(batch["prompt_pool"]) == collate.pool_in_use:
            return
        batch.update(trainer.strategy.batch_to_device(collate.recollate(batch)))
        self.recollated += 1
