"""A callback for kill tests: marks the start of validation at one step, then holds it open."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from prresq.rewards import register_reward


class HoldValidation(L.Callback):
    """At the first validation batch of `step`, touch `marker` and sleep `seconds` (the test kills the process)."""

    def __init__(self, step: int, marker: str, seconds: float = 600.0) -> None:
        self.step, self.marker, self.seconds = step, Path(marker), seconds

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(trainer.global_step))
            time.sleep(self.seconds)


@register_reward("test_char_count")
class CharCount:
    """A reward a random model can earn (completion length in characters), so updates are not all zero."""

    def __call__(self, inputs: Any) -> Any:
        k = inputs.scores.shape[1]
        return torch.tensor([len(t) / 10.0 for t in inputs.texts]).view(-1, k)
