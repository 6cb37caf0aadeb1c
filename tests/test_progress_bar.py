"""The progress bar: `trainer.enable_progress_bar=false` alone switches it off; off by default in SLURM batch jobs."""

from __future__ import annotations

import io

import pytest
from lightning.pytorch.callbacks import ProgressBar
from test_train import TINY, compose_train

from prresq.preemption import SignalCheckpoint
from prresq.train import build_trainer, progress_bar_enabled


def _bars(trainer) -> list:
    return [c for c in trainer.callbacks if isinstance(c, ProgressBar)]


def test_enable_progress_bar_false_alone_builds_a_trainer_without_a_bar(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    # before: Lightning refused a ProgressBar callback with enable_progress_bar=False (callbacks.progress was needed too)
    trainer = build_trainer(compose_train([*TINY, "trainer.enable_progress_bar=false"], tmp_path, tmp_path / "c"))
    assert _bars(trainer) == [] and not trainer.progress_bar_callback
    assert any(isinstance(c, SignalCheckpoint) for c in trainer.callbacks)  # the default callbacks are kept
    trainer = build_trainer(compose_train([*TINY, "trainer.enable_progress_bar=true"], tmp_path, tmp_path / "c"))
    assert len(_bars(trainer)) == 1


def test_the_default_is_off_in_a_slurm_batch_job_only(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file, not a terminal
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert progress_bar_enabled(None) is True
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert progress_bar_enabled(None) is False
    assert progress_bar_enabled(True) is True and progress_bar_enabled(False) is False


@pytest.mark.parametrize("setting", [None, "false"])
def test_a_slurm_batch_job_builds_a_trainer_without_a_bar(tmp_path, monkeypatch, setting):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    extra = [] if setting is None else [f"trainer.enable_progress_bar={setting}"]
    assert _bars(build_trainer(compose_train([*TINY, *extra], tmp_path, tmp_path / "c"))) == []
