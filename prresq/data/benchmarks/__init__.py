"""Benchmark label adapters: read each IQA/VQA test set from its label files as distributed.

What it is: one adapter per benchmark that parses the dataset's NATIVE label file(s) (the CSV,
text, MATLAB or Excel files that ship with the dataset) into a list of
`BenchmarkItem(id, media, mos, std, source, reference)`, plus generic adapters for the anchors'
label lists (`name mos [std]`, `ref name mos [std]`, `path, mos`: `read_label_list`) and the
project's own JSONL records. Each adapter's docstring states the layout it
expects and where that layout was confirmed. Benchmarks that ship only such a text list (Liu13,
Min19) are configs of the `text` adapter (`conf/benchmark/*.yaml`), not code.

Modules: `registry` (types, errors, `BENCHMARKS`), `readers` (shared label-file readers), `iqa`,
`vqa` and `generic` (the adapters; importing this package registers them all), `splits` (the
released splits shipped in `released_splits/`, a user's split lists), `loading` (`load_benchmark`,
`load_benchmark_config`).

How it is used:

    from prresq.data.benchmarks import load_benchmark, load_benchmark_config
    bench = load_benchmark("kadid10k", "/data/kadid10k", split="test")
    bench = load_benchmark_config(cfg.benchmark.kadid10k)     # a conf/benchmark/*.yaml node
    for item in bench.items: ...                               # item.media is a full path

Conventions:
- MOS direction: every Benchmark is "higher is better". An adapter whose native score is lower-is-
  better (a true DMOS) declares it, and `load_benchmark` flips it within its range
  (`mos -> lo + hi - mos`) and sets `Benchmark.flipped`. None of the listed benchmarks needs it:
  KADID-10K's column is named `dmos` but is a 1-5 absolute-category MOS (5 = imperceptible).
  The generic text adapter has `lower_is_better` for label lists that are DMOS.
- `Benchmark.mos_range` is the native scale of the score; adapters whose scale is open (PIPAL's
  Elo, the generic text lists) report the observed min and max instead.
- Errors: a missing dataset root or label file raises `FileNotFoundError` naming the benchmark,
  the adapter and every file name it tried. A header without the expected columns raises
  `LabelFormatError` naming the file, the columns found and those expected.
- Bad rows follow `on_bad_sample` (as JSONL rows do in `prresq.data.records`): a row whose media
  file is missing, whose MOS is not a number or lies outside the adapter's range raises (missing
  media: `MissingMediaError`, a `FileNotFoundError`; bad MOS: `LabelFormatError`), naming the
  label file and the row; with `on_bad_sample="skip"` the rows are dropped, counted, logged and
  kept in `Benchmark.rejected` (id, media, MOS, reason) so that evaluation lists them. A row
  without a name or MOS (a trailing `,,,` line, a blank sheet row) and a row whose media path is
  absolute or climbs out of the dataset root (unless `allow_media_outside_root=True`) are bad rows too.
- What stops whatever `on_bad_sample` (`LabelFormatError` naming the file and row): a categorical
  value outside its documented spellings (case-insensitive; LSVQ `is_test`, KonIQ `set`, JSONL
  conversation roles), one id labelled twice with different MOS or media (equal repeats are merged
  and counted in `Benchmark.merged_duplicates`), a label file that is not UTF-8 text (Latin-1,
  UTF-16, binary), a damaged .xlsx or MATLAB file. Shared with the JSONL path: `prresq.data.label_checks`.
"""

from prresq.data.benchmarks import generic, iqa, vqa  # noqa: F401  (registers the adapters)
from prresq.data.benchmarks.loading import load_benchmark, load_benchmark_config
from prresq.data.benchmarks.readers import LIST_FORMATS, read_label_list, reference_split
from prresq.data.benchmarks.registry import (
    BENCHMARKS,
    Adapter,
    Benchmark,
    BenchmarkItem,
    LabelFormatError,
    MissingMediaError,
    Rejected,
)
from prresq.data.benchmarks.splits import released_split

__all__ = [
    "BENCHMARKS",
    "LIST_FORMATS",
    "Adapter",
    "Benchmark",
    "BenchmarkItem",
    "LabelFormatError",
    "MissingMediaError",
    "Rejected",
    "load_benchmark",
    "load_benchmark_config",
    "read_label_list",
    "reference_split",
    "released_split",
]
