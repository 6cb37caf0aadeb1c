"""Benchmark label adapters: read each IQA/VQA test set from its label files as distributed.

What it is: one adapter per benchmark that parses the dataset's NATIVE label file(s) (the CSV,
text, MATLAB or Excel files that ship with the dataset) into a list of
`BenchmarkItem(id, media, mos, std)`, plus generic adapters for the anchors' `name mos [std]`
text lists and the project's own JSONL records. Each adapter's docstring states the layout it
expects and where that layout was confirmed.

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
  kept in `Benchmark.rejected` (id, media, MOS, reason) so that evaluation lists them.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import random
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "BENCHMARKS",
    "Adapter",
    "Benchmark",
    "BenchmarkItem",
    "LabelFormatError",
    "MissingMediaError",
    "Rejected",
    "load_benchmark",
    "load_benchmark_config",
    "reference_split",
]

log = logging.getLogger(__name__)

Task = Literal["iqa", "vqa"]
ALL_SPLITS = (None, "all")
MAX_LISTED_MISSING = 5


@dataclass(frozen=True)
class BenchmarkItem:
    """One rated image or video: `id` as written in the label file, `media` its full path."""

    id: str
    media: Path
    mos: float
    std: float | None = None
    source: str = ""  # "<label file> row <n>" (row numbers as a spreadsheet shows them: header = row 1)


@dataclass(frozen=True)
class Rejected:
    """A label row left out under `on_bad_sample="skip"`, with the reason (listed by evaluation)."""

    id: str
    media: Path
    mos: float
    reason: str


@dataclass
class Benchmark:
    """A loaded benchmark: items with MOS in "higher is better" direction on `mos_range`."""

    name: str
    items: list[BenchmarkItem]
    mos_range: tuple[float, float]
    task: Task
    adapter: str = ""
    split: str | None = None
    label_file: Path | None = None
    flipped: bool = False
    skipped: list[str] = field(default_factory=list)  # ids of the rejected rows (on_bad_sample="skip")
    rejected: list[Rejected] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def mapped_mos(self, lo: float = 1.0, hi: float = 5.0) -> np.ndarray:
        """MOS min-max mapped from `mos_range` to [lo, hi] (the training convention maps to [1, 5])."""
        a, b = self.mos_range
        mos = np.array([it.mos for it in self.items], dtype=np.float64)
        return lo + (mos - a) * (hi - lo) / (b - a) if b > a else np.full_like(mos, (lo + hi) / 2)

    def to_frame(self) -> pd.DataFrame:
        """Items as a DataFrame with columns id, media, mos, std."""
        return pd.DataFrame(
            {
                "id": [it.id for it in self.items],
                "media": [str(it.media) for it in self.items],
                "mos": [it.mos for it in self.items],
                "std": [it.std for it in self.items],
            }
        )


class LabelFormatError(ValueError):
    """A label file with an unexpected header or a bad value; the message names the file (and row)."""


class MissingMediaError(FileNotFoundError):
    """Label files reference media that are not on disk; `.missing` holds (id, expected path) pairs."""

    def __init__(self, message: str, missing: list[tuple[str, Path]]):
        super().__init__(message)
        self.missing = missing


@dataclass
class _Labels:
    """What an adapter's reader returns; `mos_range` / `task` override the adapter's defaults."""

    items: list[BenchmarkItem]
    label_file: Path
    mos_range: tuple[float, float] | None = None
    task: Task | None = None
    bad: list[Rejected] = field(default_factory=list)  # rows whose MOS is not a number


class _Rows:
    """Collects a reader's items; a MOS that is not a finite number becomes a bad row naming its source."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[BenchmarkItem] = []
        self.bad: list[Rejected] = []

    def add(
        self, id: str, media: Path, mos: Any, std: float | None = None, row: Any = None, path: Path | None = None
    ) -> None:
        source = f"{path or self.path} row {row}" if row is not None else str(path or self.path)
        try:
            value = float(mos.strip() if isinstance(mos, str) else mos)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            self.bad.append(Rejected(id, media, value, f"{source}: MOS {mos!r} of {id!r} is not a number"))
            return
        self.items.append(BenchmarkItem(id, media, value, std, source))

    def labels(self, mos_range: tuple[float, float] | None = None, label_file: Path | None = None) -> _Labels:
        return _Labels(self.items, label_file or self.path, mos_range=mos_range, bad=self.bad)


def _rownums(df: pd.DataFrame, header_rows: int = 1) -> list[int]:
    """Spreadsheet row numbers of a frame read with a header (pandas index 0 = row 2)."""
    return [int(i) + 1 + header_rows for i in df.index]


@dataclass(frozen=True)
class Adapter:
    """A registered reader with its scale, direction and accepted splits."""

    name: str
    read: Callable[..., _Labels]
    task: Task
    mos_range: tuple[float, float] | None  # None: observed min/max of the labels
    higher_is_better: bool = True
    splits: tuple[str, ...] = ()  # accepted besides None/"all"
    default_split: str | None = None

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.read) or ""

    def options(self) -> list[str]:
        """Keyword options the reader accepts (besides root and split)."""
        return [p for p in inspect.signature(self.read).parameters if p not in ("root", "split")]


BENCHMARKS: dict[str, Adapter] = {}


