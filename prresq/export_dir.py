"""An export folder holds one export: it is written beside its target and swapped in whole.

A LoRA adapter export written into a folder that held an earlier full export used to leave both
sets of files there, and eval / infer then loaded the old full model. `write_export(target, write)`
calls `write(tmp)` on an empty folder `.<name>.tmp-<pid>` next to `target`, then swaps it in:
the old folder is renamed away (`.<name>.old-<pid>`), the new one renamed to `target`, and the old
one deleted. A write that fails removes its temporary folder and leaves the old export as it was
(a full disk: `prresq.write_errors.WriteFailedError` naming the folder and what was kept).

`check_export_target(target, replace)` refuses a folder that already holds files when `replace` is
false (the `export_replace` setting of `prresq.train`, checked before training so no run is lost).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from prresq.write_errors import WRITE_ERRORS, write_failed


class ExportDirError(RuntimeError):
    """The export folder holds files and replacing it was not allowed."""


def _holds_files(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def check_export_target(target: str | Path, replace: bool, key: str = "export_dir") -> None:
    """Raise `ExportDirError` when `target` holds files (or is a file) and `replace` is false."""
    path = Path(target)
    if path.exists() and not path.is_dir():
        raise ExportDirError(f"{key}={path}: a file, not a folder; an export is a folder")
    if not replace and _holds_files(path):
        names = sorted(p.name for p in path.iterdir())[:6]
        raise ExportDirError(
            f"{key}={path} already holds an export ({', '.join(names)}); an export folder holds one export. "
            "Pass export_replace=true to replace it whole, or choose another folder"
        )


def write_export(target: str | Path, write: Callable[[Path], object], replace: bool = True) -> Path:
    """Write an export with `write(folder)` into a fresh folder beside `target`, then swap it in whole."""
    target = Path(target)
    check_export_target(target, replace)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
    except WRITE_ERRORS as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous export in {target}, unchanged" if _holds_files(target) else "no earlier export"
        raise write_failed(target, err, f"{kept} (the partial export was removed)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
