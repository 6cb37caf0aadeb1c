"""Shared label-file readers of the adapters: required files, media resolution, columns, sheets,
MATLAB files, the generic `name mos [std]` list and the reference-image split.
"""

from __future__ import annotations

import io
import math
import os
import random
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prresq.data.benchmarks.registry import LabelFormatError, Rejected, _Labels, _rownums, _Rows, log
from prresq.data.label_checks import category, read_label_text

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
            return _read_csv(root / c, header=header), root / c
    path = _first_existing(root, [xlsx, *csv])
    try:
        import openpyxl  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"{path} is an Excel file and reading it needs openpyxl (pip install openpyxl); "
            f"or export that sheet ({sheet!r}) to CSV with the same columns at {root / csv[0]}"
        ) from err
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        return pd.read_excel(path, sheet_name=sheet, header=header), path
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, OSError, EOFError) as err:
        raise LabelFormatError(
            f"{path}: not a readable .xlsx workbook with a sheet {sheet!r} ({type(err).__name__}: {err}); a truncated "
            f"or damaged download? Copy it again, or export that sheet to CSV at {root / csv[0]}"
        ) from None


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """A CSV label file read as UTF-8 text; an undecodable, empty or ragged file names the file (and line)."""
    text = read_label_text(path, LabelFormatError)
    try:
        return pd.read_csv(io.StringIO(text), **kwargs)
    except pd.errors.EmptyDataError:
        raise LabelFormatError(f"{path}: empty label file (no header row)") from None
    except pd.errors.ParserError as err:
        raise LabelFormatError(f"{path}: not a readable CSV table: {err}") from None


def _blank_cells(df: pd.DataFrame, columns: Mapping[str, Any], rows: _Rows, path: Path) -> pd.DataFrame:
    """Rows with an empty cell in a required column (`{what: column}`), as a trailing `,,,` line of a
    CSV or a blank row of a sheet leaves them, become bad rows of `rows` naming the row; the rest is returned."""
    cols = list(columns.values())
    empty = df[cols].isna() | df[cols].astype(object).map(lambda v: isinstance(v, str) and not v.strip())
    blank = empty.any(axis=1)
    for idx, r in zip(df.index[blank], _rownums(df[blank])):
        missing = [what for what, c in columns.items() if empty.at[idx, c]]
        reason = "an empty row" if len(missing) == len(columns) else f"no {' and no '.join(missing)} (empty cell)"
        rows.bad.append(Rejected("", Path(""), math.nan, f"{path} row {r}: {reason}"))
    return df[~blank]


def _categories(
    df: pd.DataFrame, column: Any, accepted: Mapping[str, Any], path: Path, header_rows: int = 1
) -> list[Any]:
    """Every value of a categorical column mapped through `accepted` (lower-case spellings); any other value
    raises `LabelFormatError` naming the file, the row, the value and the accepted spellings."""
    return [
        category(v, accepted, f"{path} row {r}", f"column {column!r}", LabelFormatError)
        for r, v in zip(_rownums(df, header_rows), df[column])
    ]


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

    try:
        return loadmat(path)
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise LabelFormatError(f"{path}: not a readable MATLAB file ({type(err).__name__}: {err})") from None


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


_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# The anchors' label-list line formats, by the number of names before the MOS and the separator.
LIST_FORMATS = {
    (1, False): "name mos [std]",
    (2, False): "ref name mos [std]",
    (1, True): "path, mos",
}


@dataclass(frozen=True)
class ListRow:
    """One data row of a label list: the rated image `name`, its `reference` ("" when the list names
    none), the MOS as written (a bad one is reported by `_Rows.add`), the std and the 1-based line."""

    name: str
    mos: str
    std: float | None
    line: int
    reference: str = ""


def _is_number(token: str) -> bool:
    return _NUMBER_RE.fullmatch(token) is not None


def _split_line(line: str) -> tuple[list[str], bool]:
    comma = "," in line
    return ([p.strip() for p in line.split(",")] if comma else line.split()), comma


