"""A KADID-style synthetic IQA dataset built from the bundled reference photos (seconds on a CPU).

Each reference photo (`prresq.data.photos`) gives `crops_per_photo` random square crops (position
and scale drawn from the seed; flat crops are redrawn), each distorted by every requested type at
`levels` severities, all with PIL/numpy.

MOS model (documented, deterministic): the score range [1, 5] is cut into `levels` equal bands,
level 1 on top. A distorted image sits inside its level's band at a position given by a
full-reference measure, SSIM against its undistorted crop (mean over the RGB channels, 7x7
uniform window, computed with numpy/scipy)::

    w   = 4 / levels                                   # band width
    MOS = 5 - w * (level - 1) - w * (m + (1 - 2m) * (1 - clip(SSIM, 0, 1)))     with margin m = 0.05

Why this model: the level term makes MOS *strictly* decreasing in level within every (reference,
distortion) group and spreads the scores over the whole range, whatever the distortion (the
bands never overlap, so a non-monotone SSIM cannot break the order); the SSIM term orders
images of the same level across crops and types by how much they actually changed, so MOS
are not just five values. SSIM rather than MS-SSIM: MS-SSIM needs crops larger than 160 px
and a torch round trip, SSIM runs on 112 px crops in well under a millisecond per image.
Colour-only distortions (`saturation`) skip grey-scale references, where they change nothing.

Photos are split BY REFERENCE PHOTO (seeded), so no test photo is ever seen in training:
`--prior-photos N` first takes N photos out of the pool for a separate `prior` split (the
"prior knowledge" warm-up set), the rest is split train:val:test = 6:2:2.

K-fold by photo (`--num-folds F`, F >= 3): the non-prior photos, in the same seeded order, are cut
into F groups G_0..G_{F-1} (sizes differ by at most one). Fold f tests on G_{F-1-f}, validates on
G_{F-2-f} (indices mod F) and trains on the rest, so across the F folds every non-prior photo is a
test photo exactly once and a validation photo exactly once; prior photos are in no fold. When the
pool divides into F groups of the 6:2:2 sizes (the default: 10 photos, F = 5), fold 0 IS the
6:2:2 split. Every fold is written at once under `DIR/folds<F>/fold<f>/{train,val,test}.jsonl`
(the images and `prior.jsonl` are shared), so runs on different folds share one cached set.

    python -m prresq.data.synthetic --out .cache/data/synthetic_iqa           # 112 px, white_noise, 40 crops
    python -m prresq.data.synthetic --out DIR --types all --crops-per-photo 4 --prior-photos 3
    python -m prresq.data.synthetic --out DIR --prior-photos 5 --num-folds 5   # + DIR/folds5/fold{0..4}/

Output: `DIR/images/<photo>/<id>.png`, `DIR/{train,val,test[,prior]}.jsonl` (the 6:2:2 split, plus
`DIR/folds<F>/fold<f>/{train,val,test}.jsonl` with `--num-folds`) in the anchors' row
format (plus `reference`, `distortion`, `level`, `crop`, `ssim`), and `DIR/manifest.json` with
the options: rerunning with the same options is a no-op. The MOS bands, SSIM, splits and folds by
photo, the cache, the lock and the CLI are shared with the VQA set (`prresq.data.synthetic_set`).
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from scipy import ndimage

from prresq.data.photos import is_grayscale
from prresq.data.synthetic_set import geom, level_mos, run_cli, seed_key, set_options, ssim_map, write_set

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

Distortion = Callable[[Image.Image, float, np.random.Generator], Image.Image]


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)


def _img(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def gaussian_blur(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=geom(0.6, 4.0, s)))


def motion_blur(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    length = int(round(3 + 14 * s)) | 1  # odd box length 3 .. 17
    axis = int(rng.integers(0, 2))  # horizontal or vertical camera shake
    return _img(ndimage.uniform_filter1d(_arr(img), size=length, axis=axis, mode="reflect"))


def white_noise(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    sigma = geom(4.0, 50.0, s)
    return _img(_arr(img) + rng.standard_normal((img.height, img.width, 3), dtype=np.float32) * np.float32(sigma))


def impulse_noise(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    p = geom(0.01, 0.2, s)
    a = np.asarray(img).copy()
    u = rng.random((img.height, img.width))
    a[u < p / 2] = 0
    a[(u >= p / 2) & (u < p)] = 255
    return Image.fromarray(a)


def jpeg(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=max(1, int(round(geom(50.0, 3.0, s)))))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def saturation(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Color(img).enhance(0.7 * (1.0 - s))


def contrast(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(geom(0.7, 0.15, s))


def brightness(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(geom(0.8, 0.2, s))


def pixelate(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    block = geom(2.0, 10.0, s)
    small = (max(1, round(img.width / block)), max(1, round(img.height / block)))
    return img.resize(small, Image.Resampling.BOX).resize(img.size, Image.Resampling.NEAREST)


def quantize(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    colors = max(2, int(round(geom(48.0, 3.0, s))))
    return img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")


def downsample(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    f = geom(1.5, 6.0, s)
    small = (max(1, round(img.width / f)), max(1, round(img.height / f)))
    return img.resize(small, Image.Resampling.BICUBIC).resize(img.size, Image.Resampling.BICUBIC)


def sharpen(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.UnsharpMask(radius=2, percent=int(geom(120.0, 900.0, s)), threshold=0))


DISTORTIONS: dict[str, Distortion] = {
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "white_noise": white_noise,
    "impulse_noise": impulse_noise,
    "jpeg": jpeg,
    "saturation": saturation,
    "contrast": contrast,
    "brightness": brightness,
    "pixelate": pixelate,
    "quantize": quantize,
    "downsample": downsample,
    "sharpen": sharpen,
}
COLOR_ONLY = frozenset({"saturation"})


def ssim(reference: np.ndarray, distorted: np.ndarray, window: int = 7) -> np.ndarray:
    """SSIM of each image in `distorted` [N, H, W, C] against `reference` [H, W, C] (uint8 range).

    scikit-image's `structural_similarity` defaults (uniform 7x7 window, K1 = 0.01, K2 = 0.03,
    sample covariance, mean over the valid interior and the channels), for N images at once.
    """
    s = ssim_map(reference.astype(np.float32)[None], distorted.astype(np.float32), window)
    pad = window // 2
    return s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3), dtype=np.float64)


def distort_levels(crop: Image.Image, dtype: str, levels: int, key: tuple[Any, ...]) -> list[tuple[Image.Image, float]]:
    """The crop distorted by `dtype` at levels 1..`levels` (seeded by `key`), each with its SSIM to the crop."""
    fn = DISTORTIONS[dtype]
    imgs = [
        fn(crop, (lv - 1) / (levels - 1), np.random.default_rng(seed_key(*key, dtype, lv)))
        for lv in range(1, levels + 1)
    ]
    sims = ssim(np.asarray(crop), np.stack([np.asarray(im) for im in imgs]))
    return [(im, float(sim)) for im, sim in zip(imgs, sims)]


def random_crops(photo: Image.Image, name: str, n: int, size: int, seed: int) -> list[Image.Image]:
    """`n` square crops resized to `size` (side drawn in [size, 2 size], position uniform; flat crops redrawn)."""
    if min(photo.size) < size:
        f = size / min(photo.size)
        photo = photo.resize((max(size, round(photo.width * f)), max(size, round(photo.height * f))), Image.LANCZOS)
    rng = np.random.default_rng(seed_key(seed, name, "crops"))
    w, h = photo.size
    crops = []
    for _ in range(n):
        best, best_std = None, -1.0
        for _try in range(25):
            side = int(rng.integers(size, min(2 * size, w, h) + 1))
            x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = photo.crop((x0, y0, x0 + side, y0 + side))
            std = float(np.asarray(crop.convert("L"), dtype=np.float32).std())
            if std > best_std:
                best, best_std = crop, std
            if std >= 12.0:  # enough texture for every distortion to be visible
                break
        assert best is not None
        crops.append(best if best.width == size else best.resize((size, size), Image.Resampling.LANCZOS))
    return crops


def generate_synthetic_iqa(
    out_dir: str | Path,
    types: Sequence[str] = ("white_noise",),
    size: int = 112,
    crops_per_photo: int = 40,
    levels: int = 5,
    seed: int = 42,
    prior_photos: int = 0,
    split: Sequence[float] = (6, 2, 2),
    photos: Sequence[str] | None = None,
    dataset_name: str = "synthetic_iqa",
    progress: bool = True,
    num_folds: int | None = None,
    fold: int | None = None,
    write: bool = True,
) -> Path:
    """Write (or reuse, when the manifest's options match) the synthetic dataset; return `out_dir`.

    `num_folds` also writes every fold's split files (module docstring); `fold` only names the fold a
    caller reads (checked against `num_folds`): all folds share one cached set. `write=False` waits
    for another process to write the set (`prresq.data.synthetic_set.write_set`).
    """
    if fold is not None and (num_folds is None or not 0 <= fold < num_folds):
        raise ValueError(f"fold={fold}: needs num_folds set and 0 <= fold < num_folds (num_folds={num_folds})")
    if crops_per_photo < 1 or size < 28:
        raise ValueError(f"crops_per_photo={crops_per_photo} (>= 1) and size={size} (>= 28) required")
    specific = dict(size=size, crops_per_photo=crops_per_photo, levels=levels)
    shared = dict(seed=seed, split=split, photos=photos, dataset_name=dataset_name)
    options = set_options(
        FORMAT_VERSION,
        types,
        (list(DISTORTIONS), "distortion"),
        specific,
        **shared,
        prior_photos=prior_photos,
        num_folds=num_folds,
    )
    return write_set(
        out_dir,
        options,
        _items,
        media_dir="images",
        label="synthetic IQA",
        unit="crop",
        steps_per_photo=crops_per_photo,
        progress=progress,
        write=write,
    )


def _items(out: Path, refs: dict[str, Image.Image], options: dict[str, Any], bar: Any) -> Iterator[dict[str, Any]]:
    """Every crop of every photo at every type and level: the PNG written, its row yielded (file order)."""
    types, size, levels, seed = options["types"], options["size"], options["levels"], options["seed"]
    pending: deque[Future[None]] = deque()
    writer = ThreadPoolExecutor(max_workers=2)  # PNG writes are file-system bound: overlap them
    try:
        for name, photo in refs.items():
            (out / "images" / name).mkdir(exist_ok=True)
            gray = is_grayscale(photo)
            for c, crop in enumerate(random_crops(photo, name, options["crops_per_photo"], size, seed)):
                for dtype in types:
                    if gray and dtype in COLOR_ONLY:
                        continue
                    for lv, (im, sim) in enumerate(distort_levels(crop, dtype, levels, (seed, name, c)), start=1):
                        sid = f"{name}_c{c:03d}_{dtype}_l{lv}"
                        rel = f"images/{name}/{sid}.png"
                        pending.append(writer.submit(im.save, out / rel, compress_level=0))
                        mos = f"{level_mos(lv, levels, sim):.2f}"
                        yield {
                            "id": sid,
                            "dataset_name": options["dataset_name"],
                            "image": [rel],
                            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": mos}],
                            "reference": name,
                            "crop": c,
                            "distortion": dtype,
                            "level": lv,
                            "ssim": round(sim, 4),
                        }
                while len(pending) > 64:  # bound the images held in memory
                    pending.popleft().result()
                bar.update(1)
        for f in pending:
            f.result()
    finally:
        writer.shutdown(cancel_futures=True)


def main(argv: Sequence[str] | None = None) -> None:
    specific = {
        "size": {},
        "crops_per_photo": {},
        "prior_photos": {},
        "num_folds": {"type": int, "help": "also write every fold by photo (>= 3)"},
    }
    run_cli(generate_synthetic_iqa, __doc__, specific, list(DISTORTIONS), argv)


if __name__ == "__main__":
    main()
