"""A benchmark's predictions as they are made, so that a killed `prresq.eval` resumes where it stopped.

`<output>/eval/progress/<benchmark>/` holds

- `settings.json`: what the predictions depend on (checkpoint, model, prompt, scoring, benchmark, flow);
  written when the benchmark starts. A rerun into the same output folder (`hydra.run.dir=...`) with
  other settings stops before the model loads, naming every difference (`SettingsMismatch`);
- `rank<r>.jsonl`: one line per scored work unit (`prresq.eval_ranks.work_units`), appended and flushed
  by the rank that scored it: `{"unit", "ids", "rows"}`, the rows of `predictions_<benchmark>.csv`.

A rerun with the same settings reads every `rank*.jsonl` (whatever the number of processes that wrote
them), scores only the units not there yet and writes the same files as an uninterrupted run. A last
line cut by a kill is ignored (its unit is scored again).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("prresq.eval")


class SettingsMismatch(ValueError):
    """A resume whose settings differ from those its predictions were made with."""


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted.key: leaf}."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for every leaf that differs (absent on one side: `<absent>`)."""
    a, b = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if json.dumps(x, sort_keys=True, default=_plain) != json.dumps(y, sort_keys=True, default=_plain):
            lines.append(f"{key}: {_short(x)} -> {_short(y)}")
    return lines


def _short(value: Any, limit: int = 120) -> str:
    text = "<absent>" if value == "<absent>" else json.dumps(value, default=_plain)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BenchmarkProgress:
    """The progress folder of one benchmark (see the module docstring)."""

    def __init__(self, eval_dir: Path, name: str, settings: Mapping[str, Any]) -> None:
        self.name = name
        self.folder = Path(eval_dir) / "progress" / name
        self.settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=_plain))

    @property
    def settings_file(self) -> Path:
        return self.folder / "settings.json"

    def start(self) -> None:
        """Write `settings.json`, or check it against this run's settings (`SettingsMismatch`)."""
        if self.settings_file.exists():
            old = json.loads(self.settings_file.read_text(encoding="utf-8"))
            diff = settings_differences(old, self.settings)
            if diff:
                raise SettingsMismatch(
                    f"benchmark {self.name}: {self.folder} holds predictions made with other settings, "
                    f"so they cannot be resumed ({len(diff)} difference(s), previous -> now): "
                    + "; ".join(diff)
                    + ". Evaluate into another folder (hydra.run.dir=...) or remove that one."
                )
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.settings_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.settings, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.settings_file)

    def done(self) -> dict[int, dict[str, Any]]:
        """Units already scored: {unit: {"ids": [...], "rows": [...]}} from every rank's file."""
        out: dict[int, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("rank*.jsonl")):
            lines = path.read_text(encoding="utf-8").split("\n")
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    if number == len(lines) or all(not rest.strip() for rest in lines[number:]):
                        log.warning("%s: last line cut short (a killed run); its unit is scored again", path)
                        continue
                    raise ValueError(f"{path} line {number}: not a JSON object; remove {self.folder}") from None
                out.setdefault(int(entry["unit"]), entry)
        return out

    def append(self, rank: int, unit: int, ids: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """Add one scored unit to this rank's file (one line, flushed to disk)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"unit": unit, "ids": list(ids), "rows": [dict(r) for r in rows]}, default=_plain)
        with open(self.folder / f"rank{rank}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def rows_of(frame: Any) -> list[dict[str, Any]]:
    """A predictions frame as JSON-ready rows (NaN kept as NaN)."""
    rows = []
    for row in frame.to_dict("records"):
        rows.append({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
    return rows
