"""Logs a person can read: one line per cause, loader workers sized to the machine, lint without a reinstall."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import compose_config

from prresq.config import loader_workers

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("experiment", ["vq_r1_kadid", "preresq_iqa_kadid", "preresq_vqa_lsvq"])
def test_recipe_loader_workers_follow_the_cpus(experiment, monkeypatch):
    """Pins: the recipes' 4 loader workers become the CPU count on a smaller machine (PyTorch warned, once per
    loader, that 4 workers exceed the 2 CPUs of this machine)."""
    monkeypatch.setenv("PRERESQ_IQA_CHECKPOINT", "unused")
    cpus = len(os.sched_getaffinity(0))
    assert compose_config("train", [f"experiment={experiment}"]).data.num_workers == min(4, cpus)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert loader_workers(4) == 2 and loader_workers(1) == 1


def test_make_lint_needs_no_reinstall(tmp_path):
    """Pins: `make lint` runs ruff from an existing environment; it reinstalled the whole project (pip install
    -e .[dev] + DeepSpeed) whenever pyproject.toml was newer than the install stamp."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for tool in ("python", "ruff"):
        (venv / "bin" / tool).touch(mode=0o755)
    for target in ("lint", "format"):
        planned = subprocess.run(
            ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True, text=True, check=True
        ).stdout
        assert "pip install" not in planned and f"{venv}/bin/ruff" in planned, planned
