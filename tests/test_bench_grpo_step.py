"""The GRPO step benchmark runs in a checkout where `make train` already wrote its tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prresq.models import ensure_model_dir

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "experiments" / "bench" / "bench_grpo_step.py"


@pytest.mark.slow
def test_bench_uses_the_tiny_model_folder_that_training_wrote(tmp_path: Path) -> None:
    # what `model=tiny` writes: .cache/tiny-qwen2.5-vl/<spec digest>/
    trained = ensure_model_dir(tmp_path / ".cache" / "tiny-qwen2.5-vl", {}, "qwen2_5_vl")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(BENCH), "--only", "plain", "--steps", "1", "--images", "1", "--k", "2"]
    proc = subprocess.run(
        [*cmd, "--new-tokens", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "plain" in proc.stdout
    # the benchmark reused the training's model folder instead of writing (or refusing) another one
    assert [p.name for p in trained.parent.iterdir() if not p.name.startswith(".")] == [trained.name]
