"""Image loading for the data flows: PIL, 8-bit RGB from any PIL mode, with a clear error for a bad file.

Used by `prresq.data.dataflow.ImageFlow`; the collator adds the JSONL file and line to the
message (`prresq.data.collate`). Video decoding lives in `prresq.data.video`.

Every mode becomes the RGB image a viewer shows, not what `Image.convert("RGB")` gives:

- `I;16*` (16-bit grey, e.g. medical or scientific PNG/TIFF): divided by 257, so 0..65535 -> 0..255
  (`convert` clips every value above 255 and a 16-bit image turns white).
- `I` (32-bit integer): values up to 255 as they are, up to 65535 as 16-bit, wider ranges min-max scaled.
- `F` (32-bit float): [0, 1] scaled by 255, [0, 255] as is, up to 65535 as 16-bit, else min-max scaled.
- Transparency (`RGBA`, `LA`, `PA`, `P` with a `transparency` entry): composited over white.
- `CMYK`, `YCbCr`, `1`, `L`, `P`: PIL's own conversion; JPEG EXIF orientation is applied first.

An image above `max_pixels` (width x height, read from the header before decoding) is refused with a
`DataError` naming the file, like any unreadable sample, so `on_bad_sample=skip` drops it. The
default (100 megapixels) admits an 8000 x 8000 photo (64 MP) and refuses a 14000 x 14000 one (196 MP).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from prresq.data.records import DataError

DEFAULT_MAX_PIXELS = 100_000_000
_PIL_LIMIT_LOCK = threading.Lock()
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


@contextmanager
def _pil_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """PIL's own decompression-bomb guard (it raises at twice `Image.MAX_IMAGE_PIXELS`) set to our limit."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _scaled_to_8bit(values: np.ndarray, is_float: bool) -> np.ndarray:
    """uint8 grey of an integer or float array (the `I` / `F` rules of the module docstring)."""
    finite = values[np.isfinite(values)] if is_float else values
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if is_float and lo >= 0.0 and hi <= 1.0:
        out = values * 255.0
    elif lo >= 0 and hi <= 255:
        out = values.astype(np.float64)
    elif lo >= 0 and hi <= 65535:
        out = values / 257.0
    else:
        out = (values - lo) * (255.0 / (hi - lo))
    return np.clip(np.nan_to_num(np.rint(out)), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """The 8-bit RGB image a viewer shows for `im`, whatever its PIL mode (module docstring)."""
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(im, dtype=np.uint32)
        return Image.fromarray(((grey * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        grey = _scaled_to_8bit(np.asarray(im), is_float=mode == "F")
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, verify (cheap structural check) and decode an image as RGB; `DataError` when it is unreadable.

    `max_pixels` (None: no limit) bounds width x height before anything is decoded.
    """
    path = Path(path)
    try:
        with _pil_pixel_limit(max_pixels):
            with Image.open(path) as probe:
                probe.verify()
            with Image.open(path) as im:
                width, height = im.size
                if max_pixels is not None and width * height > max_pixels:
                    raise DataError(
                        f"{path}: {width}x{height} = {width * height} pixels is above the limit "
                        f"max_pixels={max_pixels} (dataflow.max_image_pixels)"
                    )
                im.load()
                return to_rgb(im)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image above the pixel limit max_pixels={max_pixels}: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or unreadable image ({type(exc).__name__}: {exc})") from exc
