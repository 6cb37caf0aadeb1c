"""Callbacks for kill and signal tests: mark the start of a validation or a training step, then hold it open."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.experimental.callback import Callback as HydraCallback

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


class PaceFirstSlurmRun(L.Callback):
    """Sleep `seconds` after each training step, only in the first run of a SLURM job (not after a requeue,
    not outside SLURM): the job is still training when its time-limit signal comes. Sleeping changes no result."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0:
            time.sleep(self.seconds)


class RegisterTestRewards(HydraCallback):
    """A Hydra callback (`+hydra.callbacks.test_rewards={_target_: validation_probe.RegisterTestRewards}`): Hydra
    creates it in every job process (SLURM jobs too), and importing this module registers `test_char_count`."""