def read_label_list(path: Path) -> tuple[list[ListRow], list[tuple[str, int, str]], str]:
    """Parse one of the anchors' label lists -> (rows, bad rows as (name, line, reason), format).

    Formats (`LIST_FORMATS`, one per file, fixed by its first data row): `name mos [std]`
    (VisualQuality-R1 `*_test_all.txt`, PreResQ-R1 `GT_*.txt`), `ref name mos [std]` (the KADID-10K
    lists and split files, Deblur / Liu13, SRIQA-Bench, dehaze / Min19: the rated image is the second
    name, the reference is kept) and `path, mos` (PreResQ-R1's VQA lists; comma, optional space).
    Blank lines and `#` comments are skipped; a line is a header only when it is the first line and
    holds no number at all. Every other line is a data row: a row that does not fit the file's format
    (another format, a MOS that is not a number, extra columns) is returned as a bad row with its
    reason, never dropped silently. A name listed twice with two different MOS makes every row of it
    bad; a name listed twice with the same MOS keeps the first row (logged).
    """
    parsed: list[ListRow] = []
    bad: list[tuple[str, int, str]] = []
    fmt: tuple[int, bool] | None = None
    fmt_line = 0
    seen_line = False
    text = read_label_text(path, LabelFormatError)
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts, comma = _split_line(line)
        numeric = [_is_number(p) for p in parts]
        if not any(numeric) and not seen_line:
            seen_line = True
            log.info("%s row %d: header %r", path, i, raw)
            continue
        seen_line = True
        names = numeric.index(True) if any(numeric) else len(parts)
        shape = (names, comma)
        fits = shape in LIST_FORMATS and names < len(parts) <= names + (1 if comma else 2)
        if fits and len(parts) == names + 2 and not numeric[names + 1]:
            fits = False
        if fmt is None:
            if not fits:
                raise LabelFormatError(
                    f"{path} row {i}: expected one of the formats {sorted(LIST_FORMATS.values())}, got {raw!r}"
                )
            fmt, fmt_line = shape, i
        n_names = fmt[0]
        name = parts[min(names, n_names) - 1] if names else parts[0]
        if shape != fmt or not fits:
            if fits:
                why = (
                    f"a {LIST_FORMATS[shape]!r} row in a {LIST_FORMATS[fmt]!r} list (row {fmt_line}): two line formats"
                )
            elif len(parts) > n_names and not _is_number(parts[n_names]):
                why = f"MOS {parts[n_names]!r} of {name!r} is not a number"
            else:
                why = f"expected {LIST_FORMATS[fmt]!r}, got {raw!r}"
            bad.append((name, i, f"{path} row {i}: {why}"))
            continue
        std = _std(parts[names + 1]) if len(parts) > names + 1 else None
        parsed.append(ListRow(parts[names - 1], parts[names], std, i, parts[0] if names == 2 else ""))
    by_name: dict[str, list[ListRow]] = {}
    for r in parsed:
        by_name.setdefault(r.name, []).append(r)
    rows: list[ListRow] = []
    repeated = 0
    for r in parsed:
        group = by_name[r.name]
        if len({float(g.mos) for g in group}) > 1:
            lines = ", ".join(f"row {g.line} ({g.mos})" for g in group)
            bad.append((r.name, r.line, f"{path} row {r.line}: {r.name!r} is listed with two different MOS: {lines}"))
        elif r is group[0]:
            rows.append(r)
        else:
            repeated += 1
    if repeated:
        log.warning("%s: %d repeated row(s) (same name, same MOS) read once", path, repeated)
    return rows, bad, LIST_FORMATS[fmt] if fmt is not None else ""


def _name_mos_labels(
    root: Path,
    labels: str,
    media_dir: str | Sequence[str],
    mos_range: Sequence[float] | None,
    suffixes: Sequence[str] = ("",),
) -> _Labels:
    """A label list (`read_label_list`: any of the anchors' line formats) -> items; bad rows are listed."""
    path = _require(root / labels, root)
    resolve = _MediaResolver(root, media_dir, suffixes)
    rows = _Rows(path)
    parsed, bad, _ = read_label_list(path)
    for r in parsed:
        rows.add(r.name, resolve(r.name), r.mos, r.std, r.line, reference=r.reference)
    for name, _, reason in bad:
        rows.bad.append(Rejected(name, resolve(name) if name else path, math.nan, reason))
    rng = (float(mos_range[0]), float(mos_range[1])) if mos_range is not None else None
    return rows.labels(mos_range=rng)
