"""JSONL quality datasets -> validated `Record`s with MOS min-max mapped to [1, 5] per dataset.

Row format (both anchors): `{"id", "dataset_name", "image": ["rel/path.png"] (or "video"),
"conversations": [{"from": "human", ...}, {"from": "gpt", "value": "<mos>"}], ...}`; a top-level
`"mos"` field takes precedence over the `gpt` turn. Media paths are relative to the dataset's
`root` (default: the JSONL's folder). Every other field lands in `Record.extra`.

Bad input raises `DataError` naming the file and the 1-based line: malformed JSON, missing or
non-numeric MOS, MOS outside a given `mos_range`, missing media field or file, a media path that
is absolute or climbs out (`..`) of the root (unless the entry sets `allow_media_outside_root`), a
conversation role other than human / user / system / gpt / assistant; and, for the whole file, a
missing file, a file that is not UTF-8 text, an empty dataset or one whose MOS are all equal (it
can be neither mapped nor ranked). With `on_bad_sample="skip"` bad rows are dropped, counted and
summarised in one warning. Corrupt images are found when loaded (`prresq.data.media`).

Duplicated ids follow one rule on both paths (`prresq.data.label_checks.find_duplicates`): rows
that agree (same MOS, same media) are merged into the first and counted
(`LoadedDataset.merged_duplicates`, logged); rows that disagree stop with every row named, whatever
`on_bad_sample`.

    from prresq.data.records import DatasetSpec, load_dataset
    ds = load_dataset(DatasetSpec(name="kadid10k", jsonl="data/kadid10k/train.jsonl"))

A spec may instead name a benchmark adapter (`prresq.data.benchmarks`), a root and a split, and is
then read from the dataset's own label files through the adapter `prresq.eval` uses, with the
same split (KADID-10K: the released split; datasets without one: `reference_split`, 6:2:2 by
reference image / content, seed 42; any adapter: the user's `split_lists`)::

    ds = load_dataset({"name": "kadid10k", "benchmark": "kadid10k", "root": "/data/kadid10k", "split": "train"})

Its MOS are mapped over the adapter's native range (`mos_range` overrides it, and then every MOS
must lie inside it), or with `mos_scaling: observed` over the min and max of the whole label file (the
anchors' make_data.py); its bad rows (media missing, MOS not a number or out of range) follow the same
`on_bad_sample` policy.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prresq.data.label_checks import answer_value, find_duplicates, leaves_root, read_label_text

log = logging.getLogger(__name__)

OnBad = Literal["raise", "skip"]
MOS_SCALINGS = ("observed", "fixed")
MEDIA_KEYS = ("image", "video")
_CORE_KEYS = {"id", "image", "video", "conversations", "mos"}


class DataError(ValueError):
    """Bad input data; the message names the file (and the 1-based JSONL line when there is one)."""


@dataclass(frozen=True)
class Record:
    """One scored image or video."""

    id: str
    dataset: str
    media: Path
    mos: float  # raw, as in the file
    mos_mapped: float  # min-max mapped to `map_to` (default [1, 5]) with the dataset's range
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # "<jsonl>:<line>", for error messages

    @property
    def media_type(self) -> str:
        return str(self.extra.get("media_type", "image"))


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives: `jsonl` rows with media under `root` (default: the JSONL's folder), or
    the native label files under `root` read by the `benchmark` adapter, restricted to `split`."""

    name: str
    jsonl: str | Path | None = None
    root: str | Path | None = None
    mos_range: tuple[float, float] | None = None  # None: min and max of the data (JSONL), the adapter's range
    benchmark: str | None = None  # a prresq.data.benchmarks.BENCHMARKS key
    split: str | None = None  # the adapter's split (train / val / test ...); None: all items
    options: Mapping[str, Any] = field(default_factory=dict)  # the adapter's options
    allow_media_outside_root: bool = False  # accept media paths that are absolute or climb out of the root
    # How MOS map to [1, 5] (`map_to`): "observed" = min and max over the dataset's whole label file (all
    # splits; the anchors' make_data.py: KADID-10K 1.0 and 4.93, so 4.57 -> 4.634), "fixed" = `mos_range`
    # or the adapter's native range. None: "fixed" for a benchmark entry, "observed" (over the file) for JSONL.
    mos_scaling: str | None = None

    @classmethod
    def from_config(cls, spec: DatasetSpec | Mapping[str, Any]) -> DatasetSpec:
        if isinstance(spec, DatasetSpec):
            return spec
        keys = {
            "name",
            "jsonl",
            "root",
            "mos_range",
            "benchmark",
            "split",
            "options",
            "allow_media_outside_root",
            "mos_scaling",
        }
        unknown = set(spec) - keys
        has_jsonl, has_bench = spec.get("jsonl") is not None, spec.get("benchmark") is not None
        if unknown or "name" not in spec or has_jsonl == has_bench or (has_bench and spec.get("root") is None):
            raise ValueError(
                f"dataset spec {dict(spec)}: needs 'name' and either 'jsonl' (optional 'root', 'mos_range') or "
                "'benchmark' and 'root' (optional 'split', 'options', 'mos_range'); both take 'mos_scaling'"
                + (f"; unknown keys {sorted(unknown)}" if unknown else "")
            )
        rng = spec.get("mos_range")
        if rng is not None:
            rng = tuple(float(x) for x in rng)
            if len(rng) != 2 or not rng[0] < rng[1]:
                raise ValueError(f"dataset {spec['name']}: mos_range {list(rng)} must be [lo, hi] with lo < hi")
        scaling = spec.get("mos_scaling")
        if scaling is not None and scaling not in MOS_SCALINGS:
            raise ValueError(f"dataset {spec['name']}: mos_scaling={scaling!r}; expected one of {list(MOS_SCALINGS)}")
        if scaling == "fixed" and rng is None and has_jsonl:
            raise ValueError(f"dataset {spec['name']}: mos_scaling=fixed needs a mos_range for a JSONL entry")
        if scaling == "observed" and rng is not None:
            raise ValueError(f"dataset {spec['name']}: mos_scaling=observed ignores mos_range {list(rng)}; drop one")
        return cls(
            name=str(spec["name"]),
            jsonl=spec.get("jsonl"),
            root=spec.get("root"),
            mos_range=rng,
            benchmark=spec.get("benchmark"),
            split=spec.get("split"),
            options=dict(spec.get("options") or {}),
            allow_media_outside_root=_flag(spec, "allow_media_outside_root"),
            mos_scaling=scaling,
        )

    @property
    def media_root(self) -> Path:
        return Path(self.root) if self.root is not None else Path(self.jsonl).parent


