"""Generic adapters: the anchors' label lists (`name mos [std]`, `ref name mos [std]`, `path, mos`)
and the project's JSONL records.

Benchmarks distributed only as such a text list (Liu13, Min19) are configs of the `text` adapter
(`conf/benchmark/liu13.yaml`, `conf/benchmark/min19.yaml`), not code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prresq.data.benchmarks.readers import _name_mos_labels, _require
from prresq.data.benchmarks.registry import Task, _Labels, _register, _Rows


@_register("text", task="iqa", mos_range=None)
def read_text(
    root: Path,
    split: str | None,
    labels: str = "mos.txt",
    media_dir: str | Sequence[str] = ("images", ""),
    mos_range: Sequence[float] | None = None,
    lower_is_better: bool = False,
    task: Task = "iqa",
) -> _Labels:
    """The anchors' label lists, in any of their line formats (`read_label_list`): `name mos [std]`,
    `ref name mos [std]` (the rated image is the second name; the reference is kept on the item) and
    `path, mos`. A header is a first line with no number; every other line is a data row, and a row
    that does not read (another format, a MOS that is not a number, a name twice with two MOS) follows
    `on_bad_sample`.

    `name` is relative to `media_dir` (first existing match). `mos_range` defaults to the observed
    min/max; `lower_is_better=True` marks a DMOS list, flipped to higher-is-better within the range.
    """
    out = _name_mos_labels(root, labels, media_dir, mos_range)
    out.task = task
    return out


def _gpt_value(conversations: Sequence[Mapping[str, Any]]) -> Any:
    for turn in reversed(conversations):
        if turn.get("from") in ("gpt", "assistant"):
            return turn.get("value")
    return None


@_register("jsonl", task="iqa", mos_range=(1.0, 5.0))
def read_jsonl(
    root: Path,
    split: str | None,
    labels: str | None = None,
    media_root: str | None = None,
    dataset_name: str | None = None,
    mos_range: Sequence[float] = (1.0, 5.0),
    task: Task = "iqa",
) -> _Labels:
    """The project's JSONL records: `{"id", "dataset_name", "image": [path], "conversations":
    [{"from": "human", ...}, {"from": "gpt", "value": mos}]}` (a `"video"` key is read like `"image"`).

    `root` is the .jsonl file, or a folder with `labels` naming it. Relative media paths resolve
    against `media_root` (default: the file's folder). MOS is the last gpt value (already mapped
    to [1, 5] by the data convention, hence the default `mos_range`); `dataset_name` keeps only
    that dataset's rows.
    """
    path = root / labels if labels else root
    if path.is_dir():
        raise FileNotFoundError(f"expected a .jsonl label file, got the folder {path}; set the `labels` option")
    _require(path, root)
    base = Path(media_root) if media_root else path.parent
    rows = _Rows(path)
    for i, ln in enumerate(path.read_text().splitlines()):
        if not ln.strip():
            continue
        rec = json.loads(ln)
        if dataset_name is not None and rec.get("dataset_name") != dataset_name:
            continue
        media = rec.get("image", rec.get("video"))
        if isinstance(media, list):
            media = media[0] if media else None
        value = _gpt_value(rec.get("conversations", []))
        if media is None or value is None:
            raise ValueError(f"{path}:{i + 1}: record needs an 'image' (or 'video') path and a gpt answer")
        media_path = Path(media) if Path(media).is_absolute() else base / media
        rows.add(str(rec.get("id", i)), media_path, str(value), None, i + 1)
    out = rows.labels(mos_range=(float(mos_range[0]), float(mos_range[1])))
    out.task = task
    return out
