"""`hydra/launcher=slurm` against a real SLURM cluster (`experiments/slurm/cluster.sh start`): real `sbatch`,
real time limits and signals. Skipped with the reason when no idle node answers `sinfo` (tests/conftest.py).

- the README's multirun at tiny sizes: one job per override set, each result back in the launching process;
- a job that hits its time limit saves at the signal, is requeued, resumes by itself, and ends with the
  per-step metrics and weights of an uninterrupted run;
- a 2-task DDP job pre-empted (`scancel --signal=USR2`) the same way;
- a failing job ends FAILED in SLURM and the launching process exits non-zero naming it.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_scaleout import prepare_root

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "helpers"
TIMEOUT_S = 420

pytestmark = pytest.mark.slurm

TINY = [
    "experiment=tiny_synthetic",
    "warmup=none",
    "eval_before_after=false",
    "export_dir=null",
    "grpo.max_new_tokens=6",
    "scoring.n=1",
    "data.batch_size=2",
    "trainer.max_time=null",
    "trainer.limit_val_batches=0",
    "trainer.val_check_interval=null",
    "num_threads=1",
    "+reward.length={name:test_char_count,weight:1.0}",
    "+hydra.callbacks.test_rewards={_target_: validation_probe.RegisterTestRewards}",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PRRESQ_ROOT of the jobs, its tiny model and synthetic set written once (jobs only read them)."""
    root = tmp_path_factory.mktemp("slurm")
    prepare_root(root)
    return root


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env.update(
        PRRESQ_ROOT=str(root),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HELPERS)]),
        OMP_NUM_THREADS="1",
        HYDRA_FULL_ERROR="1",
        SLURM_CPUS_PER_TASK="1",
        SLURM_TIMEOUT_MIN="5",
    )
    env.update(extra)
    return env


def _start(args: list[str], root: Path, cwd: Path, module: str = "prresq.train", **env: str) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=_env(root, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=os.setsid,  # on a time-out the whole group is stopped (and its jobs cancelled below)
    )


def _wait(proc: subprocess.Popen, sweep: Path | None = None) -> str:
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        if sweep is not None:
            for job in _job_ids(sweep):
                subprocess.run(["scancel", job.split("_")[0]], check=False)
        pytest.fail(f"timed out after {TIMEOUT_S} s\n{out[-6000:]}")
    return out


def _slurm(args: list[str], root: Path, sweep: Path, module: str = "prresq.train", **env: str) -> subprocess.Popen:
    return _start(["-m", "hydra/launcher=slurm", *args, f"hydra.sweep.dir={sweep}"], root, sweep.parent, module, **env)


def _job_ids(sweep: Path) -> list[str]:
    folder = sweep / ".submitit"
    return sorted(p.parent.name for p in folder.glob("*/*_submitted.pkl"))  # one folder per job (array task)