def _flag(spec: Mapping[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"dataset {spec.get('name')}: {key}={value!r} must be true or false")
    return value


@dataclass
class LoadedDataset:
    """The valid records of one dataset plus the reasons of the rows skipped."""

    spec: DatasetSpec
    records: list[Record]
    skipped: list[str] = field(default_factory=list)
    mos_range: tuple[float, float] = (0.0, 0.0)  # the range used for the mapping
    merged_duplicates: int = 0  # rows repeating an earlier row's id with equal MOS and media (merged into it)

    def __len__(self) -> int:
        return len(self.records)


def _media_rel(row: dict[str, Any]) -> tuple[str, str]:
    for key in MEDIA_KEYS:
        if key not in row:
            continue
        value = row[key]
        if isinstance(value, list):
            if not value or not isinstance(value[0], str):
                raise ValueError(f"'{key}' must be a non-empty list of paths, got {value!r}")
            return key, value[0]
        if isinstance(value, str) and value:
            return key, value
        raise ValueError(f"'{key}' must be a path or a list of paths, got {value!r}")
    raise ValueError("no 'image' or 'video' field")


def _raw_mos(row: dict[str, Any]) -> float:
    if "mos" in row:
        value = row["mos"]
    else:
        value = answer_value(row.get("conversations"))
        if value is None:
            raise ValueError("missing MOS: no 'mos' field and no 'gpt' turn with a value in 'conversations'")
    if isinstance(value, bool) or value is None:
        raise ValueError(f"MOS {value!r} is not a number")
    try:
        mos = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"MOS {value!r} is not a number") from None
    if not math.isfinite(mos):
        raise ValueError(f"MOS {value!r} is not finite")
    return mos


