"""A failed write (a full disk, a file-size limit, a lost mount) as one error naming the file and what was kept.

torch reports a checkpoint that could not be written as `RuntimeError: [enforce fail at
inline_container.cc:...] ... file write failed`, Python as a bare `[Errno 28] No space left on
device`. The writers of checkpoints (`prresq.checkpointing.LocalCheckpointIO`), exports
(`prresq.export_dir.write_export`) and result rows (`prresq.infer_output.ResultWriter`) raise
`write_failed(path, err, kept)` instead: the file being written, the reason, the free space of its
disk, and what is still there.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

WRITE_ERRORS = (OSError, RuntimeError)  # RuntimeError: torch.save's stream writer (inline_container.cc)


class WriteFailedError(OSError):
    """A file could not be written; the message names it and what was kept."""


class OutputFolderError(OSError):
    """An output folder that cannot be created or written (checked before a model is loaded)."""


def ensure_writable_folder(folder: str | Path, key: str) -> Path:
    """Create `folder` and check that this process can write in it; `OutputFolderError` naming `key` otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputFolderError(
            f"{key}: cannot write in {folder} ({err.strerror or err}); choose a writable output folder "
            "(checked before the model is loaded)"
        ) from None
    return folder


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.is_dir():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(err)).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    return f"the write stopped part-way: {text}" if "inline_container" in str(err) else text


def write_failed(path: str | Path, err: BaseException, kept: str) -> WriteFailedError:
    """The error to raise (`from None`) for `err` while writing `path`; `kept` says what is still there."""
    path = Path(path)
    free = _free_bytes(path)
    number = err.errno if isinstance(err, OSError) and err.errno else None
    if number is None and free is not None and free < (1 << 20):
        number = errno.ENOSPC
    space = f"; {free / 1e6:.1f} MB free on its disk" if free is not None else ""
    return WriteFailedError(number or errno.EIO, f"writing {path} failed ({_reason(err)}{space}). Kept: {kept}")
