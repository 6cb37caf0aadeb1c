"""Read the anchors' label lists through the `text` adapter and print rows read / rows in the file.

    python experiments/anchor_lists.py ../VisualQuality-R1/datasets/test_data_label ../VisualQuality-R1/datasets/KADID-10K
    python experiments/anchor_lists.py ../General-Visual-Quality-RL/Ground-truth

Every `*.txt` of each folder is read with `load_benchmark("text", ..., check_media=False,
on_bad_sample="skip")` (media are not needed to count rows); "rows in the file" counts its lines that
are not blank. A list whose rows all read shows n / n and no bad rows.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

from prresq.data.benchmarks import load_benchmark, read_label_list


def count_rows(path: Path) -> tuple[str, int, int, int]:
    """(format, rows read, rows in the file, bad rows) of one label list."""
    _, _, fmt = read_label_list(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench = load_benchmark(
            path.stem, path.parent, adapter="text", labels=path.name, check_media=False, on_bad_sample="skip"
        )
    lines = sum(1 for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip())
    return fmt, len(bench), lines, len(bench.rejected)


def main(argv: Sequence[str] | None = None) -> list[tuple[str, str, int, int, int]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    out = []
    for folder in args.folders:
        for path in sorted(folder.glob("*.txt")):
            fmt, read, lines, bad = count_rows(path)
            out.append((path.name, fmt, read, lines, bad))
            print(f"{path.name:40s} {fmt:20s} {read:6d} / {lines:6d} rows read" + (f"  ({bad} bad)" if bad else ""))
    return out


if __name__ == "__main__":
    main()
