"""Signals during training (no scheduler): SIGTERM, SIGUSR1 and SIGUSR2 save `last.ckpt` after the step in flight
and exit non-zero; `ckpt_path=last` then continues exactly (no step redone). Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from prresq.preemption import resume_ckpt_path

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "helpers"

COMMON = [
    "experiment=tiny_synthetic",
    "warmup=none",
    "eval_before_after=false",
    "export_dir=null",
    "grpo.k=2",
    "grpo.max_new_tokens=6",
    "scoring.n=1",
    "data.batch_size=2",
    "data.val_subset=4",
    "data.eval_batch_size=4",
    "trainer.max_time=null",
    "+reward.length={name:test_char_count,weight:1.0}",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "callbacks.checkpoint.every_n_train_steps=3",
    "trainer.enable_progress_bar=false",
]
HELD_STEP = 1  # the signal arrives during step 1 (0-based): saved at global step 2, before the first periodic save (3)


def _train(run_dir: Path, cache: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(HELPERS / "train_with_probes.py"), *COMMON, f"paths.cache_dir={cache}"]
    cmd += [f"hydra.run.dir={run_dir}", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    return proc.wait(timeout=timeout)


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(f) for f in sorted((run_dir / "csv").glob("version_*/metrics.csv"))])


def _signalled_run(run_dir: Path, cache: Path, signum: int) -> int:
    """Train `run_dir` until step HELD_STEP is in flight, send `signum` from outside, return the exit status."""
    run_dir.mkdir()
    marker, release = run_dir.parent / f"{run_dir.name}.held", run_dir.parent / f"{run_dir.name}.release"
    hold = f"+callbacks.hold={{_target_: validation_probe.HoldStep, step: {HELD_STEP}, marker: '{marker}', "
    hold += f"release: '{release}'}}"
    proc = _train(run_dir, cache, hold)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"{run_dir.name} ended before step {HELD_STEP}"
        time.sleep(0.1)
    os.kill(proc.pid, signum)
    release.touch()
    return _finish(proc)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    cache, run = tmp / "cache", tmp / "A"
    run.mkdir()
    assert _finish(_train(run, cache)) == 0, (tmp / "A.log").read_text()[-3000:]
    return run, cache


@pytest.mark.slow
def test_sigterm_saves_at_the_step_in_flight_and_the_resume_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    full, cache = uninterrupted
    run = tmp_path / "B"
    status = _signalled_run(run, cache, signal.SIGTERM)
    log = (tmp_path / "B.log").read_text()
    assert status == 128 + signal.SIGTERM, log[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == HELD_STEP + 1  # the step in flight finished, then the save: no step lost
    assert "resume with ckpt_path=last" in log
    assert _finish(_train(run, cache, "ckpt_path=last")) == 0, (tmp_path / "B.log").read_text()[-3000:]

    want, got = _metrics(full), _metrics(run)
    columns = [c for c in want.columns if c.startswith("train/")]
    want_train = want.dropna(subset=["train/loss"]).set_index("step")[columns]
    got_train = got.dropna(subset=["train/loss"]).set_index("step")[columns]
    assert list(got_train.index) == list(range(6)) == list(want_train.index)  # each step logged once: none redone
    assert (want_train["train/grad_norm"] > 0).all()
    pd.testing.assert_frame_equal(got_train, want_train, rtol=1e-6, atol=1e-9)
    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert a["global_step"] == b["global_step"] == 6
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step000003.ckpt",
        "step000006.ckpt",
    ]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_usr_signals_save_at_the_step_in_flight_and_exit_non_zero(uninterrupted, tmp_path, signum):
    _, cache = uninterrupted
    run = tmp_path / "B"
    status = _signalled_run(run, cache, signum)
    assert status == 128 + signum, (tmp_path / "B.log").read_text()[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == HELD_STEP + 1


def test_a_requeued_slurm_job_resumes_by_itself(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert resume_ckpt_path(None, tmp_path) is None  # the first run of a job starts fresh
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_ckpt_path(None, tmp_path) == "last"  # requeued before its first save: `last` finds none, fresh
    assert resume_ckpt_path("/init/x.ckpt", tmp_path) == "/init/x.ckpt"  # nothing of its own yet: the given start
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_ckpt_path("/init/x.ckpt", tmp_path) == "last"  # never back to the start after a requeue
    monkeypatch.delenv("SLURM_JOB_ID")
    assert resume_ckpt_path(None, tmp_path) is None and resume_ckpt_path("/init/x.ckpt", tmp_path) == "/init/x.ckpt"
