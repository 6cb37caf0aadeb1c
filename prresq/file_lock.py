"""An exclusive advisory lock on a file, for work that several processes may start at once (one does it).

    with file_lock(cache / ".lock-<key>"):
        if not done(): compute_and_save()

The kernel releases the lock when the holder exits, also when it is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
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
