"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, with three changes.

- Before submitting, every `auto` resource is set from the trainer and the partition, and a request no
  node can hold is an error (`prresq.slurm.resolve_resources`); a cluster without accounting is refused.
- A job whose training fails ends FAILED in SLURM (the exception is raised in the job, where Hydra would
  have returned it inside a COMPLETED job), and the launching process stops with every failed job named
  (id, overrides, SLURM state, the error's last line, the log file) after all jobs have ended.
- A requeued job resumes by itself (`prresq.preemption`), so submitit's requeue continues where it stopped.

Hydra only instantiates launchers from the `hydra_plugins` package, hence this module; the logic is in
`prresq.slurm`, imported when a sweep is launched (plugin discovery stays fast).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


ACTIVE_STATES = {"RUNNING", "COMPLETING", "PENDING", "REQUEUED", "UNKNOWN"}


def _final_state(job: Any, wait_s: float = 30.0) -> str:
    """The job's SLURM state once it has ended (the result file is written a moment before)."""
    deadline = time.monotonic() + wait_s
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = str(job.get_info(mode="force").get("State", "UNKNOWN")).split()[0]
        if state not in ACTIVE_STATES:
            break
        time.sleep(1)
    return state


def _error_line(err: BaseException) -> str:
    """The exception line of a job's error (submitit wraps the job's traceback between dashed lines)."""
    parts = str(err).split("----------------------")
    text = parts[1] if len(parts) >= 3 else str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


class SlurmJobsFailed(RuntimeError):
    """Some jobs of a SLURM sweep failed; the message names each one."""


class PrresqSlurmLauncher(SlurmLauncher):
    """See the module docstring; `accelerator` is `trainer.accelerator` (decides whether GPUs are requested)."""

    def __init__(self, accelerator: str = "auto", **params: Any) -> None:
        super().__init__(**params)
        self.accelerator = str(accelerator)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED:
            raise ret._return_value  # submitit records it and the job ends FAILED, not COMPLETED
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from prresq.slurm import check_accounting, query_partition, resolve_resources

        assert self.config is not None and job_overrides
        check_accounting()
        params = resolve_resources(self.params, self.accelerator, query_partition(self.params.get("partition")))
        log.info(
            "SLURM request: partition %s, %d node(s) x %d task(s), %d CPU(s)/task, %s GB, GPUs/node %s",
            params["partition"],
            params["nodes"],
            params["tasks_per_node"],
            params["cpus_per_task"],
            params["mem_gb"],
            params["gpus_per_node"] or 0,
        )
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params["submitit_folder"],
            slurm_max_num_timeout=params["max_num_timeout"],
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items() if k not in init_keys}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))

        returns, failed = [], []
        for job, overrides in zip(jobs, job_overrides):
            try:
                returns.append(job.results()[0])
            except Exception as err:  # noqa: BLE001 (submitit's FailedJobError / UncompletedJobError)
                failed.append(
                    f"job {job.job_id} ({' '.join(filter_overrides(overrides))}): SLURM state {_final_state(job)}: "
                    f"{_error_line(err)} (log: {job.paths.stderr})"
                )
        if failed:
            raise SlurmJobsFailed(f"{len(failed)} of {len(jobs)} SLURM job(s) failed:\n  " + "\n  ".join(failed))
        return returns