def load_dataset(
    spec: DatasetSpec | Mapping[str, Any],
    map_to: Sequence[float] = (1.0, 5.0),
    on_bad_sample: OnBad = "raise",
    check_media: bool = True,
) -> LoadedDataset:
    """Read and validate one JSONL dataset; map its MOS to `map_to` (min-max over `mos_range` or the data)."""
    spec = DatasetSpec.from_config(spec)
    if on_bad_sample not in ("raise", "skip"):
        raise ValueError(f"on_bad_sample={on_bad_sample!r}: expected 'raise' or 'skip'")
    if spec.benchmark is not None:
        return _load_native(spec, map_to, on_bad_sample, check_media)
    path = Path(str(spec.jsonl))
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found (dataset {spec.name!r})")
    root = spec.media_root
    skipped: list[str] = []
    rows: list[tuple[str, str, Path, float, dict[str, Any]]] = []  # id, source, media, mos, extra
    text = read_label_text(path, DataError)
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit inside a string
        if not line.strip():
            continue
        source = f"{path}:{lineno}"
        try:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            if "id" not in row or row["id"] in (None, ""):
                raise ValueError("missing 'id'")
            sid = str(row["id"])
            mos = _raw_mos(row)
            if spec.mos_range is not None and not spec.mos_range[0] <= mos <= spec.mos_range[1]:
                raise ValueError(f"MOS {mos} outside mos_range {list(spec.mos_range)}")
            key, rel = _media_rel(row)
            media = root / rel  # an absolute `rel` stays absolute
            if not spec.allow_media_outside_root and leaves_root(media, root):
                raise ValueError(
                    f"media path {rel!r} leads outside the dataset root {root} (absolute or '..'); set "
                    f"allow_media_outside_root: true on dataset {spec.name!r} to read it"
                )
            if check_media and not media.is_file():
                raise ValueError(f"media file not found: {media}")
        except ValueError as exc:
            if on_bad_sample == "raise":
                raise DataError(f"{source}: {exc}") from None
            skipped.append(f"line {lineno}: {exc}")
            continue
        extra = {k: v for k, v in row.items() if k not in _CORE_KEYS}
        extra["media_type"] = key
        rows.append((sid, source, media, mos, extra))
    dups = find_duplicates([r[0] for r in rows], [r[3] for r in rows], [r[2] for r in rows], [r[1] for r in rows])
    if dups.conflicts:
        raise DataError(
            f"{path}: {len(dups.conflicts)} id(s) of dataset {spec.name!r} are labelled more than once with different "
            "values (which one holds is not ours to guess; fix the file):\n  " + "\n  ".join(dups.conflicts[:5])
        )
    if dups.merged:
        log.warning(
            "%s: %d repeated row(s) with equal MOS merged into their first row: %s",
            path,
            dups.merged_rows,
            "; ".join(dups.merged[:3]),
        )
        rows = [rows[i] for i in dups.keep]
    if skipped:
        log.warning(
            "%s: skipped %d bad row(s) of dataset %r; first: %s", path, len(skipped), spec.name, "; ".join(skipped[:3])
        )
    if not rows:
        detail = f" ({len(skipped)} bad rows skipped)" if skipped else ""
        raise DataError(f"{path}: empty dataset {spec.name!r}: no valid rows{detail}")
    values = [r[3] for r in rows]
    lo, hi = spec.mos_range if spec.mos_range is not None else (min(values), max(values))
    if min(values) == max(values):
        raise DataError(
            f"{path}: all {len(values)} MOS of dataset {spec.name!r} equal {values[0]}: "
            "it can be neither min-max mapped nor ranked"
        )
    a, b = float(map_to[0]), float(map_to[1])
    records = [
        Record(
            id=sid,
            dataset=spec.name,
            media=media,
            mos=mos,
            mos_mapped=a + (mos - lo) / (hi - lo) * (b - a),
            extra=extra,
            source=source,
        )
        for sid, source, media, mos, extra in rows
    ]
    return LoadedDataset(
        spec=spec,
        records=records,
        skipped=skipped,
        mos_range=(float(lo), float(hi)),
        merged_duplicates=dups.merged_rows,
    )


