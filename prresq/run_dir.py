"""One run directory, one run: a fresh training never mixes its files with another run's.

`claim_run_dir(out_dir, resume, overwrite)` is called by `prresq.train.run` on the global rank 0
process, and earlier by the Hydra callback `RunDirGuard.on_run_start` (before Hydra writes the
job's `.hydra/` files into the directory, so a refused run does not replace the old run's config):

- It takes an exclusive lock on `<out_dir>/.run.lock` (`fcntl.flock`, released by the kernel when
  the process ends, also on kill -9). A second training into the same directory while the first
  runs stops with `RunDirError` naming the holder's pid.
- A directory that already holds a run's outputs (`checkpoints/`, `tb/`, `csv/`, `export/`,
  `eval/`, `heldout_metrics.*`, `resume_changes.yaml`, non-empty) is refused for a fresh run, which would otherwise write
  `last-v1.ckpt` beside the old `last.ckpt` and a second event file into `tb/`. It is allowed when
  resuming (`ckpt_path=last`, or a checkpoint inside this directory's `checkpoints/`), and with
  `overwrite_run_dir=true`, which deletes those outputs first (and nothing else).

Hydra multirun gives every job its own fresh subdirectory, and `python -m prresq.train` without
`hydra.run.dir` a new dated one, so neither is affected. A job's subdirectory is named by its overrides
through `run_dir_name` (the resolver `${prresq.run_dir_name:...}` of `conf/hydra/default.yaml`): a `/` in
a value is written `%2F` (never a nested folder), and a name longer than `SAFE_NAME_BYTES` keeps its
start and ends with a hash of the whole override string, which the job's `.hydra/overrides.yaml` and
`.hydra/hydra.yaml` (`hydra.job.override_dirname`) hold in full.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from prresq.file_lock import LockHeld, hold_lock

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
SAFE_NAME_BYTES = 240  # file systems stop at 255 bytes per name; a little room for suffixes other tools add
HASH_CHARS = 12
RUN_OUTPUTS = (
    "checkpoints",
    "tb",
    "csv",
    "export",
    "eval",
    "heldout_metrics.json",
    "heldout_metrics.md",
    "resume_changes.yaml",  # prresq.resume_config: the changes a resume applied (run_config.yaml is rewritten)
)


def run_dir_name(override_dirname: str, max_bytes: int = SAFE_NAME_BYTES) -> str:
    """A folder name for a job's override string: `/` as `%2F`; past `max_bytes`, its start + `-` + a stable hash."""
    name = override_dirname.replace("%", "%25").replace("/", "%2F")
    if len(name.encode()) <= max_bytes:
        return name
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:HASH_CHARS]
    head = name.encode()[: max_bytes - HASH_CHARS - 1].decode(errors="ignore")
    return f"{head}-{digest}"


def register_resolvers() -> None:
    """`${prresq.run_dir_name:<overrides>}` for Hydra's sweep subdirectory (conf/hydra/default.yaml)."""
    OmegaConf.register_new_resolver("prresq.run_dir_name", lambda s: run_dir_name(str(s)), replace=True)


class RunDirError(RuntimeError):
    """The run directory holds another run, or another training is running in it."""


@dataclass
class RunDirClaim:
    """The lock of one run directory, held until `release` or the end of the process."""

    out_dir: Path
    fd: int

    def release(self) -> None:
        if _HELD.get(self.out_dir) is self:
            del _HELD[self.out_dir]
            self._unlock()

    def _unlock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


_HELD: dict[Path, RunDirClaim] = {}


def is_global_rank_zero() -> bool:
    """Whether this process is global rank 0 (distributed launchers set RANK / LOCAL_RANK / SLURM_PROCID)."""
    return all(int(os.environ.get(key, "0") or 0) == 0 for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def run_outputs(out_dir: Path) -> list[Path]:
    """The outputs of a previous run present in `out_dir` (empty folders do not count)."""
    found = []
    for name in RUN_OUTPUTS:
        path = out_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(path)
    return found


def is_resume(ckpt_path: Any, out_dir: Path) -> bool:
    """`ckpt_path=last`, or a checkpoint file inside `<out_dir>/checkpoints/`."""
    if ckpt_path is None:
        return False
    if str(ckpt_path) == "last":
        return True
    try:
        return Path(ckpt_path).resolve().is_relative_to((out_dir / "checkpoints").resolve())
    except (OSError, ValueError):
        return False


def _lock(out_dir: Path) -> RunDirClaim:
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = hold_lock(out_dir / LOCK_NAME)
    except LockHeld as held:
        raise RunDirError(
            f"{out_dir}: another training is running in this directory ({held.holder}); one run directory holds "
            "one run. Wait for it, or pick another hydra.run.dir"
        ) from None
    return RunDirClaim(out_dir, fd)


def claim_run_dir(out_dir: str | Path, resume: bool, overwrite: bool) -> RunDirClaim:
    """Lock `out_dir` for this process and check it may take this run (module docstring); idempotent."""
    out_dir = Path(out_dir).resolve()
    if out_dir in _HELD:
        return _HELD[out_dir]
    claim = _lock(out_dir)
    previous = run_outputs(out_dir)
    if previous and not resume:
        if not overwrite:
            claim._unlock()
            names = ", ".join(p.name for p in previous)
            raise RunDirError(
                f"{out_dir} already holds a run ({names}). A fresh run would mix its checkpoints and logs with "
                "it. Resume it with ckpt_path=last, pass overwrite_run_dir=true to delete those outputs and "
                "start again, or choose another hydra.run.dir"
            )
        for path in previous:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        log.warning("overwrite_run_dir=true: deleted %s", ", ".join(str(p) for p in previous))
    _HELD[out_dir] = claim
    return claim


class RunDirGuard(Callback):
    """Hydra callback: claims `hydra.run.dir` for `prresq.train` before Hydra writes into it (single runs).

    A refusal exits (status 1, the reason on stderr) before the job's `.hydra/` files replace the old run's.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "overwrite_run_dir" not in config or not is_global_rank_zero():
            return  # not a training config (eval, infer), or a DDP worker of a rank-0 process that holds it
        try:
            out_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        except Exception:  # noqa: BLE001 (an unresolvable dir: prresq.train.run claims the real one)
            return
        if not out_dir.is_dir():
            return  # a new directory holds nothing to protect; prresq.train.run locks it
        try:
            from prresq.preemption import resume_ckpt_path

            resume = is_resume(resume_ckpt_path(config.get("ckpt_path"), out_dir), out_dir)
            claim_run_dir(out_dir, resume, bool(config.overwrite_run_dir))
        except RunDirError as err:  # Hydra turns a callback's exception into a warning and runs the job anyway
            raise SystemExit(f"Error: {err}") from None
