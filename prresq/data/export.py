"""Export any benchmark adapter's split to the anchors' JSONL, for users who want files.

Training does not need this (a `data` entry can name the adapter directly, see
`prresq.data.records`); it writes what the JSONL path of the same seam reads::

    python -m prresq.data.export kadid10k /data/kadid10k --split train val test --out /data/kadid10k
    python -m prresq.data.export spaq /data/spaq --split train --out exports/spaq --option seed=42

Each split goes to `<out>/<split>.jsonl` ("all" when no split is given), one row per item:
`{"id", "dataset_name", "image" (or "video"): [path relative to the dataset root], "conversations":
[{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "<native MOS>"}], "mos_range",
"source"}`. Read it back with `{name, jsonl: <out>/<split>.jsonl, root: <dataset root>,
mos_range: <the row's mos_range>}` to get the adapter's own mapping. Bad rows follow
`--on-bad-sample` (raise, or skip and list them on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prresq.data.benchmarks import BENCHMARKS, load_benchmark

__all__ = ["export_jsonl", "main"]


def export_jsonl(
    adapter: str,
    root: str | Path,
    split: str | None,
    out_dir: str | Path,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
    on_bad_sample: str = "raise",
) -> Path:
    """Write `<out_dir>/<split or "all">.jsonl` from the adapter's items; return its path."""
    root = Path(root)
    bench = load_benchmark(
        name or adapter, root, split, adapter=adapter, on_bad_sample=on_bad_sample, **dict(options or {})
    )
    key = "video" if bench.task == "vqa" else "image"
    out = Path(out_dir) / f"{split or 'all'}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for it in bench.items:
            rel = os.path.relpath(it.media, root) if it.media.is_relative_to(root) else str(it.media)
            row = {
                "id": it.id,
                "dataset_name": bench.name,
                key: [rel],
                "conversations": [{"from": "human", "value": f"<{key}>"}, {"from": "gpt", "value": f"{it.mos:g}"}],
                "mos_range": list(bench.mos_range),
                "source": it.source,
            }
            f.write(json.dumps(row) + "\n")
    for r in bench.rejected:
        print(f"skipped {r.id}: {r.reason}", file=sys.stderr)
    return out


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--option {text!r}: expected key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", choices=sorted(BENCHMARKS), metavar="ADAPTER", help="a benchmark adapter")
    parser.add_argument("root", type=Path, help="the dataset's folder, as distributed")
    parser.add_argument("--split", nargs="*", default=[None], help="split(s) to export (default: all items)")
    parser.add_argument("--out", type=Path, required=True, help="folder for <split>.jsonl")
    parser.add_argument("--name", default=None, help="dataset_name of the rows (default: the adapter)")
    parser.add_argument("--option", type=_option, action="append", default=[], help="adapter option key=value")
    parser.add_argument("--on-bad-sample", choices=["raise", "skip"], default="raise")
    args = parser.parse_args(argv)
    for split in args.split or [None]:
        path = export_jsonl(args.adapter, args.root, split, args.out, args.name, dict(args.option), args.on_bad_sample)
        n = len(path.read_text(encoding="utf-8").splitlines())
        print(f"{path}: {n} rows")


if __name__ == "__main__":
    main()
