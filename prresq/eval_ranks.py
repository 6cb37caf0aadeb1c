"""Evaluation on several processes: the ranks, the work units they share, and one error for all ranks.

`prresq.eval` started by torchrun (or any launcher that sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) runs one process per device:

    torchrun --nproc_per_node=8 -m prresq.eval hydra.run.dir=outputs/eval/kadid 'benchmark=[kadid10k]'

- A benchmark's items, in file order, are cut into **work units** of `scoring.batch_size` consecutive
  items (`work_units`); each unit is one scoring batch. Units are dealt to the ranks round-robin.
- Sampled answer j of item `id` draws from its own generator, seeded by a hash of (seed, id, j)
  (`prresq.row_sampling`): an item's answers depend on the item only, never on the rank, the number of
  ranks, the batch size, the other items of its batch or what was scored before, so 1, 2 or 8 processes,
  another `scoring.batch_size` and a resumed run write the same predictions.
- Every rank scores one unit per step, then the ranks agree (`Ranks.agree`): if one rank failed (an
  unreadable file under `on_bad_sample=raise`, a label file it could not read), every rank stops with
  the same message naming the rank and the cause, so no rank waits at a collective for a rank that
  has left.
- Rank 0 gathers the predictions (`Ranks.gather`), writes the files and computes the metrics once.

Under SLURM (`hydra/launcher=slurm`, one task per device: `tasks_per_node = devices`), a job of several tasks
sets SLURM_NTASKS / SLURM_PROCID / SLURM_LOCALID, not torchrun's variables: when WORLD_SIZE is absent, the
ranks are read from those (`rank_env`), and MASTER_ADDR / MASTER_PORT default to the job's first node and a
port derived from the job id (Lightning's `SLURMEnvironment` rule, the one `prresq.train` uses there). A job
named `bash` or `interactive` (an interactive allocation) is not read as SLURM ranks, as in Lightning.

With one process (no WORLD_SIZE, no SLURM tasks) nothing is initialised and errors keep their own type.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


class ShardFailure(RuntimeError):
    """A rank failed; raised on every rank with the same message."""


def work_units(n_items: int, size: int) -> list[range]:
    """Items 0..n-1 cut into consecutive units of `size` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"scoring.batch_size={size}: expected a positive number of items per batch")
    return [range(start, min(start + size, n_items)) for start in range(0, n_items, size)]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None


SLURM_INTERACTIVE_NAMES = ("bash", "interactive")


def slurm_tasks() -> bool:
    """True in a SLURM task of a job with several tasks that torchrun did not start (no WORLD_SIZE)."""
    return (
        not os.environ.get("WORLD_SIZE")
        and _env_int("SLURM_NTASKS", 1) > 1
        and os.environ.get("SLURM_JOB_NAME") not in SLURM_INTERACTIVE_NAMES
    )


