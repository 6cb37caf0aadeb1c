"""What the synthetic IQA (`prresq.data.synthetic`) and VQA (`prresq.data.synthetic_video`) sets share.

- The MOS model: `level_mos` puts an item inside its level's band of [1, 5] by a full-reference
  similarity, computed with the one SSIM of both generators (`ssim_map`).
- Splits BY REFERENCE PHOTO: `split_photos` (seeded prior / train / val / test) and `fold_photos`
  (K folds by photo, written under `fold_dir(F, f)`).
- The set on disk, `write_set`: the media under `<out>/<media_dir>/`, one JSONL per split (and per
  fold), and `manifest.json` with the generator's options, written last. A set whose manifest
  holds the same options and whose files all exist is reused (`is_complete`); one written with
  other options is cleared first (`clear_previous`). Several processes asking for the same set at
  once (DDP ranks, parallel jobs) write it once: the writer holds `<out>/.lock`, the others wait
  for the lock and find the set complete. `write=False` never writes: it waits until the set is
  complete (another process, e.g. local rank 0, writes it).
- The command line, `run_cli`: one flag per generator option, defaults from its signature.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import random
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from prresq.data.photos import reference_photos

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".lock"
SPLITS = ("train", "val", "test")
MOS_LO, MOS_HI = 1.0, 5.0
BAND_MARGIN = 0.05
WAIT_S = 3600.0  # how long `write=False` waits for the writing process
POLL_S = 0.5

# Writes one set's media and yields its rows in file order (each with `reference`, its photo):
# items(out_dir, photos {name: image}, options, progress bar).
Items = Callable[[Path, dict[str, Image.Image], dict[str, Any], Any], Iterable[dict[str, Any]]]


def seed_key(*parts: Any) -> list[int]:
    """A numpy seed from any values (CRC32 of each one's text): the same parts, the same stream."""
    return [zlib.crc32(str(p).encode()) for p in parts]


def geom(lo: float, hi: float, s: float) -> float:
    """Geometric interpolation between the level-1 value `lo` and the last-level value `hi` (s in [0, 1])."""
    return float(lo * (hi / lo) ** s)


# ---------------------------------------------------------------------------------------------- MOS model


def ssim_map(x: np.ndarray, y: np.ndarray, window: int = 7, sample_covariance: bool = True) -> np.ndarray:
    """The SSIM map of `y` against `x` (float32, uint8 range) over axes 1 and 2 ([N, H, W] or [N, H, W, C]).

    Wang et al. 2004 with a uniform `window` x `window` window (reflected at the border), K1 = 0.01,
    K2 = 0.03; `sample_covariance` scales the (co)variances by w^2 / (w^2 - 1) as scikit-image does.
    `x` broadcasts against `y` (one reference for N distorted images: `x[None]`).
    """
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    size = (1, window, window) + (1,) * (y.ndim - 3)

    def box(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(a, size=size, mode="reflect")

    mx, my = box(x), box(y)
    vx = box(x * x) - mx * mx
    vy = box(y * y) - my * my
    cxy = box(x * y) - mx * my
    if sample_covariance:
        cov_norm = np.float32(window * window / (window * window - 1))
        vx, vy, cxy = vx * cov_norm, vy * cov_norm, cxy * cov_norm
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def level_mos(level: int, levels: int, similarity: float) -> float:
    """The MOS model: the level's band of [1, 5] (level 1 on top), the position inside it from SSIM.

    w = 4 / levels;  MOS = 5 - w (level - 1) - w (m + (1 - 2 m) (1 - clip(SSIM, 0, 1))),  m = 0.05.
    """
    width = (MOS_HI - MOS_LO) / levels
    top = MOS_HI - width * (level - 1)
    q = min(max(similarity, 0.0), 1.0)
    return top - width * (BAND_MARGIN + (1.0 - 2.0 * BAND_MARGIN) * (1.0 - q))


# ---------------------------------------------------------------------------------------------- splits


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
    """The `num_folds` folds by photo of a `split_photos` result: [{train, val, test}].

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


# ---------------------------------------------------------------------------------------------- options


def check_types(types: Sequence[str], known: Sequence[str], kind: str) -> list[str]:
    """`types` as a list (`["all"]`: every known type, in order); unknown names are refused."""
    types = list(known) if list(types) == ["all"] else list(types)
    unknown = [t for t in types if t not in known]
    if unknown:
        raise ValueError(f"unknown {kind} types {unknown}; known: {list(known)} or 'all'")
    return types


def check_levels(levels: int) -> None:
    if levels < 2:
        raise ValueError(f"levels={levels}: need at least 2 levels for a ranking")


def set_options(
    version: int,
    types: Sequence[str],
    known_types: tuple[Sequence[str], str],
    specific: Mapping[str, Any],
    seed: int,
    split: Sequence[float],
    photos: Sequence[str] | None,
    dataset_name: str,
    prior_photos: int | None = None,
    num_folds: int | None = None,
) -> dict[str, Any]:
    """The manifest's options (what makes a cached set reusable): `prior_photos` / `num_folds` only when given.

    `types` are checked against `known_types` = (names, what they are), `specific["levels"]` is checked too.
    """
    types = check_types(types, *known_types)
    check_levels(specific["levels"])
    options: dict[str, Any] = dict(version=version, types=types, **specific, seed=seed)
    if prior_photos is not None:
        options["prior_photos"] = prior_photos
    options.update(
        split=[float(r) for r in split], photos=None if photos is None else list(photos), dataset_name=dataset_name
    )
    if num_folds is not None:  # absent otherwise: sets written before folds existed stay valid
        options["num_folds"] = int(num_folds)
    return options


# ---------------------------------------------------------------------------------------------- the set on disk


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


def clear_previous(out: Path, media_dir: str) -> None:
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


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block; released on exit or death."""
    with open(path, "w") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover  (no flock on this platform: single writer assumed)
            pass
        yield


def wait_for_set(out: Path, options: dict[str, Any], label: str, timeout_s: float = WAIT_S) -> Path:
    """Return `out` once another process has completed the set with `options`; raise after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not is_complete(out, options):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{out}: no complete {label} set with options {options} after {timeout_s:.0f} s; it is written by "
                "local rank 0 (QualityDataModule.prepare_data): did that process fail?"
            )
        time.sleep(POLL_S)
    return out


def write_set(
    out_dir: str | Path,
    options: dict[str, Any],
    items: Items,
    *,
    media_dir: str,
    label: str,
    unit: str,
    steps_per_photo: int,
    progress: bool = True,
    write: bool = True,
) -> Path:
    """Write (or reuse, when the manifest's options match) the set `items` makes; return `out_dir`.

    `options` hold at least seed, split, photos (None: all bundled photos), optionally prior_photos
    and num_folds; `items` writes the media and yields the rows (`Items`). `write=False`: wait for
    another process to write it (module docstring).
    """
    out = Path(out_dir)
    if is_complete(out, options):
        log.info("%s set at %s is up to date", label, out)
        return out
    if not write:
        return wait_for_set(out, options, label)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out / LOCK):  # several processes may ask at once: one writes, the others find it complete
        if not is_complete(out, options):

            def progress_bar(num_photos: int) -> Any:
                from tqdm.auto import tqdm

                return tqdm(total=num_photos * steps_per_photo, desc=label, unit=unit, disable=not progress)

            counts = _write(out, options, items, media_dir, progress_bar)
            log.info("%s set written to %s: %s", label, out, counts)
    return out


def _write(
    out: Path, options: dict[str, Any], items: Items, media_dir: str, progress_bar: Callable[[int], Any]
) -> dict[str, int]:
    """Generate the set into `out`: media, split and fold files, the manifest last; the rows per split."""
    clear_previous(out, media_dir)
    (out / media_dir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    photos = options["photos"]
    refs = reference_photos() if photos is None else reference_photos(list(photos), min_count=len(photos))
    splits = split_photos(list(refs), options["seed"], options["split"], options.get("prior_photos", 0))
    folds = fold_photos(splits, options["num_folds"]) if options.get("num_folds") else []
    split_of = {name: s for s, names in splits.items() for name in names}
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}
    bar = progress_bar(len(refs))
    for row in items(out, refs, options, bar):
        rows[split_of[row["reference"]]].append(row)
    bar.close()
    files = [_write_jsonl(out, f"{s}.jsonl", split_rows) for s, split_rows in rows.items()]
    for f, fold in enumerate(folds):
        (out / fold_dir(len(folds), f)).mkdir(parents=True, exist_ok=True)
        for s, names in fold.items():
            members = set(names)
            fold_rows = (r for split_rows in rows.values() for r in split_rows if r["reference"] in members)
            files.append(_write_jsonl(out, f"{fold_dir(len(folds), f)}/{s}.jsonl", fold_rows))
    manifest = {
        "options": options,
        "files": files,
        "photos": splits,
        **({"folds": folds} if folds else {}),
        "counts": {s: len(r) for s, r in rows.items()},
        "seconds": round(time.perf_counter() - start, 2),
    }
    partial = out / f"{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2))
    os.replace(partial, out / MANIFEST)  # written last, in one step: marks the set complete
    return manifest["counts"]


def _write_jsonl(out: Path, rel: str, rows: Iterable[dict[str, Any]]) -> str:
    with open(out / rel, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return rel


# ---------------------------------------------------------------------------------------------- command line


def run_cli(
    generate: Callable[..., Path],
    doc: str | None,
    specific: Mapping[str, Mapping[str, Any]],
    known_types: Sequence[str],
    argv: Sequence[str] | None = None,
) -> None:
    """`python -m <generator module> --out DIR [--types ...] [--<option> ...]`; prints the split counts.

    `specific` maps the generator's own options to extra argparse settings (type, choices, help);
    every flag's default is the generator's.
    """
    defaults = {n: p.default for n, p in inspect.signature(generate).parameters.items()}
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", dest="out_dir", required=True)
    p.add_argument("--types", nargs="+", default=list(defaults["types"]), help=f"'all' or some of {list(known_types)}")
    p.add_argument("--levels", type=int, default=defaults["levels"])
    for name, kwargs in specific.items():
        default = defaults[name]
        p.add_argument(f"--{name.replace('_', '-')}", **{"type": type(default), "default": default, **kwargs})
    p.add_argument("--seed", type=int, default=defaults["seed"])
    p.add_argument("--split", type=float, nargs=3, default=list(defaults["split"]), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--photos", nargs="+", default=None, help="subset of reference photo names")
    p.add_argument("--dataset-name", default=defaults["dataset_name"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    out = generate(**vars(args))
    manifest = json.loads((out / MANIFEST).read_text())
    print(f"{out}: {manifest['counts']} ({time.perf_counter() - start:.1f} s)")
