"""What the GPU kit's training runs add to `prresq.train`: a reward a random model can earn, and a hard kill.

`experiments/gpu/train_case.py` imports this module before Hydra starts, so that overrides can name
`kit_char_count` (`+reward.length={name: kit_char_count, weight: 1.0}`) and
`kit_plugins.KillAtStep` (`+callbacks.kill={_target_: kit_plugins.KillAtStep, step: 4}`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning as L
import torch
from torch import Tensor

from prresq.rewards import register_reward
from prresq.rewards.registry import RewardInputs

KILLED_RC = 137  # what a SIGKILL'd process reports


@register_reward("kit_char_count")
class CharCount:
    """Completion length in characters / 10.

    The tiny models are random and rarely write a parseable `<answer>`, so fidelity and format
    rewards are 0 for all K samples, the group advantages are 0 and so is the gradient. This term
    differs between the K samples of an image, so the policy gradient is non-zero and every update
    path (clipping, optimiser, DeepSpeed partitions) is exercised.
    """

    def __call__(self, inputs: RewardInputs) -> Tensor:
        k = inputs.num_samples
        return torch.tensor([len(t) / 10.0 for t in inputs.texts], device=inputs.scores.device).view(-1, k)


class KillAtStep(L.Callback):
    """Ends the process at once (`os._exit`, no teardown, no final checkpoint) when `global_step` reaches `step`.

    Runs at the start of a training batch, so the checkpoint taken at the end of the previous step
    is complete on disk: the state of a job killed between two steps.
    """

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if trainer.global_step >= self.step:
            print(f"KillAtStep: killing the run at global_step={trainer.global_step}", flush=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(KILLED_RC)
