"""The README's CPU recipe block, run exactly as written in a fresh folder (what a newcomer types)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from prresq.checkpoint_loading import read_lightning_checkpoint
from prresq.models import build_tiny_model, ensure_model_dir

ROOT = Path(__file__).resolve().parents[1]


def readme_block(first_line: str) -> str:
    """The README's ```bash block that starts with `first_line`, verbatim."""
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"README.md has no bash block starting with {first_line!r}")


def run_block(block: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """`bash -e` over the block in `cwd`, with `python` the interpreter running the tests and no PRRESQ_ROOT."""
    env = {k: v for k, v in os.environ.items() if k not in ("PRRESQ_ROOT", "PRERESQ_IQA_CHECKPOINT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)  # the checkout, as `pip install -e .` makes it importable
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        ["bash", "-e", "-c", block], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_cpu_recipe_commands_run_as_written(tmp_path):
    """Pins: every command of the README's CPU recipe block works as typed (`experiment=vq_r1_kadid` stopped on
    `val_check_interval (200) must be <= the number of training batches`; the recipe test added two overrides
    quietly), each run exports its policy, and the VQA recipe starts from the IQA run's export, which it leaves
    as it was (a tiny model was written over it, or into checkpoints/PreResIQA-R1)."""
    block = readme_block("python -m prresq.data.mirrors --out .cache/mirror\nCPU=")
    done = run_block(block, tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = {p.parent.name: p for p in (tmp_path / "outputs").glob("*/*")}
    exports = sorted((tmp_path / "outputs").glob("*/*/export"))
    assert len(exports) == 4 and set(runs) == {"vq_r1_kadid", "preresq_iqa_kadid", "preresq_vqa_lsvq"}, exports
    (iqa_export,) = (tmp_path / "outputs" / "preresq_iqa_kadid").glob("*/export")
    hparams, _ = read_lightning_checkpoint(runs["preresq_vqa_lsvq"] / "checkpoints" / "last.ckpt")
    assert hparams["model"]["name_or_path"] == f"outputs/preresq_iqa_kadid/{iqa_export.parent.name}/export"
    assert not (iqa_export / "prresq_tiny.json").exists()
    assert not (tmp_path / "checkpoints").exists()


def test_tiny_sizes_never_overwrite_a_trained_model(tmp_path):
    """Pins: `model=tiny model.name_or_path=RUN/export` (the VQA recipe on a CPU) loads the export; a directory
    without the tiny model's marker is never rewritten with random weights."""
    export = tmp_path / "export"
    shutil.copytree(build_tiny_model(tmp_path / "tiny"), export)
    (export / "prresq_tiny.json").unlink()
    weights = export / "model.safetensors"
    before = weights.read_bytes()
    weights.write_bytes(before)  # a trained export: same layout, its own weights
    stamp = weights.stat().st_mtime_ns
    assert ensure_model_dir(export, {"seed": 1}) == export
    assert weights.stat().st_mtime_ns == stamp and weights.read_bytes() == before
    assert not (export / "prresq_tiny.json").exists()


@pytest.mark.slow
def test_evaluate_and_score_your_own_images_as_written(tmp_path):
    """Pins: the README's "Evaluate and score your own images" block works as written after a (tiny) `make train`
    run: eval reproduces the run's held-out predictions (its prompt, scoring and fold come from the export), infer
    scores the folder and the single image, and the analysis prints the run's tags."""
    from conftest import train_like_make_train

    run_dir = train_like_make_train(tmp_path, ["trainer.max_steps=1", "trainer.limit_val_batches=0"])
    block = readme_block("RUN=$(ls -d outputs/tiny_synthetic/*/ | tail -n 1)\n")
    done = run_block(block, tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    (eval_dir,) = (tmp_path / "outputs" / "eval").glob("*/eval")
    ours = pd.read_csv(eval_dir / "predictions_synthetic_iqa.csv")
    held = pd.read_csv(run_dir / "eval" / "after" / "predictions_test.csv")
    assert list(ours["id"]) == list(held["id"]) and list(ours["text"]) == list(held["text"])
    folder = pd.read_csv(tmp_path / "scores" / "astronaut.csv")
    assert len(folder) == 5 and set(folder["status"]) <= {"ok", "no_answer"}
    one = (tmp_path / "scores" / "one.jsonl").read_text().splitlines()
    assert len(one) == 1 and "astronaut_c000_white_noise_l3.png" in one[0]
    assert "val/" in done.stdout or "train/loss" in done.stdout
