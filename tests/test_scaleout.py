"""Scale-out on CPU: a 2-process DDP (gloo) training step, and a 2-job Hydra multirun through submitit.

Both run `python -m prresq.train` as a subprocess: Lightning's DDP launches rank 1 by re-running the
command line (the pytest process cannot be that launcher), and submitit starts each job in its own
process. The subprocesses import this module (``PYTHONPATH=tests``) for two pieces of test wiring:

* :class:`StepProbe`, a Lightning callback (``+callbacks.probe=...``) that saves, per rank and step,
  the rank, world size, K, the batch's image ids, the flattened gradient the optimiser steps with and
  the flattened policy weights before and after;
* :class:`RegisterTestRewards`, a Hydra callback (``+hydra.callbacks...``) whose import registers
  ``scaleout_chars``, a reward a random model can earn, so the DDP step has non-zero gradients.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import pytest
import torch
from conftest import compose_config
from hydra.experimental.callback import Callback as HydraCallback
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prresq.models import ensure_model_dir
from prresq.rewards import register_reward
from prresq.rewards.registry import REWARDS, RewardInputs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TESTS = Path(__file__).resolve().parent
PROBE = "+callbacks.probe={_target_: test_scaleout.StepProbe}"
SUBPROCESS_TIMEOUT_S = 540

# ---------------------------------------------------------------------------------------------- wiring


if "scaleout_chars" not in REWARDS:

    @register_reward("scaleout_chars")
    class CompletionChars:
        """Completion length in characters / 10: differs between the K samples of a random model."""

        def __call__(self, inputs: RewardInputs) -> torch.Tensor:
            k = inputs.num_samples
            return torch.tensor([len(t) / 10.0 for t in inputs.texts]).view(-1, k).to(inputs.scores.device)


class RegisterTestRewards(HydraCallback):
    """Instantiated by Hydra before the job runs: importing this module registered ``scaleout_chars``."""


def _flat_policy(module: L.LightningModule) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in module.policy.parameters()])


class StepProbe(L.Callback):
    """Save ``probe_rank{R}_step{S}.pt`` (rank, world size, K, batch ids, weights before/after) per step."""

    def __init__(self, out_dir: str | None = None) -> None:
        self.out_dir = out_dir
        self._before: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._before, self._grad = _flat_policy(pl_module), None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        # After backward (and DDP's all-reduce), before clipping and the update.
        self._grad = torch.cat(
            [
                (torch.zeros_like(p) if p.grad is None else p.grad).detach().reshape(-1).float().cpu()
                for p in pl_module.policy.parameters()
            ]
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        out = Path(self.out_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        loss = trainer.callback_metrics.get("train/loss")
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "k": pl_module.k,
            "ids": [str(i) for i in batch["ids"]],
            "loss": None if loss is None else float(loss),
            "before": self._before,
            "grad": self._grad,
            "after": _flat_policy(pl_module),
        }
        torch.save(record, out / f"probe_rank{trainer.global_rank}_step{trainer.global_step}.pt")


# ---------------------------------------------------------------------------------------------- utilities


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PRRESQ_ROOT of the subprocesses, with the tiny model and the synthetic set already in its cache.

    Written here once, in-process, so that the timed subprocesses (and concurrent sweep jobs) only read it.
    """
    root = tmp_path_factory.mktemp("scaleout")
    prepare_root(root)
    return root


def prepare_root(root: Path) -> Path:
    """Write `experiment=tiny_synthetic`'s tiny model and synthetic set under `root`/.cache; the model directory."""
    cfg = compose_config(
        "train",
        ["experiment=tiny_synthetic"],
        root_dir=root,
        cache_dir=root / ".cache",
        data_dir=root / ".cache" / "data",
    )
    model_dir = ensure_model_dir(cfg.model.name_or_path, OmegaConf.to_container(cfg.model.tiny, resolve=True))
    instantiate(cfg.data.synthetic, progress=False)
    return model_dir


