"""Generic adapters: the anchors' label lists (`name mos [std]`, `ref name mos [std]`, `path, mos`)
and the project's JSONL records.

Benchmarks distributed only as such a text list (Liu13, Min19) are configs of the `text` adapter
(`conf/benchmark/liu13.yaml`, `conf/benchmark/min19.yaml`), not code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from prresq.data.benchmarks.readers import _name_mos_labels, _require
from prresq.data.benchmarks.registry import LabelFormatError, Rejected, Task, _Labels, _register, _Rows
from prresq.data.label_checks import answer_value, read_label_text


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
    against `media_root` (default: the file's folder), which media must stay inside. MOS is the
    last answer turn's value (already mapped to [1, 5] by the data convention, hence the default
    `mos_range`); `dataset_name` keeps only that dataset's rows (case-insensitive; a name that no
    record has is an error listing the names found). A line that is not a JSON record
    with a media path and an answer is a bad row naming the file and line.
    """
    path = root / labels if labels else root
    if path.is_dir():
        raise FileNotFoundError(f"expected a .jsonl label file, got the folder {path}; set the `labels` option")
    _require(path, root)
    base = Path(media_root) if media_root else path.parent
    rows = _Rows(path)
    names_found: set[str] = set()
    for i, ln in enumerate(read_label_text(path, LabelFormatError).split("\n")):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            names_found.add(str(rec.get("dataset_name")))
            if dataset_name is not None and str(rec.get("dataset_name")).lower() != dataset_name.lower():
                continue
            media = rec.get("image", rec.get("video"))
            if isinstance(media, list):
                media = media[0] if media else None
            value = answer_value(rec.get("conversations", []))
            if not isinstance(media, str) or not media or value is None:
                raise ValueError("record needs an 'image' (or 'video') path and a gpt answer")
        except json.JSONDecodeError as err:
            rows.bad.append(
                Rejected(f"line {i + 1}", Path(""), math.nan, f"{path} row {i + 1}: malformed JSON ({err.msg})")
            )
            continue
        except ValueError as err:
            rows.bad.append(Rejected(f"line {i + 1}", Path(""), math.nan, f"{path} row {i + 1}: {err}"))
            continue
        rows.add(str(rec.get("id", i)), base / media, str(value), None, i + 1)
    if dataset_name is not None and not rows.items and not rows.bad:
        raise LabelFormatError(
            f"{path}: no record has dataset_name {dataset_name!r} (case-insensitive); found: {sorted(names_found)}"
        )
    out = rows.labels(mos_range=(float(mos_range[0]), float(mos_range[1])))
    out.task = task
    out.media_root = base
    return out