def _register(
    name: str,
    *,
    task: Task,
    mos_range: tuple[float, float] | None,
    higher_is_better: bool = True,
    splits: tuple[str, ...] = (),
    default_split: str | None = None,
    aliases: Mapping[str, str | None] | None = None,
) -> Callable[[Callable[..., _Labels]], Callable[..., _Labels]]:
    """Register a reader under `name` (and `aliases`: alias -> its default split)."""

    def deco(fn: Callable[..., _Labels]) -> Callable[..., _Labels]:
        BENCHMARKS[name] = Adapter(name, fn, task, mos_range, higher_is_better, splits, default_split)
        for alias, alias_split in (aliases or {}).items():
            BENCHMARKS[alias] = Adapter(alias, fn, task, mos_range, higher_is_better, splits, alias_split)
        return fn

    return deco


# ----------------------------------------------------------------------------- shared readers


def _require(path: Path, root: Path, what: str = "label file") -> Path:
    """Return `path` if it is a file, else raise FileNotFoundError naming the full expected path."""
    if path.is_file():
        return path
    note = f" (the dataset root {root} does not exist)" if not root.exists() else ""
    raise FileNotFoundError(f"expected {what} {path} not found{note}")


def _first_existing(root: Path, candidates: Sequence[str], what: str = "label file") -> Path:
    """The first of `candidates` (relative to root) that exists; else an error naming them all."""
    paths = [root / c for c in candidates]
    for p in paths:
        if p.is_file():
            return p
    if len(paths) == 1:
        return _require(paths[0], root, what)
    note = f" (the dataset root {root} does not exist)" if not root.exists() else ""
    listed = ", ".join(str(p) for p in paths)
    raise FileNotFoundError(f"expected {what} not found; looked for: {listed}{note}")


def _as_list(x: str | Sequence[str]) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


class _MediaResolver:
    """Map a name from a label file to its file under `root/<dir>` for the first matching dir.

    Tries each candidate folder and suffix, then a case-insensitive match (TID2013 ships
    `i25_*.bmp` next to upper-case names; Windows-made label files mix cases). `recursive=True`
    indexes every file below each folder by lower-case basename (PIPAL's Distortion_1..4,
    YouTube-UGC's category folders). Unresolved names map to their first expected path, which
    `load_benchmark` then reports as missing.
    """

    def __init__(
        self,
        root: Path,
        dirs: str | Sequence[str] = "",
        suffixes: Sequence[str] = ("",),
        recursive: bool = False,
    ):
        self.bases = [root / d if d else root for d in _as_list(dirs)]
        self.suffixes = list(suffixes)
        self.recursive = recursive
        self._flat: dict[Path, dict[str, str]] = {}
        self._deep: dict[Path, dict[str, Path]] = {}

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._flat:
            try:
                self._flat[folder] = {n.lower(): n for n in os.listdir(folder)}
            except OSError:
                self._flat[folder] = {}
        return self._flat[folder]

    def _tree(self, base: Path) -> dict[str, Path]:
        if base not in self._deep:
            index: dict[str, Path] = {}
            for dirpath, _, files in os.walk(base):
                for f in files:
                    index.setdefault(f.lower(), Path(dirpath) / f)
            self._deep[base] = index
        return self._deep[base]

    def __call__(self, name: str) -> Path:
        names = [name + s for s in self.suffixes]
        for base in self.bases:
            for n in names:
                if (base / n).is_file():
                    return base / n
        for base in self.bases:
            for n in names:
                p = base / n
                hit = self._listing(p.parent).get(p.name.lower())
                if hit is not None:
                    return p.parent / hit
                if self.recursive:
                    deep = self._tree(base).get(Path(n).name.lower())
                    if deep is not None:
                        return deep
        return self.bases[0] / names[0]


def _col(df: pd.DataFrame, *names: str, required: bool = True, where: Path | None = None) -> str | None:
    """The column of `df` matching one of `names` (case- and space-insensitive)."""
    norm = {str(c).strip().lower().replace(" ", "_"): c for c in df.columns}
    for n in names:
        c = norm.get(n.lower().replace(" ", "_"))
        if c is not None:
            return c
    if required:
        raise LabelFormatError(
            f"{where or 'table'}: unexpected header: expected a column named one of {list(names)}; "
            f"columns found: {[str(c) for c in df.columns]}"
        )
    return None


def _std(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _read_sheet(
    root: Path, xlsx: str, csv: Sequence[str], sheet: str | int = 0, header: int | None = 0
) -> tuple[pd.DataFrame, Path]:
    """Read an Excel label sheet, preferring a CSV export of it (same columns) when present.

    Reading .xlsx needs `openpyxl`; without it, a clear ImportError says which CSV export to add.
    """
    for c in csv:
        if (root / c).is_file():
            return pd.read_csv(root / c, header=header), root / c
    path = _first_existing(root, [xlsx, *csv])
    try:
        import openpyxl  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"{path} is an Excel file and reading it needs openpyxl (pip install openpyxl); "
            f"or export that sheet ({sheet!r}) to CSV with the same columns at {root / csv[0]}"
        ) from err
    return pd.read_excel(path, sheet_name=sheet, header=header), path


def _drop_empty(df: pd.DataFrame, columns: Sequence[Any], path: Path) -> pd.DataFrame:
    """Drop rows with an empty name or score cell (unrated entries of a sheet), logging how many."""
    kept = df.dropna(subset=list(columns))
    if len(kept) < len(df):
        rows = _rownums(df.loc[df.index.difference(kept.index)])
        log.warning(
            "%s: %d row(s) with an empty name or score left out (rows %s)", path, len(df) - len(kept), rows[:10]
        )
    return kept


