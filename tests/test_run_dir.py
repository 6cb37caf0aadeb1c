"""One run directory, one run: a fresh run into a used directory stops, a resume continues, a lock stops a second run."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_train import TINY, compose_train

from prresq.run_dir import SAFE_NAME_BYTES, RunDirError, claim_run_dir, run_dir_name
from prresq.train import run

ROOT = Path(__file__).resolve().parents[1]
SHORT = [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=null", "trainer.limit_val_batches=0"]
SHORT += ["callbacks.checkpoint.every_n_train_steps=1", "export_dir=null"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir) -> Path:
    """A run directory holding a finished 2-step training (checkpoints, tb, csv, .hydra)."""
    out = tmp_path_factory.mktemp("finished")
    run(compose_train(SHORT, out, cache_dir))
    (out / ".hydra").mkdir()
    (out / ".hydra" / "overrides.yaml").write_text("- the finished run's overrides\n")
    return out


def _cli(*overrides: str, cache: Path, multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "prresq.train", *(["-m"] if multirun else []), *SHORT, f"paths.cache_dir={cache}"]
    cmd += overrides
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_fresh_run_into_a_finished_run_directory_stops_before_writing(finished_run, cache_dir):
    """The command line refuses, names the directory and the way out, and leaves the old run untouched
    (before: it trained and wrote last-v1.ckpt and a second tb event file beside the old ones)."""
    before = sorted(str(p.relative_to(finished_run)) for p in finished_run.rglob("*") if p.name != ".run.lock")
    out = _cli(f"hydra.run.dir={finished_run}", cache=cache_dir)
    assert out.returncode == 1
    assert f"{finished_run} already holds a run" in out.stderr and "ckpt_path=last" in out.stderr
    assert "overwrite_run_dir=true" in out.stderr
    after = sorted(str(p.relative_to(finished_run)) for p in finished_run.rglob("*") if p.name != ".run.lock")
    assert after == before
    assert (finished_run / ".hydra" / "overrides.yaml").read_text() == "- the finished run's overrides\n"


def test_in_process_run_refuses_too(finished_run, cache_dir):
    """`prresq.train.run` (no Hydra callback) applies the same rule."""
    with pytest.raises(RunDirError, match="already holds a run"):
        run(compose_train(SHORT, finished_run, cache_dir))


def test_overwrite_flag_replaces_the_old_outputs(tmp_path, cache_dir):
    """overwrite_run_dir=true deletes the old checkpoints and logs: last.ckpt is the new run's, one csv version."""
    run(compose_train(SHORT, tmp_path, cache_dir))
    cfg = compose_train([*SHORT, "trainer.max_steps=1", "overwrite_run_dir=true"], tmp_path, cache_dir)
    run(cfg)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step000001.ckpt"]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1
    assert [p.name for p in (tmp_path / "csv").iterdir()] == ["version_0"]


def test_resume_is_allowed_into_the_used_directory(tmp_path, cache_dir):
    """ckpt_path=last into the directory of the run it resumes continues it (no -v1 files)."""
    run(compose_train(SHORT, tmp_path, cache_dir))
    run(compose_train([*SHORT, "trainer.max_steps=3", "ckpt_path=last"], tmp_path, cache_dir))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step000001.ckpt", "step000002.ckpt", "step000003.ckpt"]


@pytest.mark.slow
def test_a_second_concurrent_run_is_refused_by_the_lock(tmp_path, cache_dir):
    """While a real training runs (held in validation), a resume into its directory stops on the lock."""
    run_dir, marker = tmp_path / "run", tmp_path / "validating"
    hold = f"+callbacks.hold={{_target_: validation_probe.HoldValidation, step: 1, marker: '{marker}'}}"
    cmd = [sys.executable, str(ROOT / "tests" / "helpers" / "train_with_probes.py"), *SHORT]
    cmd += [f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", "trainer.val_check_interval=1"]
    cmd += ["trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=null", "data.val_subset=4", hold]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run ended early"
            time.sleep(0.2)
        second = _cli(f"hydra.run.dir={run_dir}", "ckpt_path=last", cache=cache_dir)
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr and "another training is running" in second.stderr
        with pytest.raises(RunDirError, match="another training is running"):
            claim_run_dir(run_dir, resume=True, overwrite=False)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    claim_run_dir(run_dir, resume=True, overwrite=False).release()  # a killed holder leaves no stale lock


@pytest.mark.slow
def test_multirun_jobs_get_their_own_directories(tmp_path, cache_dir):
    """Hydra multirun (basic launcher, in one process): both jobs train, each in its fresh subdirectory."""
    sweep = tmp_path / "sweep"
    out = _cli("grpo.k=2,3", "trainer.max_steps=1", f"hydra.sweep.dir={sweep}", cache=cache_dir, multirun=True)
    assert out.returncode == 0, out.stderr[-2000:]
    lasts = sorted(sweep.rglob("checkpoints/last.ckpt"))
    assert len(lasts) == 2 and lasts[0].parent != lasts[1].parent
    assert ["grpo.k=2" in str(p) for p in lasts] == [True, False]


@pytest.mark.slow
def test_a_long_sweep_gets_a_short_stable_folder_and_a_slash_never_nests(tmp_path, cache_dir):
    """12 overrides (~330 bytes of folder name: `Errno 36` before) and a value with `/`: one folder directly in
    the sweep folder, at most SAFE_NAME_BYTES, ending in the hash of the full override string kept in .hydra/."""
    sweep = tmp_path / "sweep"
    notes = [f"+note.field_{i:02d}=value-{'x' * 16}-{i}" for i in range(11)]
    out = _cli(
        "grpo.k=2",
        "trainer.max_steps=1",
        "+note.path=a/b",
        *notes,
        f"hydra.sweep.dir={sweep}",
        cache=cache_dir,
        multirun=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(jobs) == 1 and (jobs[0] / "checkpoints" / "last.ckpt").is_file(), [p.name for p in sweep.iterdir()]
    job = jobs[0]
    hydra_cfg = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra
    full = hydra_cfg.job.override_dirname
    assert len(full.encode()) > 255 and "note.path=a/b" in full
    assert len(job.name.encode()) <= SAFE_NAME_BYTES and "/" not in job.name
    assert job.name == run_dir_name(full) and job.name.endswith(hashlib.sha256(full.encode()).hexdigest()[:12])
    assert "+note.path=a/b" in OmegaConf.load(job / ".hydra" / "overrides.yaml")


def test_run_dir_names():
    assert run_dir_name("grpo.k=2,data.root=/x/y") == "grpo.k=2,data.root=%2Fx%2Fy"
    assert run_dir_name("a=50%/b") == "a=50%25%2Fb"  # %2F in a value stays distinct from a `/`
    long = ",".join(f"key{i}=v{i}" for i in range(40))
    assert run_dir_name(long) == run_dir_name(long)  # stable
    assert run_dir_name(long) != run_dir_name(long + "1") and len(run_dir_name(long).encode()) == SAFE_NAME_BYTES
