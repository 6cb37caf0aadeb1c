"""Stop at a scheduler's signal without losing a step, and resume a requeued job by itself.

`SignalCheckpoint` (callback `callbacks.signal_checkpoint`) handles SIGTERM, SIGUSR1 and SIGUSR2
while the trainer trains. The handler only records the signal; at the end of the step in flight
(after its validation, when one follows, for the same reason as `prresq.checkpointing.StepCheckpoint`)
every rank agrees on it (one all-reduce per step with several processes), the trainer writes
`<output_dir>/checkpoints/last.ckpt` at that step, and then:

- under SLURM, rank 0 requeues the job: through submitit's own handler when the job came from
  `hydra/launcher=slurm` (which records the requeue and the time-outs left), else with
  `scontrol requeue $SLURM_JOB_ID`; every rank exits with status 128 + signal number;
- elsewhere the process exits with status 128 + signal number (never 0).

`ckpt_path=last` then resumes from exactly that step. A requeued SLURM job (`SLURM_RESTART_COUNT` > 0)
resumes by itself from its own `last.ckpt` (`resume_ckpt_path`, called by `prresq.train.run`), also when the
command named another checkpoint to start from.
Outside `fit`, these signals keep their previous handlers (a signal before the first step loses nothing).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from prresq.checkpointing import validation_follows

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def requeued_slurm_job() -> bool:
    """Whether this process belongs to a SLURM job that was requeued (SLURM sets SLURM_RESTART_COUNT)."""
    return bool(os.environ.get("SLURM_JOB_ID")) and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def resume_ckpt_path(ckpt_path: Any, out_dir: str | Path) -> Any:
    """The checkpoint a run starts from: `ckpt_path` as given, except in a requeued SLURM job, which resumes
    from its own `<out_dir>/checkpoints/last.ckpt` (`last`) when there is one, or when `ckpt_path` is unset
    (a job requeued before its first save starts again from scratch in the same folder)."""
    if not requeued_slurm_job():
        return ckpt_path
    own = any((Path(out_dir) / "checkpoints").glob("last*.ckpt"))
    if ckpt_path is None or (own and ckpt_path != "last"):
        log.info("requeued SLURM job %s: resuming from checkpoints/last.ckpt", os.environ.get("SLURM_JOB_ID"))
        return "last"
    return ckpt_path


class TrainingInterrupted(SystemExit):
    """Raised on every rank after the checkpoint at a signal; the exit status is 128 + the signal number."""


def _submitit_handler(handlers: list[Any]) -> Any | None:
    """submitit's `SignalHandler` among the handlers installed before ours (None outside submitit); Lightning's
    `_HandlersCompose` wrappers are looked into."""
    for handler in handlers:
        inner = getattr(handler, "signal_handlers", None)
        if isinstance(inner, list):
            found = _submitit_handler(inner)
            if found is not None:
                return found
        owner = getattr(handler, "__self__", None)
        if owner is not None and type(owner).__module__.startswith("submitit"):
            return owner
    return None


class SignalCheckpoint(Callback):
    """Save `last.ckpt` after the step in flight when SIGTERM/SIGUSR1/SIGUSR2 arrives, then requeue or exit.

    `dirpath` is the checkpoint folder (`last.ckpt` is what `ckpt_path=last` resumes); `requeue`
    (default true) requeues a SLURM job after the save.
    """

    def __init__(self, dirpath: str | Path, requeue: bool = True) -> None:
        self.dirpath = Path(dirpath)
        self.requeue = requeue
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._deferred = False
        self._exit: TrainingInterrupted | None = None

    # ------------------------------------------------------------------ handlers
    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            log.warning("received %s: saving a checkpoint after the step in flight", signal.Signals(signum).name)

    def _install(self) -> None:
        if self._previous:
            return
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received, self._exit = None, None
        self._install()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._exit is not None:  # saved at the previous step's end; its metrics are logged by now
            self._leave(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.received is not None:  # during the last step: the run is complete, it goes on to eval and export
            log.warning("%s arrived during the last step: training is complete", signal.Signals(self.received).name)
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def state_dict(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ the save
    def _agreed(self, trainer: L.Trainer) -> bool:
        local = self.received is not None
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(local, all=False))
        return local

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._exit is not None or not self._agreed(trainer):
            return
        if validation_follows(trainer):
            self._deferred = True  # the checkpoint holds the state after this step's validation
            return
        self._stop(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._deferred and not trainer.sanity_checking:
            self._deferred = False
            self._stop(trainer)

    def _stop(self, trainer: L.Trainer) -> None:
        signum = int(self.received or signal.SIGTERM)
        path = self.dirpath / "last.ckpt"
        for callback in trainer.checkpoint_callbacks:  # theirs from now on: a resume overwrites it, no last-v1.ckpt
            if isinstance(callback, ModelCheckpoint) and callback.dirpath and Path(callback.dirpath) == self.dirpath:
                callback.last_model_path = str(path)
        trainer.save_checkpoint(path)
        log.warning("%s: saved %s at step %d", signal.Signals(signum).name, path, trainer.global_step)
        self._exit = TrainingInterrupted(128 + signum)

    def _leave(self, trainer: L.Trainer) -> None:
        """Requeue (SLURM) and exit, once the saved step's metrics are logged (at the next batch's start)."""
        assert self._exit is not None
        signum = int(self._exit.code) - 128  # type: ignore[arg-type]
        previous = [*self._previous.values(), *getattr(trainer._signal_connector, "_original_handlers", {}).values()]
        self._restore()
        where = f"{signal.Signals(signum).name} at step {trainer.global_step}"
        action = self._requeue(signum, previous, where) if self.requeue and os.environ.get("SLURM_JOB_ID") else None
        if action is None:
            action = f"exiting; resume with ckpt_path=last hydra.run.dir={self.dirpath.parent}"
        log.warning("%s: %s", where, action)
        raise self._exit

    def _requeue(self, signum: int, previous: list[Any], where: str) -> str | None:
        """Requeue this SLURM job from rank 0; returns what was done (None: nothing, exit as elsewhere)."""
        if int(os.environ.get("SLURM_PROCID", "0") or 0) != 0:
            return "rank 0 requeues the job"
        submitit = _submitit_handler(previous)
        if submitit is not None:
            # submitit dumps the job for the rerun, requeues it and exits (or raises when it may not requeue)
            log.warning("%s: requeuing through submitit", where)
            requeue: Callable[..., None] = submitit.checkpoint_and_try_requeue
            requeue(signum, None)  # exits here once requeued
            return "submitit did not requeue"
        job = os.environ["SLURM_JOB_ID"]
        try:
            subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", None) or err
            log.error("scontrol requeue %s failed: %s", job, detail)
            return None
        return f"requeued SLURM job {job}"
