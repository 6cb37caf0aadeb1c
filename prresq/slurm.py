"""SLURM resources that follow the trainer and the node, checked before anything is submitted.

`hydra/launcher=slurm` (the launcher `hydra_plugins.prresq_slurm.PrresqSlurmLauncher`) calls
`resolve_resources` before it submits a sweep. Each resource is a `hydra.launcher.*` key with an
environment variable (`conf/hydra/launcher/slurm.yaml`); `auto` means:

- `gpus_per_node`: `tasks_per_node` (one task per GPU) when the accelerator (`trainer.accelerator`; eval's
  `device`) uses GPUs (`gpu`, `cuda`, `cuda:N`, or `auto` on a partition whose nodes have GPUs), else none
  (no `--gpus-per-node` at all);
- `cpus_per_task`: the node's CPUs shared out: per GPU on a GPU job, per task on a CPU job;
- `mem_gb`: the node's memory in proportion to the CPUs the job takes;
- `OMP_NUM_THREADS` in the job: `cpus_per_task`, unless the submitting environment sets it.

The node is the smallest node of the partition (`sinfo`); the default partition when none is given.
A request no node of the partition can hold (CPUs, memory, GPUs, node count, time limit) is a
`SlurmRequestError` naming the key, what was asked and what the partition offers, instead of a job
that stays PENDING for ever. A cluster without accounting (`sacct`) is refused too: the launcher
reads job states from it and would wait for ever on a job that died without a result.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

AUTO = "auto"
GPU_ACCELERATORS = {"gpu", "cuda"}


class SlurmRequestError(ValueError):
    """A SLURM request that the cluster cannot run (or that cannot be made), found before submission."""


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[Node, ...]
    max_time_min: float  # math.inf when unlimited
    max_nodes: float


def _run(*cmd: str) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmRequestError(f"hydra/launcher=slurm: `{cmd[0]}` is not on PATH (is this a SLURM login node?)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SlurmRequestError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def parse_gpus(gres: str) -> int:
    """GPUs in an `sinfo %G` field (`gpu:4`, `gpu:a100:8(S:0-1)`, `(null)`)."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_minutes(text: str) -> float:
    """A SLURM time limit (`UNLIMITED`, `30`, `1:00:00`, `2-00:00:00`) in minutes."""
    text = text.strip()
    if text.upper() in {"UNLIMITED", "INFINITE", "NONE", ""}:
        return math.inf
    days = 0
    if "-" in text:
        day, text = text.split("-", 1)
        days = int(day)
    fields = [int(x) for x in text.split(":")]
    if len(fields) == 1:  # minutes (a bare number), or days-hours
        minutes = fields[0] * (60 if days else 1)
    else:
        fields = [0] * (3 - len(fields)) + fields if days == 0 else fields + [0] * (3 - len(fields))
        hours, mins, secs = fields
        minutes = hours * 60 + mins + secs / 60
    return days * 24 * 60 + minutes


def query_partition(name: str | None) -> Partition:
    """The partition `name` (the default one when None) as `sinfo` / `scontrol` describe it."""
    rows = [r.split("|") for r in _run("sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%P").splitlines() if r.strip()]
    default = next((r[4].rstrip("*") for r in rows if r[4].endswith("*")), None)
    wanted = name or default
    if wanted is None:
        raise SlurmRequestError("hydra.launcher.partition: not set (SLURM_PARTITION) and the cluster has no default")
    nodes = tuple(
        Node(r[0], int(r[1].rstrip("+")), int(r[2].rstrip("+")), parse_gpus(r[3]))
        for r in rows
        if r[4].rstrip("*") == wanted
    )
    if not nodes:
        known = sorted({r[4].rstrip("*") for r in rows})
        raise SlurmRequestError(f"hydra.launcher.partition={wanted}: no such partition (the cluster has {known})")
    info = dict(re.findall(r"(\w+)=(\S+)", _run("scontrol", "show", "partition", wanted, "-o")))
    max_nodes = info.get("MaxNodes", "UNLIMITED")
    return Partition(
        name=wanted,
        nodes=nodes,
        max_time_min=parse_minutes(info.get("MaxTime", "UNLIMITED")),
        max_nodes=math.inf if max_nodes.upper() == "UNLIMITED" else int(max_nodes),
    )