def _load_native(spec: DatasetSpec, map_to: Sequence[float], on_bad_sample: OnBad, check_media: bool) -> LoadedDataset:
    """A benchmark-adapter spec -> records (the adapter's rows of `spec.split`, MOS mapped per dataset)."""
    from prresq.data.benchmarks import LabelFormatError, load_benchmark

    where = f"dataset {spec.name!r} (adapter {spec.benchmark!r}, split {spec.split!r})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # skipped rows are logged below, once
            bench = load_benchmark(
                spec.name,
                str(spec.root),
                spec.split,
                adapter=spec.benchmark,
                on_bad_sample=on_bad_sample,
                check_media=check_media,
                allow_media_outside_root=spec.allow_media_outside_root,
                **dict(spec.options),
            )
    except (FileNotFoundError, LabelFormatError) as exc:
        raise DataError(f"{where}: {exc}") from None
    skipped = [r.reason for r in bench.rejected]
    items = bench.items
    if spec.mos_range is not None:
        items, outside = _inside_declared_range(items, spec.mos_range, where, on_bad_sample)
        skipped += outside
    if skipped:
        log.warning("%s: skipped %d bad row(s); first: %s", where, len(skipped), "; ".join(skipped[:3]))
    if not items:
        raise DataError(f"{bench.label_file}: empty {where}: no valid rows ({len(skipped)} bad rows skipped)")
    lo, hi = spec.mos_range if spec.mos_range is not None else bench.mos_range
    if spec.mos_scaling == "observed":
        lo, hi = _observed_range(spec, bench.mos_range)
    values = [it.mos for it in items]
    if min(values) == max(values) or not hi > lo:
        raise DataError(
            f"{bench.label_file}: all MOS of {where} equal {values[0]}: it can be neither mapped nor ranked"
        )
    a, b = float(map_to[0]), float(map_to[1])
    media_type = "video" if bench.task == "vqa" else "image"
    records = [
        Record(
            id=it.id,
            dataset=spec.name,
            media=it.media,
            mos=it.mos,
            mos_mapped=a + (it.mos - lo) / (hi - lo) * (b - a),
            extra={"media_type": media_type, "label_file": str(bench.label_file)},
            source=it.source,
        )
        for it in items
    ]
    return LoadedDataset(
        spec=spec,
        records=records,
        skipped=skipped,
        mos_range=(float(lo), float(hi)),
        merged_duplicates=bench.merged_duplicates,
    )


def _inside_declared_range(
    items: list[Any], mos_range: tuple[float, float], where: str, on_bad_sample: OnBad
) -> tuple[list[Any], list[str]]:
    """The items whose MOS lies inside the entry's declared `mos_range`, and the reasons of the others;
    with on_bad_sample="raise" any item outside raises `DataError` naming its label file row."""
    lo, hi = mos_range
    outside = [
        f"{it.source}: MOS {it.mos:g} of {it.id!r} outside the entry's mos_range [{lo:g}, {hi:g}]"
        for it in items
        if not lo <= it.mos <= hi
    ]
    if outside and on_bad_sample == "raise":
        more = f"\n  ... and {len(outside) - 5} more" if len(outside) > 5 else ""
        raise DataError(
            f"{where}: {len(outside)} of {len(items)} rows have a MOS outside the declared mos_range [{lo:g}, {hi:g}] "
            f"(they would map outside the answer scale):\n  "
            + "\n  ".join(outside[:5])
            + more
            + "\n(widen mos_range, or set on_bad_sample=skip to leave them out)"
        )
    return [it for it in items if lo <= it.mos <= hi], outside


def _observed_range(spec: DatasetSpec, native: tuple[float, float]) -> tuple[float, float]:
    """Min and max MOS over the whole label file of a benchmark entry (every split; media not needed)."""
    from prresq.data.benchmarks import load_benchmark

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        every = load_benchmark(
            spec.name, str(spec.root), "all", adapter=spec.benchmark, on_bad_sample="skip", check_media=False,
            allow_media_outside_root=True,  # every row's MOS counts, wherever its media lies
            **{k: v for k, v in spec.options.items() if k != "split_lists"},
        )  # fmt: skip
    values = [it.mos for it in every.items]
    return (min(values), max(values)) if values else native


def load_datasets(
    specs: Sequence[DatasetSpec | Mapping[str, Any]],
    map_to: Sequence[float] = (1.0, 5.0),
    on_bad_sample: OnBad = "raise",
    check_media: bool = True,
) -> list[LoadedDataset]:
    """`load_dataset` for each spec, in order (each dataset mapped with its own range)."""
    return [load_dataset(s, map_to=map_to, on_bad_sample=on_bad_sample, check_media=check_media) for s in specs]
