"""An exclusive advisory lock on a file, for work that several processes may start at once (one does it).

    with file_lock(cache / ".lock-<key>"):
        if not done(): compute_and_save()

`hold_lock` is the non-waiting form for what one process owns for its whole life (a run directory, an
output file): it takes the lock or raises `LockHeld` naming the holder it recorded. The kernel releases
a lock when the holder exits, also when it is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold `fcntl.flock(LOCK_EX)` on `path` (created with its folders) for the `with` block; waits for it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class LockHeld(RuntimeError):
    """Another process holds the lock; `holder` is what it wrote into the lock file ("pid N on HOST")."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


def hold_lock(path: str | Path) -> int:
    """Take `fcntl.flock(LOCK_EX)` on `path` without waiting and write "pid N on HOST" into it; returns the open
    descriptor (the lock lasts until it is closed or the process ends). Raises `LockHeld` when another holds it."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(path, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
    return fd