def _loadmat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    return loadmat(path)


def _sqrt(variance: Any) -> float | None:
    v = _std(variance)
    return math.sqrt(v) if v is not None and v >= 0 else None


def _mat_strings(arr: Any) -> list[str]:
    """Flatten a MATLAB cell array of strings (as scipy.io.loadmat returns it) to a list of str."""
    out = []
    for x in np.asarray(arr, dtype=object).reshape(-1):
        while isinstance(x, np.ndarray):
            x = x.reshape(-1)[0] if x.size else ""
        out.append(str(x).strip())
    return out


def _mat_key(mat: Mapping[str, Any], path: Path, *keys: str) -> Any:
    for k in keys:
        if k in mat:
            return mat[k]
    found = [k for k in mat if not k.startswith("__")]
    raise KeyError(f"{path}: none of the variables {list(keys)} found (has {found})")


def reference_split(
    refs: Iterable[str], seed: int = 42, ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> dict[str, str]:
    """Assign each reference (content) id to "train"/"val"/"test": the anchors' KADID-10K protocol.

    Both anchors split KADID-10K 6:2:2 by reference image with seed 42; the exact shuffle was not
    released, so this is the project's definition (use it for training data too): unique ids
    sorted, shuffled with `random.Random(seed)`, first round(0.6 n) train, next round(0.2 n) val,
    the rest test. 81 references -> 49 / 16 / 16.
    """
    uniq = sorted(set(refs))
    random.Random(seed).shuffle(uniq)
    total = sum(ratios)
    n_train = round(len(uniq) * ratios[0] / total)
    n_val = round(len(uniq) * ratios[1] / total)
    out = {r: "train" for r in uniq[:n_train]}
    out.update({r: "val" for r in uniq[n_train : n_train + n_val]})
    out.update({r: "test" for r in uniq[n_train + n_val :]})
    return out


# ----------------------------------------------------------------------------- IQA adapters


@_register("kadid10k", task="iqa", mos_range=(1.0, 5.0), splits=("train", "val", "test"))
def read_kadid10k(
    root: Path,
    split: str | None,
    labels: str = "dmos.csv",
    media_dir: str | Sequence[str] = ("images", "distorted_images"),
    seed: int = 42,
) -> _Labels:
    """KADID-10K (Lin et al. 2019): `dmos.csv` with columns dist_img, ref_img, dmos, var; images in `images/`.

    `dmos` is a 1-5 degradation-category MOS where 5 is best (already higher-is-better despite the
    name); `var` is the rating variance, so std = sqrt(var). Splits: train/val/test from
    `reference_split` over `ref_img` (6:2:2, seed 42). Source: the dataset's dmos.csv header as
    read by IQA-PyTorch (scripts/process_kadid10k.py) and many loaders (`dist_img,ref_img,dmos,var`).
    """
    path = _require(root / labels, root)
    df = pd.read_csv(path)
    c_dist, c_ref = _col(df, "dist_img", where=path), _col(df, "ref_img", where=path)
    c_mos, c_var = _col(df, "dmos", "mos", where=path), _col(df, "var", required=False)
    if split not in ALL_SPLITS:
        assign = reference_split(df[c_ref].astype(str), seed=seed)
        df = df[df[c_ref].astype(str).map(assign) == split]
    resolve = _MediaResolver(root, media_dir)
    variances = df[c_var] if c_var is not None else [None] * len(df)
    rows = _Rows(path)
    for r, n, m, v in zip(_rownums(df), df[c_dist], df[c_mos], variances):
        rows.add(str(n), resolve(str(n)), m, _sqrt(v), r)
    return rows.labels()


@_register("tid2013", task="iqa", mos_range=(0.0, 9.0))
def read_tid2013(
    root: Path,
    split: str | None,
    labels: str = "mos_with_names.txt",
    std_file: str = "mos_std.txt",
    media_dir: str | Sequence[str] = "distorted_images",
) -> _Labels:
    """TID2013 (Ponomarenko et al. 2015): `mos_with_names.txt`, one `<mos> <file name>` per line.

    MOS on 0-9 (higher is better; observed about 0.24-7.2). `mos_std.txt` (one value per line, same
    order) gives std when present. Images in `distorted_images/`; names are matched
    case-insensitively since the label file and the files disagree on case for image 25.
    Source: IQA-PyTorch scripts/process_tid.py and MATLAB readers (`textscan(fid, '%f %s')`).
    """
    path = _require(root / labels, root)
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    stds: list[float | None] = []
    if std_file and (root / std_file).is_file():
        stds = [_std(s) for s in (root / std_file).read_text().split()]
        if len(stds) != len(rows):
            warnings.warn(f"{root / std_file}: {len(stds)} values for {len(rows)} labels; std ignored", stacklevel=2)
            stds = []
    resolve = _MediaResolver(root, media_dir)
    out = _Rows(path)
    for i, row in enumerate(rows):
        if len(row) < 2:
            raise LabelFormatError(f"{path}:{i + 1}: expected '<mos> <name>', got {' '.join(row)!r}")
        out.add(row[1], resolve(row[1]), row[0], stds[i] if stds else None, i + 1)
    return out.labels()


@_register("pipal", task="iqa", mos_range=None)
def read_pipal(
    root: Path,
    split: str | None,
    label_dir: str | Sequence[str] = ("Train_Label", "MOS_Scores_train"),
    media_dir: str | Sequence[str] = ("Train_Dis", "Distortion", ""),
) -> _Labels:
    """PIPAL (Gu et al. 2020, NTIRE 2021/22 release): one `<ref>.txt` per reference in `Train_Label/`.

    Each line is `<distorted name>,<Elo score>` (e.g. `A0001_00_00.bmp,1449.2`); Elo is higher-is-
    better with an open scale, so mos_range is the observed min/max. Distorted images live in
    `Train_Dis/` or in `Distortion/Distortion_1..4/`; files are found by name anywhere below the
    media folder. Source: PIPAL-dataset codes/data/README.md and IQA-PyTorch scripts/process_pipal.py.
    """
    dirs = [root / d for d in _as_list(label_dir)]
    folder = next((d for d in dirs if d.is_dir()), None)
    if folder is None:
        note = f" (the dataset root {root} does not exist)" if not root.exists() else ""
        raise FileNotFoundError(f"expected label folder of <ref>.txt files: {', '.join(map(str, dirs))}{note}")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"expected label files {folder}/*.txt (folder is empty)")
    resolve = _MediaResolver(root, media_dir, recursive=True)
    out = _Rows(folder)
    for f in files:
        for i, ln in enumerate(f.read_text().splitlines()):
            if not ln.strip():
                continue
            parts = [p.strip() for p in ln.split(",")]
            if len(parts) < 2:
                raise LabelFormatError(f"{f}:{i + 1}: expected '<name>,<elo>', got {ln!r}")
            out.add(parts[0], resolve(parts[0]), parts[1], None, i + 1, path=f)
    return out.labels()


