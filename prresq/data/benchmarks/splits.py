"""Train / val / test membership of a benchmark: the released split files shipped with the project
(`released_splits/<name>.csv`, reference -> split, facts taken from the anchors' released lists) and a
user's own split lists (`{train,val,test}` files in the anchors' label-list formats).

- `released_split("kadid10k")`: the 81 KADID-10K references' assignment both anchors trained on
  (49 / 16 / 16 references, 6125 / 2000 / 2000 images).
- `split_list_names(path)`: the rated-image names of one split list (any `read_label_list` format).
- `filter_by_split_list(items, path, split)`: the items a split list names; names that the label file
  lacks are an error naming the list and the count (or listed, with `on_bad_sample=skip`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from prresq.data.benchmarks.readers import read_label_list
from prresq.data.benchmarks.registry import MAX_LISTED_MISSING, BenchmarkItem, LabelFormatError

RELEASED_DIR = Path(__file__).with_name("released_splits")
SPLIT_SOURCES = ("released", "reference_seed")


@cache
def released_split(name: str) -> dict[str, str]:
    """Reference id -> "train" / "val" / "test" of the split the anchors released for dataset `name`."""
    path = RELEASED_DIR / f"{name}.csv"
    if not path.is_file():
        known = sorted(p.stem for p in RELEASED_DIR.glob("*.csv"))
        raise FileNotFoundError(f"no released split for {name!r} (shipped: {known})")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return {row["reference"]: row["split"] for row in csv.DictReader(lines)}


def assign_released(name: str, refs: Sequence[str], where: Path) -> dict[str, str]:
    """The released split of the references `refs`; references outside it are an error naming the count."""
    assign = released_split(name)
    unknown = sorted(set(refs) - set(assign))
    if unknown:
        raise LabelFormatError(
            f"{where}: {len(unknown)} reference(s) are not in the released {name} split "
            f"({len(assign)} references, {RELEASED_DIR.name}/{name}.csv): {unknown[:MAX_LISTED_MISSING]}; "
            "set options.split_source=reference_seed for the seed split by reference, or options.split_lists"
        )
    return assign


def split_list_names(path: Path) -> list[str]:
    """The rated-image names a split list holds, in order (its bad rows are an error naming them)."""
    rows, bad, _ = read_label_list(path)
    if bad:
        listed = "\n  ".join(reason for _, _, reason in bad[:MAX_LISTED_MISSING])
        raise LabelFormatError(f"split list {path}: {len(bad)} bad row(s):\n  {listed}")
    return [r.name for r in rows]


def filter_by_split_list(
    items: Sequence[BenchmarkItem], path: Path, skip: bool = False
) -> tuple[list[BenchmarkItem], list[str]]:
    """The items (by id, else by file name) that split list `path` names, in the label file's order.

    Returns (items, names the label file lacks). Missing names raise a LabelFormatError naming the list
    and the count unless `skip`.
    """
    names = split_list_names(path)
    wanted = set(names)
    kept = [it for it in items if it.id in wanted or it.media.name in wanted]
    found = {it.id for it in kept} | {it.media.name for it in kept}
    missing = [n for n in names if n not in found]
    if missing and not skip:
        raise LabelFormatError(
            f"split list {path}: {len(missing)} of its {len(names)} image(s) are not in the label file: "
            f"{missing[:MAX_LISTED_MISSING]} (on_bad_sample=skip leaves them out, listed)"
        )
    return kept, missing