def _sacct(job: str, wait_s: float = 60) -> list[str]:
    """SLURM's final states of every run of `job` (a requeued job has one record per run); the launcher returns
    on the job's result file, a moment before SLURM records the end."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(
            ["sacct", "-j", job, "-X", "-n", "-P", "--duplicates", "-o", "State"], capture_output=True, text=True
        )
        states = [s.split()[0] for s in out.stdout.split()] if out.returncode == 0 else []
        running = not states or states[-1] in {"RUNNING", "PENDING", "COMPLETING", "REQUEUED", "REQUEUE_FED"}
        if not running or time.monotonic() > deadline:
            return states
        time.sleep(1)


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def _logs(sweep: Path, job: str) -> str:
    folder = sweep / ".submitit" / job
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("*_log.*")))


def _metrics(run_dir: Path) -> pd.DataFrame:
    frames = [pd.read_csv(f) for f in sorted((run_dir / "csv").glob("version_*/metrics.csv"))]
    data = pd.concat(frames)
    columns = [c for c in data.columns if c.startswith("train/")]
    return data.dropna(subset=["train/loss"]).set_index("step")[columns]


def _assert_same_run(reference: Path, requeued: Path, steps: int) -> None:
    """Per-step training metrics, each step logged once (none redone), and final weights equal."""
    want, got = _metrics(reference), _metrics(requeued)
    assert list(got.index) == list(range(steps)) == list(want.index)
    assert (want["train/grad_norm"] > 0).all()
    pd.testing.assert_frame_equal(got, want, rtol=1e-6, atol=1e-9)
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    b = torch.load(requeued / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert a["global_step"] == b["global_step"] == steps
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def _saved_at_signal(log: str) -> list[int]:
    return [int(s) for s in re.findall(r"SIGUSR2: saved \S+last\.ckpt at step (\d+)", log)]


def test_readme_multirun_one_job_per_override_set_results_returned(root, tmp_path):
    sweep = tmp_path / "sweep"
    start = time.perf_counter()
    out = _wait(_slurm([*TINY, "trainer.max_steps=2", "grpo.k=2,3"], root, sweep), sweep)
    print(f"SLURM multirun (2 jobs): {time.perf_counter() - start:.1f} s")
    assert "SLURM request: partition debug, 1 node(s) x 1 task(s), 1 CPU(s)/task" in out, out[-4000:]
    jobs = _job_ids(sweep)
    assert len(jobs) == 2, out[-4000:]
    dirs = _job_dirs(sweep)
    assert [("grpo.k=2" in d.name, "grpo.k=3" in d.name) for d in dirs] == [(True, False), (False, True)]
    for d in dirs:
        assert (d / "checkpoints" / "last.ckpt").is_file()
    ks = []
    for job in jobs:
        assert _sacct(job) == ["COMPLETED"], job
        with (sweep / ".submitit" / job / f"{job}_0_result.pkl").open("rb") as f:
            outcome, ret = pickle.load(f)
        assert outcome == "success" and ret.status.name == "COMPLETED"
        ks.append(int(ret.cfg.grpo.k))
        assert "Epoch 0:" not in _logs(sweep, job), "Lightning's progress bar redraws in the batch job's log"
    assert sorted(ks) == [2, 3]
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    sbatch = script.read_text()
    assert "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}" in sbatch  # = cpus_per_task unless set
    assert "--cpus-per-task=1" in sbatch and "--mem=" in sbatch and "gpu" not in sbatch  # a CPU node: no GPU asked


def test_eval_multirun_one_job_per_benchmark_setting(root, tmp_path):
    """`python -m prresq.eval -m hydra/launcher=slurm ...`: eval has no `trainer` node; the launcher takes its
    resources from eval's own keys (`devices`, `device`), one SLURM job per override set, each writing its
    predictions (here the synthetic test split of two folds)."""
    sweep = tmp_path / "sweep"
    args = ["benchmark=synthetic_iqa", "benchmark.synthetic_iqa.synthetic.fold=0,1", "limit=4", "scoring.n=1"]
    out = _wait(_slurm([*args, "scoring.max_new_tokens=8", "device=cpu"], root, sweep, "prresq.eval"), sweep)
    assert "SLURM request: partition debug, 1 node(s) x 1 task(s)" in out, out[-4000:]
    jobs = _job_ids(sweep)
    assert len(jobs) == 2, out[-4000:]
    for job in jobs:
        assert _sacct(job) == ["COMPLETED"], job
    dirs = _job_dirs(sweep)
    assert [("fold=0" in d.name, "fold=1" in d.name) for d in dirs] == [(True, False), (False, True)]
    for d in dirs:
        predictions = pd.read_csv(d / "eval" / "predictions_synthetic_iqa.csv")
        assert len(predictions) == 4, d


def test_a_failing_job_ends_failed_and_is_named(root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _slurm([*TINY, "trainer.max_steps=2", "grpo.k=1"], root, sweep)
    out = _wait(proc, sweep)
    assert proc.returncode != 0, out[-4000:]
    (job,) = _job_ids(sweep)
    assert _sacct(job) == ["FAILED"]  # before: COMPLETED (Hydra returned the error inside a finished job)
    assert "1 of 1 SLURM job(s) failed" in out and f"job {job} (" in out and "grpo.k=1" in out
    assert "SLURM state FAILED" in out and "grpo.k=1: K < 2" in out, out[-4000:]


def test_a_job_at_its_time_limit_saves_at_the_signal_and_the_requeued_run_equals_an_uninterrupted_one(root, tmp_path):
    """1-minute limit, USR2 10 s before it (Slurm sends it 20-50 s into the job): the first run is paced (3 s a
    step, results unchanged) so the signal comes during training; the requeue resumes by itself."""
    steps = 16
    args = [*TINY, "grpo.k=2", f"trainer.max_steps={steps}", f"callbacks.checkpoint.every_n_train_steps={steps}"]
    pace = "+callbacks.pace={_target_: validation_probe.PaceFirstSlurmRun, seconds: 3}"
    sweep = tmp_path / "sweep"
    start = time.perf_counter()
    proc = _slurm([*args, pace], root, sweep, SLURM_TIMEOUT_MIN="1", SLURM_SIGNAL_DELAY_S="10")
    reference = _start([*args, pace, f"hydra.run.dir={tmp_path / 'reference'}"], root, tmp_path)
    ref_out = _wait(reference)
    assert reference.returncode == 0, ref_out[-4000:]
    out = _wait(proc, sweep)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, out[-4000:]
    (job,) = _job_ids(sweep)
    log = _logs(sweep, job)
    states = _sacct(job)
    saved = _saved_at_signal(log)
    print(f"time-limit requeue: {wall:.1f} s, SLURM states {states}, saved at the signal at steps {saved}")
    assert states[-1] == "COMPLETED" and len(states) >= 2 and set(states[:-1]) == {"REQUEUED"}, states
    assert saved and all(0 < s < steps for s in saved), log[-4000:]  # not 50 steps back: at the step in flight
    assert "requeuing through submitit" in log and "Requeued job" in log  # submitit's own requeue
    assert "requeued SLURM job" in log and "resuming from checkpoints/last.ckpt" in log  # automatic resume
    (run_dir,) = _job_dirs(sweep)
    _assert_same_run(tmp_path / "reference", run_dir, steps)


def test_a_2_task_ddp_job_preempted_resumes_where_it_stopped(root, tmp_path):
    """`scancel --signal=USR2` (what a pre-emption sends) while both ranks hold step 2: both save after it,
    rank 0 requeues, and the requeued job ends equal to an uninterrupted 2-process run."""
    steps = 6
    ddp = ["strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    args = [*TINY, *ddp, "grpo.k=2", f"trainer.max_steps={steps}", f"callbacks.checkpoint.every_n_train_steps={steps}"]
    marker, release = tmp_path / "held", tmp_path / "release"
    hold = f"+callbacks.hold={{_target_: validation_probe.HoldStep, step: 2, marker: '{marker}', release: '{release}'}}"
    sweep = tmp_path / "sweep"
    proc = _slurm([*args, hold], root, sweep)
    deadline = time.monotonic() + TIMEOUT_S
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, _wait(proc, sweep)[-4000:]
        time.sleep(0.5)
    (job,) = _job_ids(sweep)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    time.sleep(1)  # delivered to both tasks before they go on
    release.touch()
    reference = _start([*args, f"hydra.run.dir={tmp_path / 'reference'}"], root, tmp_path)
    ref_out = _wait(reference)
    assert reference.returncode == 0, ref_out[-4000:]
    out = _wait(proc, sweep)
    assert proc.returncode == 0, out[-4000:]
    log = _logs(sweep, job)
    assert _sacct(job) == ["REQUEUED", "COMPLETED"]
    assert _saved_at_signal(log) == [3, 3], log[-4000:]  # each rank: step 2 was in flight, the save follows it
    (run_dir,) = _job_dirs(sweep)
    _assert_same_run(tmp_path / "reference", run_dir, steps)


def test_a_request_no_node_can_hold_stops_before_submission(root, tmp_path):
    """Before: sbatch accepted it and the job stayed PENDING (Reason=PartitionConfig) while the launcher waited.
    (Memory, GPUs, nodes and time limits: tests/test_slurm_resources.py.)"""
    sweep = tmp_path / "sweep"
    proc = _slurm([*TINY, "trainer.max_steps=1", "grpo.k=2"], root, sweep, SLURM_CPUS_PER_TASK="64")
    out = _wait(proc, sweep)
    message = "hydra.launcher.cpus_per_task=64 x tasks_per_node=1: the largest node has 2 CPUs"
    assert proc.returncode != 0 and message in out, out[-3000:]
    assert _job_ids(sweep) == []  # nothing was submitted