_KONIQ_SETS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "validation": "validation",
    "test": "test",
}
_KONIQ_SCORES = "koniq10k_scores_and_distributions.csv"
_KONIQ_SETS_FILE = "koniq10k_distributions_sets.csv"


@_register(
    "koniq10k",
    task="iqa",
    mos_range=(1.0, 5.0),
    splits=("train", "training", "val", "validation", "test"),
)
def read_koniq10k(
    root: Path,
    split: str | None,
    labels: str | Sequence[str] = (_KONIQ_SCORES, _KONIQ_SETS_FILE),
    sets_file: str = _KONIQ_SETS_FILE,
    score_column: str = "MOS",
    media_dir: str | Sequence[str] = ("1024x768", "512x384", "images"),
    seed: int = 42,
) -> _Labels:
    """KonIQ-10k (Hosu et al. 2020): the website's `koniq10k_scores_and_distributions.csv` or the
    official split file `koniq10k_distributions_sets.csv`, whichever is found first.

    - `koniq10k_scores_and_distributions.csv`: image_name, c1..c5, c_total, MOS (1-5), SD (its std
      on 1-5), MOS_zscore (0-100). `score_column="MOS_zscore"` gives the 0-100 score (no std).
    - `koniq10k_distributions_sets.csv` (github.com/subpic/koniq, metadata/): image_name, c1..c5,
      c_total, MOS (1-100), SD (on 1-5), set (training / validation / test). Read alone, MOS is on
      1-100 and std is left out (SD is on the other scale).

    Splits: wherever the sets file is present, train/val/test are its `set` column (the official
    split); without it they come from `reference_split` over image_name (6:2:2, seed 42), with a
    warning. Images in `1024x768/` (or `512x384/`). Source: the koniq repository's metadata/ as
    read by IQA-PyTorch (scripts reading `koniq10k_distributions_sets.csv`: image name, MOS, SD,
    set) and loaders of `koniq10k_scores_and_distributions.csv` (`image_name`, `MOS`, `MOS_zscore`).
    """
    path = _first_existing(root, _as_list(labels))
    df = pd.read_csv(path)
    c_name = _col(df, "image_name", where=path)
    from_sets = _col(df, "set", required=False) is not None and _col(df, "MOS_zscore", required=False) is None
    c_mos = _col(df, score_column, where=path)
    zscore = str(c_mos).lower() == "mos_zscore"
    c_sd = None if zscore or from_sets else _col(df, "SD", required=False)
    if split not in ALL_SPLITS:
        want = _KONIQ_SETS.get(split, split)
        sets_path = path if from_sets else root / sets_file
        if sets_path.is_file():
            sets = df if from_sets else pd.read_csv(sets_path)
            which = dict(
                zip(
                    sets[_col(sets, "image_name", where=sets_path)].astype(str),
                    sets[_col(sets, "set", where=sets_path)].astype(str).str.strip().str.lower(),
                )
            )
        else:
            log.warning("%s not found: KonIQ-10k split %r by reference_split (6:2:2, seed %d)", sets_path, split, seed)
            short = {"training": "train", "validation": "val", "test": "test"}
            which = {n: _KONIQ_SETS[s] for n, s in reference_split(df[c_name].astype(str), seed=seed).items()}
            want = _KONIQ_SETS[short.get(want, want)]
        df = df[df[c_name].astype(str).map(which) == want]
    resolve = _MediaResolver(root, media_dir)
    sds = df[c_sd] if c_sd is not None else [None] * len(df)
    rows = _Rows(path)
    for r, n, m, sd in zip(_rownums(df), df[c_name], df[c_mos], sds):
        rows.add(str(n), resolve(str(n)), m, _std(sd), r)
    return rows.labels(mos_range=(0.0, 100.0) if zscore else (1.0, 100.0) if from_sets else None)