def rank_env() -> tuple[int, int, int]:
    """(world size, rank, local rank) of this process: torchrun's WORLD_SIZE / RANK / LOCAL_RANK, else SLURM's
    SLURM_NTASKS / SLURM_PROCID / SLURM_LOCALID in a job of several tasks (`slurm_tasks`), else one process.

    Under SLURM, MASTER_ADDR and MASTER_PORT are set (when unset) for the process group: the first node of
    SLURM_JOB_NODELIST and 15000 + the job id's last 4 digits, as Lightning's `SLURMEnvironment` sets them."""
    if slurm_tasks():
        world, rank = _env_int("SLURM_NTASKS", 1), _env_int("SLURM_PROCID", -1)
        if rank < 0:
            raise ValueError(f"SLURM_NTASKS={world} without SLURM_PROCID: start the tasks with srun (one per device)")
        from lightning.fabric.plugins.environments import SLURMEnvironment

        nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "127.0.0.1"
        os.environ.setdefault("MASTER_ADDR", SLURMEnvironment.resolve_root_node_address(nodes))
        job = os.environ.get("SLURM_JOB_ID", "")
        os.environ.setdefault("MASTER_PORT", str(15000 + int(job[-4:])) if job[-4:].isdigit() else "12910")
        return world, rank, _env_int("SLURM_LOCALID", rank)
    world, rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
    if world > 1 and not os.environ.get("RANK"):
        raise ValueError(
            f"WORLD_SIZE={world} without RANK: start the processes with torchrun (or devices={world}), "
            "which sets both, or unset WORLD_SIZE for one process"
        )
    return world, rank, _env_int("LOCAL_RANK", rank)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the evaluation processes."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls, timeout_s: float = 1800.0) -> Ranks:
        """Read the ranks (`rank_env`: torchrun's variables, or SLURM's); with several processes, join (or reuse)
        the process group: NCCL on GPUs, gloo on CPUs. `timeout_s` bounds a collective whose peer died without
        a word."""
        world, rank, local = rank_env()
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"WORLD_SIZE={world}, RANK={rank}: expected 0 <= RANK < WORLD_SIZE")
        ranks = cls(world, rank, local)
        if world > 1 and not dist.is_initialized():
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(local % torch.cuda.device_count())
            dist.init_process_group(
                "nccl" if cuda else "gloo",
                rank=rank,
                world_size=world,
                timeout=datetime.timedelta(seconds=timeout_s),
            )
        return ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """The device of this rank: `cuda:LOCAL_RANK` when `device=auto` picks CUDA with several processes."""
        if self.world > 1 and requested == "auto" and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested

    def agree(self, error: BaseException | None, what: str) -> None:
        """Every rank calls this at the same point; if any rank passes an error, every rank raises.

        One process: the error itself is raised. Several: `ShardFailure` with the first failed rank's
        message (and how many others failed), the same text on every rank."""
        if self.world == 1:
            if error is not None:
                raise error
            return
        message = None if error is None else f"{type(error).__name__}: {error}"
        messages: list[Any] = [None] * self.world
        dist.all_gather_object(messages, message)
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        if not failed:
            return
        rank, first = failed[0]
        others = f" (and on {len(failed) - 1} other rank(s))" if len(failed) > 1 else ""
        raise ShardFailure(f"{what} failed on rank {rank} of {self.world}{others}: {first}") from error

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's `value`, in rank order, on rank 0 (None on the other ranks)."""
        if self.world == 1:
            return [value]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(value, out, dst=0)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if self.world == 1:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def run_on_main(self, fn: Any, what: str) -> Any:
        """`fn()` on rank 0, its result (or its error, raised on every rank) broadcast to all ranks."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - shared with the other ranks, then raised
                error = exc
        if self.world == 1:
            if error is not None:
                raise error
            return result
        payload = self.broadcast((result, None if error is None else f"{type(error).__name__}: {error}"))
        if payload[1] is not None:
            raise ShardFailure(f"{what} failed on rank 0 of {self.world}: {payload[1]}") from error
        return payload[0]


def close_process_group() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_processes(devices: int, module: str) -> bool:
    """`devices=N` (N > 1) in a process that no launcher started: run this Hydra job again as N processes
    (`torch.distributed.run --standalone`, the job's overrides and its output folder), wait for them, and
    return True (the caller then stops; a failed launch raises `ShardFailure`). Returns False when this
    process is one of the N (WORLD_SIZE set, or a task of a SLURM job of several tasks) or one device was
    asked for."""
    if devices <= 1 or os.environ.get("WORLD_SIZE") or slurm_tasks():
        return False
    import subprocess
    import sys

    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith("hydra.run.dir=")]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={devices}",
        "-m",
        module,
        *overrides,
        f"hydra.run.dir={hc.runtime.output_dir}",
    ]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise ShardFailure(f"{module} on devices={devices} processes failed (exit status {done.returncode}); see above")
    return True
