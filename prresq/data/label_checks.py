"""Checks that every label reader shares (the JSONL records of `prresq.data.records` and the native
label files of `prresq.data.benchmarks`), so that one rule holds on both paths:

- `read_label_text`: a label file is UTF-8 text (a UTF-8 byte-order mark is fine); a Latin-1,
  UTF-16 or binary file is an error naming the file and the first line that is not UTF-8.
- `category`: a categorical value (a split column, a conversation role) is one of its documented
  spellings, compared case-insensitively; anything else is an error naming the value and the
  accepted spellings, never read as "anything else means X". `answer_value` reads the MOS turn of
  a record's `conversations` with it (roles human / user / system / gpt / assistant).
- `find_duplicates`: rows that share an id and agree (same MOS, same media) are merged into the
  first and counted; rows that share an id and disagree are a conflict naming every row.
- `leaves_root`: a media path that is absolute or climbs out (`..`) of the dataset root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_label_text(path: Path, error: type[Exception] = ValueError) -> str:
    """The text of a label file decoded as UTF-8 (BOM stripped); else `error` naming the file and line."""
    data = Path(path).read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(
            f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); label files are read as UTF-8: save it as UTF-8"
        )
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise error(
            f"{path} line {line}: binary data (a NUL byte), not a UTF-8 text label file (a UTF-16 file without "
            "byte-order mark, or not a label file at all)"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise error(
            f"{path} line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}; a Latin-1 or Windows-1252 file?): "
            "label files are read as UTF-8: save it as UTF-8"
        ) from None


def _cell_text(value: Any) -> str:
    """A cell as stripped text; None and NaN (an empty spreadsheet cell) are ''."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def category(value: Any, accepted: Mapping[str, T], where: str, column: str, error: type[Exception] = ValueError) -> T:
    """`accepted[value]` compared case-insensitively (keys in lower case); else `error` naming `where`
    (file and row), the column, the value and the accepted spellings."""
    key = _cell_text(value).lower()
    if key in accepted:
        return accepted[key]
    shown = "missing or empty" if not key else repr(value)
    raise error(
        f"{where}: {column} is {shown}; accepted values (case-insensitive): {', '.join(accepted)}. "
        "A value outside these is not read as any of them"
    )


# conversation roles of a JSONL record ("from"): True for the answer turns, whose value is the MOS
CONVERSATION_ROLES = {"human": False, "user": False, "system": False, "gpt": True, "assistant": True}


def answer_value(turns: Any) -> Any:
    """The `value` of the last answer turn (`from` gpt / assistant, case-insensitive) of a record's
    `conversations`; None when there is none. A turn of any other role raises ValueError naming it."""
    if not isinstance(turns, list):
        return None
    value = None
    for turn in turns:
        if not isinstance(turn, dict):
            raise ValueError(f"conversation turn {turn!r} is not an object")
        if category(turn.get("from"), CONVERSATION_ROLES, "conversations", "a turn's 'from'"):
            value = turn.get("value")
    return value


@dataclass
class Duplicates:
    """`keep`: indices of the rows to keep (each id's first row); `merged`: one line per id whose
    repeated rows agree (merged into the first); `conflicts`: one line per id whose rows disagree."""

    keep: list[int] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    merged_rows: int = 0
    conflicts: list[str] = field(default_factory=list)


def find_duplicates(
    ids: Sequence[str], mos: Sequence[float], media: Sequence[Path], sources: Sequence[str]
) -> Duplicates:
    """Group rows by id: an id on several rows with the same MOS and media is merged (counted), one
    whose rows give different MOS or media is a conflict naming every row with its MOS."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(ids):
        groups.setdefault(key, []).append(i)
    out = Duplicates()
    for key, rows in groups.items():
        out.keep.append(rows[0])
        if len(rows) == 1:
            continue
        same_mos, same_media = len({mos[i] for i in rows}) == 1, len({Path(media[i]) for i in rows}) == 1
        if same_mos and same_media:
            out.merged.append(f"{key!r} ({', '.join(sources[i] for i in rows)}: MOS {mos[rows[0]]:g})")
            out.merged_rows += len(rows) - 1
        elif not same_mos:
            listed = "; ".join(f"{sources[i]}: MOS {mos[i]:g}" for i in rows)
            out.conflicts.append(f"{key!r} is labelled {len(rows)} times with different MOS: {listed}")
        else:
            listed = "; ".join(f"{sources[i]}: {media[i]}" for i in rows)
            out.conflicts.append(f"{key!r} is labelled {len(rows)} times with different media: {listed}")
    out.keep.sort()
    return out


def leaves_root(media: Path, root: Path) -> bool:
    """Whether `media` lies outside `root` by its path alone (absolute elsewhere, or `..` climbing out).

    Lexical on purpose: a symlinked folder inside the root (images on another disk) stays inside.
    """
    base = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.abspath(media))
    return path != base and not path.startswith(base.rstrip(os.sep) + os.sep)