def _train(args: list[str], root: Path, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -m prresq.train *args`` with one OpenMP thread and this directory importable."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PRRESQ_ROOT": str(root),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "HYDRA_FULL_ERROR": "1",
    }
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # Its own process group: on a time-out, DDP's rank 1 and submitit's jobs are stopped with it.
    with subprocess.Popen(
        [sys.executable, "-m", "prresq.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=os.setsid,
    ) as popen:
        try:
            stdout, stderr = popen.communicate(timeout=SUBPROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, stderr = popen.communicate()
            pytest.fail(f"python -m prresq.train timed out after {SUBPROCESS_TIMEOUT_S} s\n{stderr[-6000:]}")
    proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
    return proc, time.perf_counter() - start


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"exit code {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )


def _probes(out_dir: Path) -> list[dict[str, Any]]:
    return [torch.load(f, weights_only=False) for f in sorted(out_dir.glob("probe_rank*_step*.pt"))]


def _tensorboard_scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = []
    for f in sorted(tb_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            events += [(e.step, e.value) for e in acc.Scalars(tag)]
    return events


# ---------------------------------------------------------------------------------------------- tests

TINY = [
    "experiment=tiny_synthetic",
    "warmup=none",
    "eval_before_after=false",
    "grpo.max_new_tokens=6",
    "scoring.n=2",
    "data.batch_size=2",
    "trainer.max_time=null",
]


def ddp_step(root: Path, tmp_path: Path, extra: Sequence[str] = ()) -> tuple[list[dict[str, Any]], float]:
    """One 2-process gloo DDP training step of TINY (plus `extra`) in `tmp_path`/run: the ranks' probes, wall s."""
    run_dir = tmp_path / "run"
    cache = root / ".cache"
    proc, wall = _train(
        [
            *TINY,
            *extra,
            "strategy=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            "trainer.max_steps=1",
            "grpo.k=2",
            "trainer.limit_val_batches=0",
            "export_dir=null",
            f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={cache}",
            f"paths.data_dir={cache / 'data'}",
            "+reward.length={name: scaleout_chars, weight: 1.0}",
            "+hydra.callbacks.scaleout_rewards={_target_: test_scaleout.RegisterTestRewards}",
            PROBE,
        ],
        root,
        tmp_path,
    )
    _check(proc)
    assert "All distributed processes registered. Starting with 2 processes" in proc.stdout + proc.stderr
    return _probes(run_dir), wall


def test_ddp_two_processes_take_one_synchronised_step(root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    probes, wall = ddp_step(root, tmp_path)
    print(f"DDP subprocess: {wall:.1f} s")

    # Both ranks ran step 1 of the same 2-process job, each on its own shard of the global batch.
    assert sorted((p["rank"], p["world_size"], p["global_step"]) for p in probes) == [(0, 2, 1), (1, 2, 1)]
    rank0, rank1 = sorted(probes, key=lambda p: p["rank"])
    assert len(rank0["ids"]) == len(rank1["ids"]) == 2
    assert not set(rank0["ids"]) & set(rank1["ids"]), "the two ranks trained on the same images"
    for p in probes:
        assert p["loss"] is not None and torch.isfinite(torch.tensor(p["loss"]))

    # DDP all-reduced the gradients: each rank's local gradient comes from its own images and completions,
    # so both ranks stepping with the same non-zero gradient proves the synchronisation. (The weights alone
    # would not: Adam's first update is lr * sign(grad), equal for unsynchronised grads of the same sign.)
    assert rank0["grad"] is not None and rank1["grad"] is not None, "no optimiser step was taken"
    scale = rank0["grad"].abs().max().item()
    assert scale > 0, "the step had a zero gradient: it cannot show that DDP synchronised anything"
    gap = (rank0["grad"] - rank1["grad"]).abs().max().item()
    assert gap <= 1e-5 * scale, f"gradients differ between the ranks (max |rank0 - rank1| = {gap:g} of {scale:g})"
    assert torch.equal(rank0["before"], rank1["before"])
    moved = (rank0["after"] - rank0["before"]).abs().max().item()
    assert moved > 1e-5, f"the step left the policy unchanged (max |delta| = {moved:g})"
    assert torch.allclose(rank0["after"], rank1["after"], rtol=0, atol=1e-7), "DDP replicas diverged after one step"

    # Rank 0's loggers recorded the step; the checkpoint is at global step 1.
    metrics = pd.concat(pd.read_csv(f) for f in (run_dir / "csv").glob("version_*/metrics.csv"))
    loss_rows = metrics.dropna(subset=["train/loss"])
    assert list(loss_rows["step"]) == [0], "one optimisation step logs train/loss once (Lightning's step 0)"
    tb = _tensorboard_scalars(run_dir / "tb", "train/loss")
    assert [step for step, _ in tb] == [0]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 1
    assert (run_dir / "train_ddp_process_1.log").exists(), "rank 1 did not run under the same Hydra run dir"


def test_submitit_local_multirun_runs_both_jobs(root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc, wall = _train(
        [
            "-m",
            "hydra/launcher=submitit_local",
            *TINY,
            "trainer.fast_dev_run=true",
            "export_dir=null",
            "grpo.k=2,3",
            PROBE,
            f"hydra.sweep.dir={sweep}",
            "hydra.launcher.timeout_min=8",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=4",
        ],
        root,
        tmp_path,
    )
    print(f"submitit multirun subprocess: {wall:.1f} s")
    _check(proc)

    # One directory per job, named by its overrides (hydra.sweep.subdir = ${hydra.job.override_dirname}).
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2, [p.name for p in sweep.iterdir()]
    for job, k in zip(jobs, (2, 3)):
        parts = job.name.split(",")
        assert f"grpo.k={k}" in parts and "trainer.fast_dev_run=true" in [s.lower() for s in parts], job.name
        assert not any(s.startswith("experiment=") for s in parts), "experiment is an excluded key"
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert f"grpo.k={k}" in overrides
        assert OmegaConf.load(job / ".hydra" / "config.yaml").grpo.k == k
        # The job trained: one fast_dev_run step with its own K.
        probes = _probes(job)
        assert [(p["rank"], p["world_size"], p["global_step"], p["k"]) for p in probes] == [(0, 1, 1, k)], job.name

    # submitit: each job's result is ("success", JobReturn COMPLETED) and its log says so.
    results = sorted((sweep / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2, results
    done = []
    for path in results:
        with path.open("rb") as f:
            outcome, ret = pickle.load(f)
        assert outcome == "success", (path, ret)
        assert ret.status.name == "COMPLETED", (path, ret)
        done.append(int(ret.cfg.grpo.k))
        log = path.with_name(path.name.replace("_result.pkl", "_log.out")).read_text()
        assert (
            "Job completed successfully"
            in log + path.with_name(path.name.replace("_result.pkl", "_log.err")).read_text()
        )
    assert sorted(done) == [2, 3]