@_register("spaq", task="iqa", mos_range=(0.0, 100.0), splits=("train", "val", "test"))
def read_spaq(
    root: Path,
    split: str | None,
    labels: str = "Annotations/MOS and Image attribute scores.xlsx",
    csv_export: str | Sequence[str] = (
        "Annotations/MOS and Image attribute scores.csv",
        "Annotations/MOS_and_Image_attribute_scores.csv",
    ),
    media_dir: str | Sequence[str] = ("TestImage", "TestImage_resized", "images"),
    seed: int = 42,
) -> _Labels:
    """SPAQ (Fang et al. 2020): `Annotations/MOS and Image attribute scores.xlsx`.

    Columns "Image name", "MOS" (0-100, higher is better), then Brightness, Colorfulness, Contrast,
    Noisiness, Sharpness. The .xlsx is read with openpyxl (a dependency); a CSV export of that
    sheet (same columns) is read instead when present. Images in `TestImage/` (e.g. 00001.jpg).
    Splits train/val/test: `reference_split` over the image names (each photo is its own
    content; 6:2:2, seed 42). Source: IQA-PyTorch scripts/process_spaq.py and loaders reading
    `info['Image name']`, `info['MOS']`.
    """
    df, path = _read_sheet(root, labels, _as_list(csv_export))
    c_name, c_mos = _col(df, "Image name", "image_name", where=path), _col(df, "MOS", where=path)
    if split not in ALL_SPLITS:
        assign = reference_split(df[c_name].astype(str), seed=seed)
        df = df[df[c_name].astype(str).map(assign) == split]
    resolve = _MediaResolver(root, media_dir)
    rows = _Rows(path)
    for r, n, m in zip(_rownums(df), df[c_name], df[c_mos]):
        rows.add(str(n), resolve(str(n)), m, None, r)
    return rows.labels()


@_register("clive", task="iqa", mos_range=(0.0, 100.0), aliases={"live_challenge": None})
def read_clive(
    root: Path,
    split: str | None,
    names_file: str = "Data/AllImages_release.mat",
    mos_file: str = "Data/AllMOS_release.mat",
    std_file: str = "Data/AllStdDev_release.mat",
    media_dir: str | Sequence[str] = ("Images", "Images/trainingImages"),
    include_training_images: bool = False,
) -> _Labels:
    """LIVE In-the-Wild Image Quality Challenge (CLIVE, Ghadiyaram & Bovik 2016): MATLAB files in `Data/`.

    `AllImages_release.mat` (cell `AllImages_release`, 1169 names), `AllMOS_release.mat`
    (`AllMOS_release`, 1 x 1169, 0-100, higher is better), optional `AllStdDev_release.mat`.
    The first 7 entries are the training images shown to raters (`Images/trainingImages/`) and are
    dropped by the standard protocol (1162 images) unless `include_training_images`.
    Source: IQA-PyTorch scripts/process_livechallenge.py and loaders slicing `[7:1169]`.
    """
    names_path, mos_path = _require(root / names_file, root), _require(root / mos_file, root)
    names = _mat_strings(_mat_key(_loadmat(names_path), names_path, "AllImages_release"))
    mos = np.asarray(_mat_key(_loadmat(mos_path), mos_path, "AllMOS_release"), dtype=np.float64).reshape(-1)
    stds: list[float | None] = [None] * len(names)
    if std_file and (root / std_file).is_file():
        sd = np.asarray(_mat_key(_loadmat(root / std_file), root / std_file, "AllStdDev_release")).reshape(-1)
        stds = [_std(v) for v in sd]
    if not len(names) == len(mos) == len(stds):
        raise ValueError(f"{root / 'Data'}: {len(names)} names, {len(mos)} MOS, {len(stds)} std values")
    start = 0 if include_training_images else 7
    resolve = _MediaResolver(root, media_dir)
    items = [BenchmarkItem(n, resolve(n), float(m), s) for n, m, s in list(zip(names, mos, stds))[start:]]
    return _Labels(items, mos_path)


@_register("bid", task="iqa", mos_range=(0.0, 5.0))
def read_bid(
    root: Path,
    split: str | None,
    labels: str = "DatabaseGrades.xlsx",
    csv_export: str | Sequence[str] = ("DatabaseGrades.csv",),
    media_dir: str | Sequence[str] = ("ImageDatabase", ""),
) -> _Labels:
    """BID, Blurred Image Database (Ciancio et al. 2011): `DatabaseGrades.xlsx`, first sheet.

    Column 1 is the image number, column 2 the MOS (0-5, higher is better); a header row is
    expected. Number n is the file `DatabaseImage%04d.JPG` (a column 1 holding file names is used
    as is). A CSV export `DatabaseGrades.csv` (same columns) is read first; the .xlsx needs
    openpyxl. Source: public BID loaders (openpyxl cell(row, 1) / cell(row, 2), 586 images);
    column headers unconfirmed, so columns are taken by position.
    """
    df, path = _read_sheet(root, labels, _as_list(csv_export))
    df = _drop_empty(df, [df.columns[0], df.columns[1]], path)
    resolve = _MediaResolver(root, media_dir)
    rows = _Rows(path)
    for r, key, mos in zip(_rownums(df), df.iloc[:, 0], df.iloc[:, 1]):
        try:
            name = f"DatabaseImage{int(float(key)):04d}.JPG"
        except ValueError:
            name = str(key).strip()
        rows.add(name, resolve(name), mos, None, r)
    return rows.labels()


