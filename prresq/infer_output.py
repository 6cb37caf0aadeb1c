"""The result file of `python -m prresq.infer`: append-only CSV or JSONL rows that an interrupted run resumes.

One process writes one result file: `ResultWriter.lock` takes an exclusive lock on `.<name>.lock`
beside it (`fcntl.flock`, released by the kernel when the process ends, also on kill -9); a second
`prresq.infer` on the same output stops with `OutputBusyError` naming the holder, before its model is
loaded. Taking the lock also creates the output folder, so a folder that cannot be written fails
there, before the model is loaded (`OutputFolderError`). `rewrite` (`retry_errors=true`) writes the
kept rows to a temporary file beside the output and renames it over the output: a kill in between
leaves the old file whole.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prresq.file_lock import LockHeld, hold_lock
from prresq.write_errors import OutputFolderError as OutputFolderError
from prresq.write_errors import ensure_writable_folder, write_failed

log = logging.getLogger("prresq.infer")


class OutputBusyError(RuntimeError):
    """Another process is writing the same result file."""


class ResultWriter:
    """Append-only CSV or JSONL of result rows, with resume support."""

    def __init__(self, path: str | Path, aspect_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        if not self.jsonl and self.path.suffix.lower() != ".csv":
            raise ValueError(f"output={path}: expected a .csv or .jsonl file")
        self.aspect_names = list(aspect_names)
        aspect_cols = [f"aspect_{a}" for a in self.aspect_names]
        self.columns = ["path", "status", "score", *aspect_cols, "n_parsed", "text"]

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    def lock(self) -> int:
        """Hold the result file's lock for this process (module docstring); returns its descriptor."""
        ensure_writable_folder(self.path.parent, f"output={self.path}")
        try:
            return hold_lock(self.lock_path)
        except LockHeld as held:
            raise OutputBusyError(
                f"output={self.path} is being written by another prresq.infer process ({held.holder}); two "
                "processes on one output file would both score every input. Wait for it (a rerun then scores only "
                "what is missing), or choose another output"
            ) from None

    def _repair_tail(self) -> None:
        """Drop a partial last line left by an interrupted write."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning(
                "%s: dropping a partial last row (%d bytes) left by an interrupted run", self.path, len(data) - cut
            )
            self.path.write_bytes(data[:cut])

    def read(self) -> list[dict[str, Any]]:
        """Rows already written (empty when the file does not exist)."""
        if not self.path.exists():
            return []
        self._repair_tail()
        if self.jsonl:
            rows = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s: ignoring a malformed row", self.path)
                    continue
                if isinstance(row, dict) and "path" in row:
                    rows.append(row)
            return rows
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is not None and list(reader.fieldnames) != self.columns:
                raise ValueError(
                    f"output={self.path} has columns {reader.fieldnames}, this run writes {self.columns} "
                    "(another prompt?): choose another output file"
                )
            return [row for row in reader if row.get("path")]

    def rewrite(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace the file's content with `rows` (as read back): a temporary file beside it, then a rename."""
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            self._write(tmp, [dict(r) for r in rows])
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _encode(self, row: Mapping[str, Any]) -> dict[str, Any]:
        def num(v: Any) -> Any:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        aspects = row.get("aspects") or {}
        if self.jsonl:
            out = {k: num(row.get(k)) for k in ("path", "status", "score")}
            if self.aspect_names:
                out["aspects"] = {a: num(aspects.get(a)) for a in self.aspect_names}
            out.update(n_parsed=row.get("n_parsed"), text=row.get("text", ""))
            return out
        out = {k: row.get(k) for k in ("path", "status", "score", "n_parsed")}
        out["text"] = str(row.get("text", "")).replace("\r", "\\r").replace("\n", "\\n")  # one line per row
        out.update({f"aspect_{a}": aspects.get(a) for a in self.aspect_names})
        return {k: "" if num(v) is None else v for k, v in out.items()}

    def append(self, rows: Iterable[Mapping[str, Any]], raw: bool = False) -> None:
        """Append rows and flush (`raw`: rows already in the file's format)."""
        self._write(self.path, [dict(r) if raw else self._encode(r) for r in rows])

    def _write(self, path: Path, rows: list[dict[str, Any]]) -> None:
        """Append encoded `rows` to `path` (a header first when the file is new), flushed and synced."""
        size = path.stat().st_size if path.exists() else 0
        try:
            self._append_rows(path, rows)
        except OSError as err:
            if (
                path == self.path and path.exists()
            ):  # keep only whole rows: a partial row would be repaired on the next read
                with open(path, "r+b") as f:
                    f.truncate(size)
            kept = f"the {len(self.read())} rows already in {self.path}" if self.path.exists() else "no rows"
            raise write_failed(path, err, f"{kept}; a rerun scores only the missing inputs") from None

    def _append_rows(self, path: Path, rows: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="", encoding="utf-8") as f:
            if self.jsonl:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            else:
                writer = csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n")
                if new:
                    writer.writeheader()
                writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
