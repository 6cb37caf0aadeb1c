"""Image loading for the data flows: PIL, RGB, with a clear error for a corrupt file.

Used by `prresq.data.dataflow.ImageFlow`; the collator adds the JSONL file and line to the
message (`prresq.data.collate`). Video decoding lives in `prresq.data.video`.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from prresq.data.records import DataError


def load_image(path: str | Path) -> Image.Image:
    """Open, verify (cheap structural check) and decode an image as RGB; `DataError` when it is unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as probe:
            probe.verify()
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or unreadable image ({type(exc).__name__}: {exc})") from exc