@_register("agiqa3k", task="iqa", mos_range=(0.0, 5.0))
def read_agiqa3k(
    root: Path,
    split: str | None,
    labels: str = "data.csv",
    score_column: str = "mos_quality",
    std_column: str | None = "std_quality",
    media_dir: str | Sequence[str] = ("images", "Images", "AGIQA-3K", "AGIQA-3k", ""),
) -> _Labels:
    """AGIQA-3K (Li et al. 2023): `data.csv` with name, prompt, adj1, adj2, style, mos_quality,
    std_quality, mos_align, std_align.

    Perceptual quality is `mos_quality` (0-5 scale assumed, higher is better); `score_column=
    "mos_align"` with `std_column="std_align"` gives text-image alignment instead. Images by `name`
    under `images/` (layouts vary; several folders are tried). Source: AGIQA-3K loaders reading
    these columns; the 0-5 range is the assumption (observed values lie inside it).
    """
    path = _require(root / labels, root)
    df = pd.read_csv(path)
    c_name, c_mos = _col(df, "name", where=path), _col(df, score_column, where=path)
    c_std = _col(df, std_column, required=False) if std_column else None
    resolve = _MediaResolver(root, media_dir)
    sds = df[c_std] if c_std is not None else [None] * len(df)
    rows = _Rows(path)
    for r, n, m, sd in zip(_rownums(df), df[c_name], df[c_mos], sds):
        rows.add(str(n), resolve(str(n)), m, _std(sd), r)
    return rows.labels()


# ----------------------------------------------------------------------------- generic adapters


def _parse_name_mos(path: Path) -> list[tuple[str, float, float | None, int]]:
    """Parse `name mos [std]` lines (whitespace- or comma-separated); '#' comments and one header line are skipped."""
    rows: list[tuple[str, float, float | None, int]] = []
    header_seen = False
    for i, raw in enumerate(path.read_text().splitlines()):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
        try:
            mos = float(parts[1])
        except (IndexError, ValueError):
            if not rows and not header_seen and len(parts) >= 2:
                header_seen = True
                continue
            raise LabelFormatError(f"{path} row {i + 1}: expected 'name mos [std]', got {raw!r}") from None
        rows.append((parts[0], mos, _std(parts[2]) if len(parts) > 2 else None, i + 1))
    return rows


def _name_mos_labels(
    root: Path,
    labels: str,
    media_dir: str | Sequence[str],
    mos_range: Sequence[float] | None,
    suffixes: Sequence[str] = ("",),
) -> _Labels:
    path = _require(root / labels, root)
    resolve = _MediaResolver(root, media_dir, suffixes)
    rows = _Rows(path)
    for n, m, s, line in _parse_name_mos(path):
        rows.add(n, resolve(n), m, s, line)
    rng = (float(mos_range[0]), float(mos_range[1])) if mos_range is not None else None
    return rows.labels(mos_range=rng)


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
    """The anchors' test label lists: one `name mos [std]` per line (spaces or commas).

    `name` is relative to `media_dir` (first existing match). `mos_range` defaults to the observed
    min/max; `lower_is_better=True` marks a DMOS list, flipped to higher-is-better within the range.
    """
    out = _name_mos_labels(root, labels, media_dir, mos_range)
    out.task = task
    return out


@_register("liu13", task="iqa", mos_range=None)
def read_liu13(
    root: Path,
    split: str | None,
    labels: str = "liu13_mos.txt",
    media_dir: str | Sequence[str] = ("images", ""),
    mos_range: Sequence[float] | None = None,
) -> _Labels:
    """Liu13 motion-deblurring quality set (Liu et al., SIGGRAPH Asia 2013): a `name mos [std]` list.

    The native release format could not be confirmed from public sources; this reads the anchors'
    `name mos [std]` list (default `liu13_mos.txt`, images under `images/`). MOS assumed
    higher-is-better; range is the observed min/max unless `mos_range` is given.
    """
    return _name_mos_labels(root, labels, media_dir, mos_range)


@_register("sriqa_bench", task="iqa", mos_range=None)
def read_sriqa_bench(
    root: Path,
    split: str | None,
    label_dir: str = "MOS",
    labels: str = "sriqa_bench_mos.txt",
    media_dir: str | Sequence[str] = ("images", ""),
    mos_range: Sequence[float] | None = None,
) -> _Labels:
    """SRIQA-Bench (super-resolution IQA, from the A-FINE work, Chen et al. CVPR 2025), as released.

    `MOS/<content>.txt`, one file per content, one `<image name>,<MOS>` line per rated image (comma
    or white space); the reference `<content>_Original.png` is one of the rated lines. Images live
    under `images/<method>/` and are found by name anywhere below `images/`. MOS is higher-is-
    better; the range is the observed min/max unless `mos_range` is given. Without a `MOS/`
    folder, the anchors' flat `name mos [std]` list (`labels`) is read instead.
    Source: the layout described in the dataset release (issue 12 of this project quotes it).
    """
    folder = root / label_dir
    rng = (float(mos_range[0]), float(mos_range[1])) if mos_range is not None else None
    if not folder.is_dir():
        if (root / labels).is_file():
            return _name_mos_labels(root, labels, media_dir, mos_range)
        note = f" (the dataset root {root} does not exist)" if not root.exists() else ""
        raise FileNotFoundError(f"expected label files {folder}/<content>.txt or {root / labels}; neither found{note}")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"expected label files {folder}/<content>.txt (folder is empty)")
    resolve = _MediaResolver(root, media_dir, recursive=True)
    out = _Rows(folder)
    for f in files:
        for i, ln in enumerate(f.read_text().splitlines()):
            if not ln.strip():
                continue
            parts = [p.strip() for p in ln.split(",")] if "," in ln else ln.split()
            if len(parts) < 2:
                raise LabelFormatError(f"{f} row {i + 1}: expected '<image name>,<MOS>', got {ln!r}")
            out.add(parts[0], resolve(parts[0]), parts[1], None, i + 1, path=f)
    return out.labels(mos_range=rng)


