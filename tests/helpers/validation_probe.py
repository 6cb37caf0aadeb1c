"""Callbacks for kill and signal tests: mark the start of a validation or a training step, then hold it open."""

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


class HoldStep(L.Callback):
    """At the start of training step `step`, touch `marker`, then wait until `release` exists (the test sends a
    signal in between, so it arrives during that step)."""

    def __init__(self, step: int, marker: str, release: str, seconds: float = 120.0) -> None:
        self.step, self.marker, self.release, self.seconds = step, Path(marker), Path(release), seconds

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(trainer.global_step))
            deadline = time.monotonic() + self.seconds
            while not self.release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
