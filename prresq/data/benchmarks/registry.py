"""Benchmark types and the adapter registry: `BenchmarkItem`, `Benchmark`, the label errors, `Adapter`,
`BENCHMARKS` and the `_register` decorator the IQA / VQA / generic adapter modules use.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

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
    reference: str = ""  # the reference (pristine) image the item was made from, where the labels name it


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
    merged_duplicates: int = 0  # rows that repeat an earlier row's id with equal MOS (merged into it)

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
    media_root: Path | None = None  # the folder media must stay in (default: the dataset root)


def _name(value: Any) -> str:
    """A name cell as text: '' for an empty cell (None, NaN from pandas), else `str(value)`."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return ""
    return str(value)


class _Rows:
    """Collects a reader's items; a row without a name, or whose MOS is not a finite number, becomes
    a bad row naming its source."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[BenchmarkItem] = []
        self.bad: list[Rejected] = []

    def add(
        self,
        id: str,
        media: Path,
        mos: Any,
        std: float | None = None,
        row: Any = None,
        path: Path | None = None,
        reference: str = "",
    ) -> None:
        source = f"{path or self.path} row {row}" if row is not None else str(path or self.path)
        try:
            value = float(mos.strip() if isinstance(mos, str) else mos)
        except (TypeError, ValueError):
            value = math.nan
        if not _name(id):
            what = "an empty row (no name, no MOS)" if not math.isfinite(value) else f"no name (MOS {mos!r})"
            self.bad.append(Rejected("", media, value, f"{source}: {what}"))
            return
        if not math.isfinite(value):
            self.bad.append(Rejected(id, media, value, f"{source}: MOS {mos!r} of {id!r} is not a number"))
            return
        self.items.append(BenchmarkItem(id, media, value, std, source, reference))

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
