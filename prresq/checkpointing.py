"""Step checkpoints that a resume continues exactly, written without leaving partial files behind.

`StepCheckpoint` is Lightning's `ModelCheckpoint` with two changes:

- **A checkpoint on a validation step is written after that validation**, not before it. Validation
  samples answers and so advances the global RNG; a checkpoint written before it holds the RNG state
  the uninterrupted run no longer has after validating, and Lightning skips the validation that was
  due at the restored step. Written after it, the checkpoint holds the state training continues from,
  and a kill during validation resumes from the previous checkpoint, which runs that validation again.

`LocalCheckpointIO` (the trainer's checkpoint writer and reader) writes each file to a temporary name
next to its target (`.<name>.tmp-<pid>`) and renames it; a failed write removes it, and
`StepCheckpoint.on_fit_start` removes any `.tmp-*` that a killed process left in the checkpoint
directory. Lightning's default writer stages the file in the system temp folder, where a kill leaves
it behind. A write that fails (a full disk) is an error naming the file and the checkpoints kept
(`prresq.write_errors`). It reads with `torch.load(weights_only=True)` only (no pickled code runs on resume).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from prresq.write_errors import WRITE_ERRORS, write_failed

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether the fit loop validates right after the current training batch (called in `on_train_batch_end`)."""
    if trainer._val_check_time_interval is not None:  # time-based validation: not predictable, never defer
        return False
    loop = trainer.fit_loop
    return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))


def remove_partial_files(directory: Path) -> list[Path]:
    """Delete the `.tmp-*` files an interrupted write left in `directory`; returns what was removed."""
    removed = []
    if directory.is_dir():
        for path in directory.iterdir():
            if path.is_file() and TMP_MARK in path.name and path.name.startswith("."):
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.warning("removed %d partial checkpoint file(s) of an interrupted write in %s", len(removed), directory)
    return removed


class StepCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose step checkpoints follow the validation of their step (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._after_validation = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if trainer.is_global_zero and self.dirpath:
            remove_partial_files(Path(self.dirpath))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        due = self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0
        if due and not self._should_skip_saving_checkpoint(trainer) and validation_follows(trainer):
            self._after_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._after_validation and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        self._after_validation = False
        super().on_validation_end(trainer, pl_module)


class LocalCheckpointIO(TorchCheckpointIO):
    """Checkpoint files written beside their target then renamed; read without unpickling code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except WRITE_ERRORS as err:
            tmp.unlink(missing_ok=True)
            kept = f"the previous {target.name}, unchanged" if target.exists() else f"no earlier {target.name}"
            others = sorted(p.name for p in target.parent.glob("*.ckpt") if p != target)
            kept += f"; other checkpoints: {', '.join(others)}" if others else ""
            raise write_failed(target, err, f"{kept} (the partial file was removed)") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return None

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        from prresq.checkpoint_loading import load_checkpoint_file

        return load_checkpoint_file(path, map_location=map_location or "cpu")


def resolve_ckpt(ckpt: str | None, run_dir: str | Path) -> str | None:
    """The checkpoint `ckpt_path` names: `last` is the newest `last*.ckpt` in `<run_dir>/checkpoints`
    (`last-vN.ckpt` of older layouts too; None when there is none yet), anything else is returned as given."""
    if ckpt == "last":
        folder = Path(run_dir) / "checkpoints"
        candidates = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if not candidates:
            log.warning("ckpt_path=last: no %s yet, starting from scratch", folder / "last.ckpt")
            return None
        if len(candidates) > 1:
            log.warning("ckpt_path=last: %s; resuming the newest, %s", [p.name for p in candidates], candidates[-1])
        return str(candidates[-1])
    return ckpt