def check_accounting() -> None:
    """Refuse a cluster without accounting: submitit reads job states with `sacct`."""
    config = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", _run("scontrol", "show", "config"), flags=re.M))
    storage = config.get("AccountingStorageType", "")
    if storage in {"", "accounting_storage/none"}:
        raise SlurmRequestError(
            "hydra/launcher=slurm needs SLURM accounting (AccountingStorageType is "
            f"'{storage or 'unset'}'): the launcher reads job states with sacct, and without it waits for ever on a "
            "job that died without a result. Enable slurmdbd (see experiments/slurm/cluster.sh)"
        )


def _count(key: str, value: Any, env: str) -> int | str:
    if value is None or str(value).strip().lower() == AUTO:
        return AUTO
    try:
        number = int(str(value))
    except ValueError:
        raise SlurmRequestError(f"hydra.launcher.{key}={value!r} ({env}): a whole number or 'auto'") from None
    if number < 0:
        raise SlurmRequestError(f"hydra.launcher.{key}={value!r} ({env}): must be >= 0")
    return number


def resolve_resources(params: dict[str, Any], accelerator: str, partition: Partition) -> dict[str, Any]:
    """`params` (the launcher's submitit parameters) with every `auto` resource set (module docstring) and the
    request checked against `partition`; raises `SlurmRequestError` naming the key when no node can hold it."""
    out = dict(params)
    tasks = _count("tasks_per_node", out.get("tasks_per_node"), "trainer.devices")
    if tasks == AUTO or tasks == 0:
        raise SlurmRequestError(
            f"hydra.launcher.tasks_per_node={out.get('tasks_per_node')!r}: set trainer.devices (train) or "
            "devices (eval) to a number (one task per device)"
        )
    nodes = _count("nodes", out.get("nodes", 1), "trainer.num_nodes")
    node = min(partition.nodes, key=lambda n: (n.cpus, n.mem_mb, n.gpus))
    where = (
        f"partition {partition.name} (smallest node {node.name}: {node.cpus} CPUs, {node.mem_mb} MB, {node.gpus} GPUs)"
    )

    gpus = _count("gpus_per_node", out.get("gpus_per_node"), "SLURM_GPUS_PER_NODE")
    accelerator = str(accelerator).lower().split(":")[0]  # eval's device: cuda:N uses GPUs as cuda does
    if gpus == AUTO:
        uses_gpus = accelerator in GPU_ACCELERATORS or (accelerator == AUTO and node.gpus > 0)
        gpus = int(tasks) if uses_gpus else 0
    cpus = _count("cpus_per_task", out.get("cpus_per_task"), "SLURM_CPUS_PER_TASK")
    if cpus == AUTO:
        cpus = node.cpus * gpus // (node.gpus * int(tasks)) if gpus and node.gpus else node.cpus // int(tasks)
        cpus = max(1, cpus)
    mem = _count("mem_gb", out.get("mem_gb"), "SLURM_MEM_GB")
    if mem == AUTO:
        mem = max(1, int(node.mem_mb * min(1.0, int(cpus) * int(tasks) / node.cpus) // 1024))

    problems = []
    fits = [n for n in partition.nodes if n.cpus >= int(cpus) * int(tasks)]
    if not fits:
        most = max(n.cpus for n in partition.nodes)
        problems.append(f"cpus_per_task={cpus} x tasks_per_node={tasks}: the largest node has {most} CPUs")
    if not [n for n in partition.nodes if n.mem_mb >= int(mem) * 1024]:
        most = max(n.mem_mb for n in partition.nodes)
        problems.append(f"mem_gb={mem}: the largest node has {most} MB")
    if gpus and not [n for n in partition.nodes if n.gpus >= int(gpus)]:
        problems.append(
            f"gpus_per_node={gpus} (trainer.accelerator={accelerator}): the most GPUs on a node is "
            f"{max(n.gpus for n in partition.nodes)}"
        )
    if int(nodes) > min(partition.max_nodes, len(partition.nodes)):
        problems.append(f"nodes={nodes}: the partition has {len(partition.nodes)} (MaxNodes {partition.max_nodes})")
    timeout = float(out.get("timeout_min") or 0)
    if timeout > partition.max_time_min:
        problems.append(f"timeout_min={timeout:g}: the partition's MaxTime is {partition.max_time_min:g} min")
    if problems:
        raise SlurmRequestError(
            f"hydra/launcher=slurm: no node of {where} can run this job: "
            + "; ".join(f"hydra.launcher.{p}" for p in problems)
        )
    out.update(tasks_per_node=int(tasks), nodes=int(nodes), cpus_per_task=int(cpus), mem_gb=int(mem))
    out["gpus_per_node"] = int(gpus) if gpus else None
    out["partition"] = partition.name
    setup = list(out.get("setup") or [])
    out["setup"] = [f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{int(cpus)}}}", *setup]
    return out
