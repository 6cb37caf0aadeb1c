"""Load a benchmark by adapter name or from a `conf/benchmark/*.yaml` node: checks options and
splits, applies `on_bad_sample`, the MOS range and direction.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prresq.data.benchmarks.registry import (
    ALL_SPLITS,
    BENCHMARKS,
    MAX_LISTED_MISSING,
    Benchmark,
    BenchmarkItem,
    LabelFormatError,
    MissingMediaError,
    Rejected,
    log,
)
from prresq.data.benchmarks.splits import filter_by_split_list
from prresq.data.label_checks import category, find_duplicates, leaves_root

# ----------------------------------------------------------------------------- loading


def load_benchmark(
    name: str,
    root: str | Path,
    split: str | None = None,
    *,
    adapter: str | None = None,
    on_bad_sample: str = "raise",
    skip_missing: bool = False,
    check_media: bool = True,
    limit: int | None = None,
    allow_media_outside_root: bool = False,
    split_lists: Mapping[str, str] | None = None,
    **options: Any,
) -> Benchmark:
    """Load benchmark `name` from `root` with its registered adapter (or `adapter`, a BENCHMARKS key).

    `split`: None uses the adapter's default (all items for most). `options` go to the adapter
    (see `BENCHMARKS[key].options()` and its docstring). Bad rows (media missing when
    `check_media`, MOS not a number or outside the adapter's fixed range) raise, naming the label
    file and row, unless `on_bad_sample="skip"` (`skip_missing=True` is the older spelling): then
    they are dropped, logged and kept in `Benchmark.rejected`. `limit` keeps the first N items.

    Rows that repeat an id with the same MOS and media are merged into the first (counted in
    `Benchmark.merged_duplicates`, logged); rows that repeat an id with a different MOS or media stop
    with every row named, whatever `on_bad_sample`. A row whose media path is absolute or climbs out
    (`..`) of the dataset root is a bad row unless `allow_media_outside_root=True`.

    `split_lists` ({split: file}, relative to `root` unless absolute; any adapter): the user's own split,
    one label list per split in the anchors' formats (`read_label_list`); `split` then selects the items
    its list names, from all of the label file's items. Names the label file lacks are an error naming
    the list and the count (listed and left out with `on_bad_sample="skip"`).
    """
    if on_bad_sample not in ("raise", "skip"):
        raise ValueError(f"on_bad_sample={on_bad_sample!r}: expected 'raise' or 'skip'")
    skip = on_bad_sample == "skip" or skip_missing
    key = adapter or name
    if key not in BENCHMARKS:
        raise KeyError(f"unknown benchmark adapter {key!r}; known: {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[key]
    where = f"benchmark {name!r} (adapter {key!r})"
    bad = sorted(set(options) - set(spec.options()))
    if bad:
        raise TypeError(f"{where}: unknown option(s) {bad}; accepted: {spec.options()}")
    split = split if split is not None else spec.default_split
    lists = {str(k): str(v) for k, v in (split_lists or {}).items()}
    if lists and split not in ALL_SPLITS and split not in lists:
        raise ValueError(f"{where}: split {split!r} has no file in split_lists (has {sorted(lists)})")
    if split not in ALL_SPLITS and split not in spec.splits and split not in lists:
        accepted = ["all", *spec.splits] if spec.splits else ["all (no splits)"]
        raise ValueError(f"{where}: unknown split {split!r}; accepted: {accepted}")
    root = Path(root).expanduser()
    read_split = None if split in lists else split
    try:
        labels = spec.read(root, read_split, **options)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{where}: {err}") from err
    except LabelFormatError as err:
        raise LabelFormatError(f"{where}: {err}") from err
    items, merged = _merge_duplicates(labels.items, where, labels.label_file)
    rejected: list[Rejected] = list(labels.bad)
    base = labels.media_root or root
    if not allow_media_outside_root:
        outside = {it.id for it in items if leaves_root(it.media, base)}
        rejected += [
            Rejected(
                it.id,
                it.media,
                it.mos,
                f"{it.source}: media path {it.media} of {it.id!r} leads outside the dataset root {base} (absolute "
                "or '..'); set allow_media_outside_root=true on this entry to read it",
            )
            for it in items
            if it.id in outside
        ]
        items = [it for it in items if it.id not in outside]
    if split in lists:
        list_path = Path(lists[split]).expanduser()
        list_path = list_path if list_path.is_absolute() else root / list_path
        if not list_path.is_file():
            raise FileNotFoundError(f"{where}: split list {list_path} (split_lists.{split}) not found")
        try:
            items, absent = filter_by_split_list(items, list_path, skip=skip)
        except LabelFormatError as err:
            raise LabelFormatError(f"{where}: {err}") from err
        if absent:
            msg = f"{where}: split list {list_path}: {len(absent)} image(s) not in the label file, left out: {absent[:MAX_LISTED_MISSING]}"
            log.warning(msg)
            warnings.warn(msg, stacklevel=2)
    fixed_range = labels.mos_range or spec.mos_range
    if fixed_range is not None:
        lo, hi = fixed_range
        outside = [it for it in items if not lo <= it.mos <= hi]
        rejected += [
            Rejected(it.id, it.media, it.mos, f"{it.source}: MOS {it.mos} of {it.id!r} outside the range [{lo}, {hi}]")
            for it in outside
        ]
        items = [it for it in items if lo <= it.mos <= hi]
    missing: list[tuple[str, Path]] = []
    if check_media:
        missing = [(it.id, it.media) for it in items if not it.media.is_file()]
        rejected += [
            Rejected(it.id, it.media, it.mos, f"{it.source}: media file not found: {it.media}")
            for it in items
            if not it.media.is_file()
        ]
        items = [it for it in items if it.media.is_file()]
    if rejected:
        total = len(items) + len(rejected)
        listed = "\n  ".join(r.reason for r in rejected[:MAX_LISTED_MISSING])
        more = f"\n  ... and {len(rejected) - MAX_LISTED_MISSING} more" if len(rejected) > MAX_LISTED_MISSING else ""
        kind = "media files referenced by" if len(missing) == len(rejected) else "rows of"
        msg = f"{where}: {len(rejected)} of {total} {kind} {labels.label_file} are bad:\n  {listed}{more}"
        if not skip:
            hint = "\n(set on_bad_sample=skip to leave them out; they are then listed with their reason)"
            if len(missing) == len(rejected):
                raise MissingMediaError(msg + hint, missing)
            raise LabelFormatError(msg + hint)
        log.warning("%s\n(skipped)", msg)
        warnings.warn(msg + "\n(skipped)", stacklevel=2)
    if not items:
        warnings.warn(f"{where}: no items in {labels.label_file} (split {split!r})", stacklevel=2)

    mos_range = fixed_range
    if mos_range is None:
        values = [it.mos for it in items]
        mos_range = (min(values), max(values)) if values else (math.nan, math.nan)
    lower_is_better = options.get("lower_is_better", not spec.higher_is_better)
    if lower_is_better:
        lo, hi = mos_range
        items = [dataclasses.replace(it, mos=lo + hi - it.mos) for it in items]

    if limit is not None:
        items = items[:limit]
    return Benchmark(
        name=name,
        items=items,
        mos_range=(float(mos_range[0]), float(mos_range[1])),
        task=category(labels.task or spec.task, {"iqa": "iqa", "vqa": "vqa"}, where, "task"),
        adapter=key,
        split=split,
        label_file=labels.label_file,
        flipped=bool(lower_is_better),
        skipped=[r.id for r in rejected],
        rejected=rejected,
        merged_duplicates=merged,
    )


def _merge_duplicates(items: list[BenchmarkItem], where: str, label_file: Path) -> tuple[list[BenchmarkItem], int]:
    """Items with each repeated id merged into its first row when the rows agree (logged, counted); rows of
    one id that disagree (MOS or media) raise `LabelFormatError` naming every row."""
    dups = find_duplicates(
        [it.id for it in items], [it.mos for it in items], [it.media for it in items], [it.source for it in items]
    )
    if dups.conflicts:
        listed = "\n  ".join(dups.conflicts[:MAX_LISTED_MISSING])
        more = (
            f"\n  ... and {len(dups.conflicts) - MAX_LISTED_MISSING} more"
            if len(dups.conflicts) > MAX_LISTED_MISSING
            else ""
        )
        raise LabelFormatError(
            f"{where}: {len(dups.conflicts)} id(s) of {label_file} are labelled more than once with different values "
            f"(which one holds is not ours to guess; fix the label file):\n  {listed}{more}"
        )
    if dups.merged:
        log.warning(
            "%s: %d repeated row(s) with equal MOS merged into their first row: %s",
            where,
            dups.merged_rows,
            "; ".join(dups.merged[:MAX_LISTED_MISSING]),
        )
    return [items[i] for i in dups.keep], dups.merged_rows


def load_benchmark_config(cfg: Mapping[str, Any], **overrides: Any) -> Benchmark:
    """Load from one `conf/benchmark/<name>.yaml` node: name, adapter, root, task, split, options.

    `overrides` update `options` (e.g. skip_missing=True, limit=8). The node's `task` must match
    the adapter's (the JSONL and text adapters take it as an option).
    """
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    cfg = dict(cfg)
    name = cfg["name"]
    key = cfg.get("adapter") or name
    opts = dict(cfg.get("options") or {})
    opts.update(overrides)
    task = cfg.get("task")
    if task is not None and key in BENCHMARKS and "task" in BENCHMARKS[key].options():
        opts.setdefault("task", task)
    bench = load_benchmark(name, cfg["root"], cfg.get("split"), adapter=key, **opts)
    if task is not None and bench.task != task:
        raise ValueError(f"benchmark {name!r}: config says task {task!r} but adapter {key!r} gives {bench.task!r}")
    return bench