@_register("min19", task="iqa", mos_range=None)
def read_min19(
    root: Path,
    split: str | None,
    labels: str = "min19_mos.txt",
    media_dir: str | Sequence[str] = ("images", ""),
    mos_range: Sequence[float] | None = None,
) -> _Labels:
    """Min19 dehazing quality set (Min et al. 2019, dehazed-image quality): a `name mos [std]` list.

    Native format not confirmed from public sources; reads the anchors' `name mos [std]` list
    (default `min19_mos.txt`, images under `images/`), higher-is-better, observed range.
    """
    return _name_mos_labels(root, labels, media_dir, mos_range)


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


# ----------------------------------------------------------------------------- VQA adapters


@_register("konvid1k", task="vqa", mos_range=(1.0, 5.0))
def read_konvid1k(
    root: Path,
    split: str | None,
    labels: str | Sequence[str] = ("KoNViD_1k_attributes.csv", "KoNViD_1k_mos.csv"),
    media_dir: str | Sequence[str] = ("KoNViD_1k_videos", "videos", ""),
) -> _Labels:
    """KoNViD-1k (Hosu et al. 2017): `KoNViD_1k_attributes.csv` (flickr_id, ..., MOS, SD, ...) or
    `KoNViD_1k_mos.csv` (flickr_id, mos), whichever is found first (also in `KoNViD_1k_metadata/`).

    MOS on 1-5, higher is better. Videos are `<flickr_id>.mp4` in `KoNViD_1k_videos/`.
    Source: VSFA-style loaders (`info['flickr_id']`, `info['MOS']`) and KoNViD_1k_mos.csv readers.
    """
    cands = [c for n in _as_list(labels) for c in (n, f"KoNViD_1k_metadata/{n}")]
    path = _first_existing(root, cands)
    df = pd.read_csv(path)
    c_id, c_mos = _col(df, "flickr_id", where=path), _col(df, "MOS", where=path)
    c_sd = _col(df, "SD", required=False)
    resolve = _MediaResolver(root, media_dir, suffixes=(".mp4", ""))
    sds = df[c_sd] if c_sd is not None else [None] * len(df)
    rows = _Rows(path)
    for r, fid, m, sd in zip(_rownums(df), df[c_id], df[c_mos], sds):
        vid = str(int(fid)) if isinstance(fid, float | np.floating) and float(fid).is_integer() else str(fid)
        rows.add(vid, resolve(vid), m, _std(sd), r)
    return rows.labels()


@_register("live_vqc", task="vqa", mos_range=(0.0, 100.0))
def read_live_vqc(
    root: Path,
    split: str | None,
    labels: str = "data.mat",
    media_dir: str | Sequence[str] = ("Video", "videos", ""),
) -> _Labels:
    """LIVE-VQC (Sinno & Bovik 2018): `data.mat` with `video_list` (cell of names, e.g. A001.mp4) and
    `mos` (0-100, higher is better); videos in `Video/`.

    Source: loaders reading `loadmat('data.mat')['video_list']` and `['mos']`.
    """
    path = _require(root / labels, root)
    mat = _loadmat(path)
    names = _mat_strings(_mat_key(mat, path, "video_list"))
    mos = np.asarray(_mat_key(mat, path, "mos", "MOS"), dtype=np.float64).reshape(-1)
    if len(names) != len(mos):
        raise ValueError(f"{path}: {len(names)} names but {len(mos)} MOS values")
    resolve = _MediaResolver(root, media_dir)
    return _Labels([BenchmarkItem(n, resolve(n), float(m)) for n, m in zip(names, mos)], path)


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "1.0")


