"""Real reference photos that ship inside installed wheels (no download).

The synthetic IQA generator (`prresq.data.synthetic`) distorts crops of these photos. Sources:
scikit-image's `skimage.data` (colour photos plus a few grey-scale ones), scikit-learn's
`load_sample_images` files (china, flower) and matplotlib's bundled `grace_hopper.jpg`. Grey-scale
photos are returned as RGB with three equal channels (`is_grayscale` tells them apart so that
colour-only distortions can skip them).

    python -m prresq.data.photos       # list the photos found, with their sizes
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MIN_PHOTOS = 10


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _skimage_stereo_left() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]  # only the left view: the right one is a near duplicate


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        # The file `sklearn.datasets.load_sample_images` reads, opened directly: importing sklearn takes seconds.
        spec = importlib.util.find_spec("sklearn")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("scikit-learn is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images" / filename
        return np.asarray(Image.open(path).convert("RGB"))

    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook

        with cbook.get_sample_data(filename) as f:
            return np.asarray(Image.open(f).convert("RGB"))

    return load


# name -> loader, in the (deterministic) order `reference_photos` returns them.
SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "rocket": _skimage("rocket"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "motorcycle": _skimage_stereo_left,
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
    "camera": _skimage("camera"),
    "coins": _skimage("coins"),
    "moon": _skimage("moon"),
    "grass": _skimage("grass"),
}


def _to_rgb(array: np.ndarray) -> Image.Image:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array[..., :3])).convert("RGB")


def is_grayscale(image: Image.Image) -> bool:
    """True when the three channels are equal (a grey-scale photo stored as RGB)."""
    a = np.asarray(image)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def reference_photos(names: list[str] | None = None, min_count: int = MIN_PHOTOS) -> dict[str, Image.Image]:
    """Load the bundled photos as RGB images, in `SOURCES` order; a missing one is skipped with a warning."""
    wanted = list(SOURCES) if names is None else list(names)
    unknown = [n for n in wanted if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown reference photos {unknown}; known: {list(SOURCES)}")
    photos: dict[str, Image.Image] = {}
    for name in wanted:
        try:
            photos[name] = _to_rgb(SOURCES[name]())
        except Exception as exc:  # a wheel without its data files, an optional loader missing, ...
            warnings.warn(f"reference photo {name!r} unavailable, skipped: {exc}", stacklevel=2)
    if len(photos) < min_count:
        raise RuntimeError(
            f"only {len(photos)} reference photos could be loaded ({sorted(photos)}), {min_count} needed; "
            "reinstall scikit-image, scikit-learn and matplotlib with their bundled data"
        )
    return photos


if __name__ == "__main__":
    for n, im in reference_photos().items():
        print(f"{n:22s} {im.width}x{im.height}{'  (grey)' if is_grayscale(im) else ''}")
