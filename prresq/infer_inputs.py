"""What `python -m prresq.infer input=...` scores: the media paths a folder, a file, a list or a JSONL names.

A folder: every file below it with an image or video extension, sorted. A file: one image or video, a
text list of paths (blank lines and `#` comments ignored) or a JSONL whose rows name the file in `path`,
`media`, `image` or `video` (a list: its first entry); recognised by extension, else by content
(`input_kind`). Relative paths in a list or JSONL are relative to that file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from prresq.data.records import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})
JSONL_KEYS = ("path", "media", "image", "video")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _jsonl_paths(path: Path) -> list[str]:
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"input={path}: a JSONL must be UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
        value = next((row[k] for k in JSONL_KEYS if isinstance(row, dict) and row.get(k)), None)
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, str):
            raise DataError(f"{path}:{lineno}: no media path in any of {list(JSONL_KEYS)}")
        out.append(value)
    return out


LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
SNIFF_BYTES = 8192


def _is_image_file(path: Path) -> bool:
    """Whether PIL recognises the file's header (an image without a known extension)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


def input_kind(src: Path) -> str:
    """`media`, `jsonl` or `list` for an input file: by extension, else by content; `DataError` otherwise.

    A known image or video extension is one media file, `.jsonl` a JSONL, `.txt`/`.lst`/`.list` a text
    list. Any other file: an image PIL recognises is one media file; UTF-8 text whose first entry
    starts with `{` is a JSONL, other UTF-8 text a list; anything else is refused.
    """
    suffix = src.suffix.lower()
    if suffix in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
        return "media"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix in LIST_EXTENSIONS:
        return "list"
    if _is_image_file(src):
        return "media"
    with src.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    try:
        text = head.decode("utf-8") if b"\0" not in head else None
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is still text
        text = head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
    if text is None:
        raise DataError(
            f"input={src}: neither an image or video (extensions {sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)}) "
            "nor a text list of paths or a .jsonl: it is binary and PIL does not recognise it as an image"
        )
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
    return "jsonl" if first.startswith("{") else "list"


def _text_lines(src: Path) -> list[str]:
    try:
        text = src.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"input={src}: a list of paths must be UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = (ln.strip() for ln in text.splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def list_inputs(source: str | Path) -> list[str]:
    """The media paths named by a folder (recursive, by extension), one media file, a text list or a JSONL.

    In order, deduplicated; how a file is recognised: `input_kind`.
    """
    src = Path(source).expanduser()
    if src.is_dir():
        exts = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
        return sorted(str(f) for f in src.rglob("*") if f.is_file() and f.suffix.lower() in exts)
    if not src.is_file():
        raise FileNotFoundError(
            f"input={source}: no such folder or file (a folder, an image or video, a .txt list or a .jsonl)"
        )
    kind = input_kind(src)
    if kind == "media":
        return [str(src)]
    names = _jsonl_paths(src) if kind == "jsonl" else _text_lines(src)
    paths = [n if Path(n).expanduser().is_absolute() else str(src.parent / n) for n in names]
    return list(dict.fromkeys(paths))