@_register(
    "lsvq",
    task="vqa",
    mos_range=(0.0, 100.0),
    splits=("train", "test", "test_1080p"),
    default_split="test",
    aliases={"lsvq_test": "test", "lsvq_1080p": "test_1080p"},
)
def read_lsvq(
    root: Path,
    split: str | None,
    media_dir: str | Sequence[str] = ("", "videos"),
) -> _Labels:
    """LSVQ (Ying et al. 2021): label CSVs with columns name, p1..p3, height, width, mos_p1..mos_p3,
    mos, frame_number, ...; `name` is the video path without extension (e.g. `ia-batch1/xyz`).

    Files per split, first found wins (every name tried is listed when none is found):
    - "test": `labels_test.csv`, `LSVQ_whole_test.csv` (the per-split copy most VQA code ships),
      else the rows of `labels_train_test.csv` with `is_test` true;
    - "test_1080p": `labels_test_1080p.csv` or `LSVQ_whole_test_1080p.csv` (no `is_test` column);
    - "train": `labels_train.csv`, `LSVQ_whole_train.csv`, else the non-test rows.
    MOS 0-100, higher is better. Videos at `<root>/<name>.mp4`. Source: the official release notes
    (github.com/baidut/PatchVQ) and VQA loaders reading `LSVQ_whole_{train,test,test_1080p}.csv`.
    """
    own = {
        "test": ["labels_test.csv", "LSVQ_whole_test.csv"],
        "train": ["labels_train.csv", "LSVQ_whole_train.csv"],
        "test_1080p": ["labels_test_1080p.csv", "LSVQ_whole_test_1080p.csv"],
    }.get(split or "", [])
    found = next((root / f for f in own if (root / f).is_file()), None)
    if found is not None:
        path = found
        df = pd.read_csv(path)
    elif split == "test_1080p":
        path = _first_existing(root, own)
        df = pd.read_csv(path)
    else:
        path = _first_existing(root, [*own, "labels_train_test.csv"])
        df = pd.read_csv(path)
        if split in ("test", "train"):
            is_test = df[_col(df, "is_test", where=path)].map(_truthy)
            df = df[is_test if split == "test" else ~is_test]
    c_name, c_mos = _col(df, "name", where=path), _col(df, "mos", where=path)
    resolve = _MediaResolver(root, media_dir, suffixes=(".mp4", ""))
    rows = _Rows(path)
    for r, n, m in zip(_rownums(df), df[c_name], df[c_mos]):
        rows.add(str(n), resolve(str(n)), m, None, r)
    return rows.labels()


@_register("youtube_ugc", task="vqa", mos_range=(1.0, 5.0))
def read_youtube_ugc(
    root: Path,
    split: str | None,
    labels: str = "original_videos_MOS_for_YouTube_UGC_dataset.xlsx",
    csv_export: str | Sequence[str] = ("original_videos_MOS_for_YouTube_UGC_dataset.csv",),
    sheet: str | int = "MOS",
    score_column: str = "MOS full",
    media_dir: str | Sequence[str] = ("original_videos", "videos", ""),
    suffixes: Sequence[str] = (".mkv", ".mp4", "_crf_10_ss_00_t_20.0.mp4"),
) -> _Labels:
    """YouTube-UGC (Wang et al. 2019): `original_videos_MOS_for_YouTube_UGC_dataset.xlsx`, sheet "MOS".

    Columns category, resolution, vid, "MOS full" (1-5, higher is better), per-chunk MOS, ...
    A CSV export of that sheet is read first; the .xlsx needs openpyxl. Videos are found by `vid`
    anywhere below the media folder, as the original `<vid>.mkv` or common transcodes
    (`<vid>.mp4`, `<vid>_crf_10_ss_00_t_20.0.mp4`). Rows with no MOS are dropped.
    Source: loaders reading `pd.read_excel(..., sheet_name='MOS')['vid']` / `['MOS full']`.
    """
    df, path = _read_sheet(root, labels, _as_list(csv_export), sheet=sheet)
    c_vid, c_mos = _col(df, "vid", where=path), _col(df, score_column, where=path)
    df = _drop_empty(df, [c_vid, c_mos], path)
    resolve = _MediaResolver(root, media_dir, suffixes=suffixes, recursive=True)
    rows = _Rows(path)
    for r, v, m in zip(_rownums(df), df[c_vid], df[c_mos]):
        rows.add(str(v), resolve(str(v)), m, None, r)
    return rows.labels()


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
    **options: Any,
) -> Benchmark:
    """Load benchmark `name` from `root` with its registered adapter (or `adapter`, a BENCHMARKS key).

    `split`: None uses the adapter's default (all items for most). `options` go to the adapter
    (see `BENCHMARKS[key].options()` and its docstring). Bad rows (media missing when
    `check_media`, MOS not a number or outside the adapter's fixed range) raise, naming the label
    file and row, unless `on_bad_sample="skip"` (`skip_missing=True` is the older spelling): then
    they are dropped, logged and kept in `Benchmark.rejected`. `limit` keeps the first N items.
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
    if split not in ALL_SPLITS and split not in spec.splits:
        accepted = ["all", *spec.splits] if spec.splits else ["all (no splits)"]
        raise ValueError(f"{where}: unknown split {split!r}; accepted: {accepted}")
    root = Path(root).expanduser()
    try:
        labels = spec.read(root, split, **options)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{where}: {err}") from err
    except LabelFormatError as err:
        raise LabelFormatError(f"{where}: {err}") from err
    items = labels.items
    rejected: list[Rejected] = list(labels.bad)
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
        items = [BenchmarkItem(it.id, it.media, lo + hi - it.mos, it.std, it.source) for it in items]

    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        warnings.warn(f"{where}: {len(ids) - len(set(ids))} duplicate id(s) in {labels.label_file}", stacklevel=2)
    if limit is not None:
        items = items[:limit]
    return Benchmark(
        name=name,
        items=items,
        mos_range=(float(mos_range[0]), float(mos_range[1])),
        task=labels.task or spec.task,
        adapter=key,
        split=split,
        label_file=labels.label_file,
        flipped=bool(lower_is_better),
        skipped=[r.id for r in rejected],
        rejected=rejected,
    )


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
