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
the options: rerunning with the same options is a no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import random
import shutil
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from scipy import ndimage

from prresq.data.photos import is_grayscale, reference_photos

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
MOS_LO, MOS_HI = 1.0, 5.0
BAND_MARGIN = 0.05

Distortion = Callable[[Image.Image, float, np.random.Generator], Image.Image]


def _geom(lo: float, hi: float, s: float) -> float:
    """Geometric interpolation between the level-1 value `lo` and the last-level value `hi` (s in [0, 1])."""
    return float(lo * (hi / lo) ** s)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)


def _img(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def gaussian_blur(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=_geom(0.6, 4.0, s)))


def motion_blur(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    length = int(round(3 + 14 * s)) | 1  # odd box length 3 .. 17
    axis = int(rng.integers(0, 2))  # horizontal or vertical camera shake
    return _img(ndimage.uniform_filter1d(_arr(img), size=length, axis=axis, mode="reflect"))


def white_noise(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    sigma = _geom(4.0, 50.0, s)
    return _img(_arr(img) + rng.standard_normal((img.height, img.width, 3), dtype=np.float32) * np.float32(sigma))


def impulse_noise(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    p = _geom(0.01, 0.2, s)
    a = np.asarray(img).copy()
    u = rng.random((img.height, img.width))
    a[u < p / 2] = 0
    a[(u >= p / 2) & (u < p)] = 255
    return Image.fromarray(a)


def jpeg(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=max(1, int(round(_geom(50.0, 3.0, s)))))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def saturation(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Color(img).enhance(0.7 * (1.0 - s))


def contrast(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(_geom(0.7, 0.15, s))


def brightness(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(_geom(0.8, 0.2, s))


def pixelate(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    block = _geom(2.0, 10.0, s)
    small = (max(1, round(img.width / block)), max(1, round(img.height / block)))
    return img.resize(small, Image.Resampling.BOX).resize(img.size, Image.Resampling.NEAREST)


def quantize(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    colors = max(2, int(round(_geom(48.0, 3.0, s))))
    return img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")


def downsample(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    f = _geom(1.5, 6.0, s)
    small = (max(1, round(img.width / f)), max(1, round(img.height / f)))
    return img.resize(small, Image.Resampling.BICUBIC).resize(img.size, Image.Resampling.BICUBIC)


def sharpen(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.UnsharpMask(radius=2, percent=int(_geom(120.0, 900.0, s)), threshold=0))


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
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    y = distorted.astype(np.float32)
    x = reference.astype(np.float32)[None]
    size = (1, window, window, 1)

    def box(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(a, size=size, mode="reflect")

    cov_norm = np.float32(window * window / (window * window - 1))
    mx, my = box(x), box(y)
    vx = (box(x * x) - mx * mx) * cov_norm
    vy = (box(y * y) - my * my) * cov_norm
    cxy = (box(x * y) - mx * my) * cov_norm
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = window // 2
    return s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3), dtype=np.float64)


def level_mos(level: int, levels: int, similarity: float) -> float:
    """The MOS model of the module docstring: the level's band, position inside it from SSIM."""
    width = (MOS_HI - MOS_LO) / levels
    top = MOS_HI - width * (level - 1)
    q = min(max(similarity, 0.0), 1.0)
    return top - width * (BAND_MARGIN + (1.0 - 2.0 * BAND_MARGIN) * (1.0 - q))


def _key(*parts: Any) -> list[int]:
    return [zlib.crc32(str(p).encode()) for p in parts]


def distort_levels(crop: Image.Image, dtype: str, levels: int, key: tuple[Any, ...]) -> list[tuple[Image.Image, float]]:
    """The crop distorted by `dtype` at levels 1..`levels` (seeded by `key`), each with its SSIM to the crop."""
    fn = DISTORTIONS[dtype]
    imgs = [
        fn(crop, (lv - 1) / (levels - 1), np.random.default_rng(_key(*key, dtype, lv))) for lv in range(1, levels + 1)
    ]
    sims = ssim(np.asarray(crop), np.stack([np.asarray(im) for im in imgs]))
    return [(im, float(sim)) for im, sim in zip(imgs, sims)]


def random_crops(photo: Image.Image, name: str, n: int, size: int, seed: int) -> list[Image.Image]:
    """`n` square crops resized to `size` (side drawn in [size, 2 size], position uniform; flat crops redrawn)."""
    if min(photo.size) < size:
        f = size / min(photo.size)
        photo = photo.resize((max(size, round(photo.width * f)), max(size, round(photo.height * f))), Image.LANCZOS)
    rng = np.random.default_rng(_key(seed, name, "crops"))
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


def split_photos(
    names: Sequence[str], seed: int, ratios: Sequence[float] = (6, 2, 2), prior_photos: int = 0
) -> dict[str, list[str]]:
    """Seeded split of photo names: `prior` (N photos taken first, if N > 0), then train/val/test by ratio."""
    pool = sorted(names)
    random.Random(seed).shuffle(pool)
    if prior_photos < 0 or prior_photos > len(pool) - len(SPLITS):
        raise ValueError(f"prior_photos={prior_photos}: must leave >= {len(SPLITS)} of {len(pool)} photos to split")
    out: dict[str, list[str]] = {}
    if prior_photos:
        out["prior"], pool = pool[:prior_photos], pool[prior_photos:]
    total = float(sum(ratios))
    n = len(pool)
    n_val = max(1, round(n * ratios[1] / total))
    n_test = max(1, round(n * ratios[2] / total))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} photos cannot be split {list(ratios)} with one photo in every split")
    out["train"], out["val"], out["test"] = pool[:n_train], pool[n_train : n_train + n_val], pool[n_train + n_val :]
    return out


def fold_photos(splits: dict[str, list[str]], num_folds: int) -> list[dict[str, list[str]]]:
    """The `num_folds` folds by photo of a `split_photos` result (module docstring): [{train, val, test}].

    The non-prior photos are taken in the split's order (train, val, test), cut into `num_folds`
    contiguous groups; fold f tests on group F-1-f and validates on group F-2-f (mod F).
    """
    pool = [name for s in SPLITS for name in splits[s]]
    if num_folds < len(SPLITS) or num_folds > len(pool):
        raise ValueError(
            f"num_folds={num_folds}: need 3 <= num_folds <= {len(pool)} (the non-prior photos) "
            "so that every fold has train, val and test photos"
        )
    bounds = np.linspace(0, len(pool), num_folds + 1).round().astype(int)
    groups = [pool[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    folds = []
    for f in range(num_folds):
        test, val = (num_folds - 1 - f) % num_folds, (num_folds - 2 - f) % num_folds
        train = [n for g, names in enumerate(groups) if g not in (test, val) for n in names]
        folds.append({"train": train, "val": groups[val], "test": groups[test]})
    return folds


def fold_dir(num_folds: int, fold: int) -> str:
    """Where fold `fold` of `num_folds` keeps its split files, relative to the set's directory."""
    return f"folds{num_folds}/fold{fold}"


def is_complete(out: Path, options: dict[str, Any]) -> bool:
    """Whether `out` holds a generated set with these options and all of its files (the cache check)."""
    path = out / MANIFEST
    if not path.exists():
        return False
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return manifest.get("options") == options and all((out / f).exists() for f in manifest.get("files", []))


def clear_previous(out: Path, media_dir: str = "images") -> None:
    """Remove what an earlier run with other options wrote (only when its manifest says it was ours)."""
    path = out / MANIFEST
    if not path.exists():
        return
    try:
        files = json.loads(path.read_text()).get("files", [])
    except json.JSONDecodeError:
        files = []
    for f in files:
        (out / f).unlink(missing_ok=True)
    path.unlink()
    if (out / media_dir).is_dir():
        shutil.rmtree(out / media_dir)


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
) -> Path:
    """Write (or reuse, when the manifest's options match) the synthetic dataset; return `out_dir`.

    `num_folds` also writes every fold's split files (module docstring); `fold` only names the fold a
    caller reads (checked against `num_folds`): all folds share one cached set.
    """
    if fold is not None and (num_folds is None or not 0 <= fold < num_folds):
        raise ValueError(f"fold={fold}: needs num_folds set and 0 <= fold < num_folds (num_folds={num_folds})")
    types = list(DISTORTIONS) if list(types) == ["all"] else list(types)
    unknown = [t for t in types if t not in DISTORTIONS]
    if unknown:
        raise ValueError(f"unknown distortion types {unknown}; known: {list(DISTORTIONS)} or 'all'")
    if levels < 2:
        raise ValueError(f"levels={levels}: need at least 2 levels for a ranking")
    if crops_per_photo < 1 or size < 28:
        raise ValueError(f"crops_per_photo={crops_per_photo} (>= 1) and size={size} (>= 28) required")
    out = Path(out_dir)
    options = dict(
        version=FORMAT_VERSION,
        types=types,
        size=size,
        crops_per_photo=crops_per_photo,
        levels=levels,
        seed=seed,
        prior_photos=prior_photos,
        split=[float(r) for r in split],
        photos=None if photos is None else list(photos),
        dataset_name=dataset_name,
    )
    if num_folds is not None:  # absent otherwise: sets written before folds existed stay valid
        options["num_folds"] = int(num_folds)
    if is_complete(out, options):
        log.info("synthetic IQA set at %s is up to date", out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out / ".lock"):  # several processes (DDP ranks) may ask at once: one writes
        if is_complete(out, options):
            return out
        _write(out, options, progress)
    return out


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover  (no flock on this platform: single writer assumed)
            pass
        yield


def _write(out: Path, options: dict[str, Any], progress: bool) -> None:
    """Generate the set described by `options` into `out` (manifest last)."""
    types, size, levels, seed = options["types"], options["size"], options["levels"], options["seed"]
    crops_per_photo, dataset_name = options["crops_per_photo"], options["dataset_name"]
    photos = options["photos"]
    clear_previous(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    refs = reference_photos() if photos is None else reference_photos(list(photos), min_count=len(photos))
    splits = split_photos(list(refs), seed, options["split"], options["prior_photos"])
    folds = fold_photos(splits, options["num_folds"]) if options.get("num_folds") else []
    split_of = {name: s for s, names in splits.items() for name in names}
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}

    from tqdm.auto import tqdm

    bar = tqdm(total=len(refs) * crops_per_photo, desc="synthetic IQA", unit="crop", disable=not progress)
    pending: deque[Future[None]] = deque()
    writer = ThreadPoolExecutor(max_workers=2)  # PNG writes are file-system bound: overlap them
    try:
        for name, photo in refs.items():
            (out / "images" / name).mkdir(exist_ok=True)
            gray = is_grayscale(photo)
            for c, crop in enumerate(random_crops(photo, name, crops_per_photo, size, seed)):
                for dtype in types:
                    if gray and dtype in COLOR_ONLY:
                        continue
                    for lv, (im, sim) in enumerate(distort_levels(crop, dtype, levels, (seed, name, c)), start=1):
                        sid = f"{name}_c{c:03d}_{dtype}_l{lv}"
                        rel = f"images/{name}/{sid}.png"
                        pending.append(writer.submit(im.save, out / rel, compress_level=0))
                        mos = f"{level_mos(lv, levels, sim):.2f}"
                        rows[split_of[name]].append(
                            {
                                "id": sid,
                                "dataset_name": dataset_name,
                                "image": [rel],
                                "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": mos}],
                                "reference": name,
                                "crop": c,
                                "distortion": dtype,
                                "level": lv,
                                "ssim": round(sim, 4),
                            }
                        )
                while len(pending) > 64:  # bound the images held in memory
                    pending.popleft().result()
                bar.update(1)
        for f in pending:
            f.result()
    finally:
        writer.shutdown(cancel_futures=True)
    bar.close()
    files = []
    for s, split_rows in rows.items():
        with open(out / f"{s}.jsonl", "w", encoding="utf-8") as f:
            for row in split_rows:
                f.write(json.dumps(row) + "\n")
        files.append(f"{s}.jsonl")
    for f, fold in enumerate(folds):
        (out / fold_dir(len(folds), f)).mkdir(parents=True, exist_ok=True)
        for s, names in fold.items():
            members = set(names)
            rel = f"{fold_dir(len(folds), f)}/{s}.jsonl"
            with open(out / rel, "w", encoding="utf-8") as fh:
                for row in (r for split_rows in rows.values() for r in split_rows if r["reference"] in members):
                    fh.write(json.dumps(row) + "\n")
            files.append(rel)
    manifest = {
        "options": options,
        "files": files,
        "photos": splits,
        **({"folds": folds} if folds else {}),
        "counts": {s: len(r) for s, r in rows.items()},
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))  # written last: marks the set complete
    log.info("synthetic IQA set written to %s: %s", out, manifest["counts"])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--types", nargs="+", default=["white_noise"], help=f"'all' or some of {list(DISTORTIONS)}")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--crops-per-photo", type=int, default=40)
    p.add_argument("--levels", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--prior-photos", type=int, default=0)
    p.add_argument("--split", type=float, nargs=3, default=[6, 2, 2], metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--photos", nargs="+", default=None, help="subset of reference photo names")
    p.add_argument("--dataset-name", default="synthetic_iqa")
    p.add_argument("--num-folds", type=int, default=None, help="also write every fold by photo (>= 3)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    out = generate_synthetic_iqa(
        a.out,
        types=a.types,
        size=a.size,
        crops_per_photo=a.crops_per_photo,
        levels=a.levels,
        seed=a.seed,
        prior_photos=a.prior_photos,
        split=a.split,
        photos=a.photos,
        dataset_name=a.dataset_name,
        num_folds=a.num_folds,
    )
    manifest = json.loads((out / MANIFEST).read_text())
    print(f"{out}: {manifest['counts']} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
