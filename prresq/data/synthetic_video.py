"""A synthetic VQA dataset: short camera-motion clips over the bundled photos, degraded and encoded.

Each reference photo (`prresq.data.photos`) gives `clips_per_photo` pristine clips of `frames`
frames (`width` x `height`, `fps`), rendered by a seeded virtual camera moving linearly over the
photo (a pan between two points, or a zoom in / out around one; the three motions alternate over
photos and clips). Every clip is then degraded by each requested type at `levels` severities
(s = (level - 1) / (levels - 1) in [0, 1]) and encoded with PyAV (`codec`, libx264 by default;
RGB -> yuv420p is done in numpy, BT.601, so the encoder input is exactly reproducible):

- compression: the encoder's quality knob runs from mild to extreme (libx264 CRF 30 -> 51,
  libx265 32 -> 51, libvpx-vp9 / libsvtav1 CRF 45 -> 63, mpeg4 bitrate 400 -> 20 kb/s, geometric);
  every other type is encoded at the codec's near-transparent setting (x264 CRF 18). x264/x265
  run the `veryfast` preset on one thread: these clips are tiny and many.
- blur: Gaussian blur on every frame, radius 0.5 -> 3 px (geometric).
- noise: Gaussian noise redrawn on every frame, sigma 4 -> 40 (geometric).
- drop: a growing share (15% -> 60%) of the interior frames is lost; the file keeps the gaps in
  its timestamps (variable frame rate, as a stream with dropped frames), so a player holds the
  previous frame and the motion jumps. The lost frames of a level include those of the levels
  below it.
- stutter: the content advances in irregular bursts: slot i shows content frame
  floor(floor(i / h) * h) with hold h = 1.5 -> 6 (duplicated frames, judder).
- freeze: one stall (rebuffering) from 30% of the clip, 15% -> 60% of the frames long; playback
  then resumes where it stopped (content is delayed, not skipped).

MOS model (documented, deterministic), the one of the synthetic IQA set
(`prresq.data.synthetic_set.level_mos`): the range [1, 5] is cut into `levels` equal bands, level 1
on top, and a clip sits inside its band by a full-reference measure, the mean over displayed
frames of the luma SSIM (7x7 uniform window) between what a player shows (decoded at each frame
slot, so drops and holds count) and the pristine frame of that slot::

    w = 4 / levels;   MOS = 5 - w * (level - 1) - w * (0.05 + 0.9 * (1 - clip(SSIM, 0, 1)))

so MOS is strictly decreasing in level within every (photo, clip, type) group, and of course
within every (photo, type) group, whatever the SSIM does; SSIM orders clips of one level across
content and types.

Clips are split BY REFERENCE PHOTO (6:2:2, seed 42, `prresq.data.synthetic_set.split_photos`), so no
test photo is seen in training.

    python -m prresq.data.synthetic_video --out .cache/data/synthetic_vqa              # default tiny set
    python -m prresq.data.synthetic_video --out DIR --types compression drop --levels 3 --codec libx265

Default (15 photos x 6 types x 4 levels = 360 clips of 16 frames, 160x112, 8 fps): about 15 s
on two busy CPU cores, 13 MB.

Output: `DIR/videos/<photo>/<id>.mp4` (`.webm` for VP9), `DIR/{train,val,test}.jsonl` in the anchors' row format
(`"image": [path]`, also `"video": [path]`, human turn `<video>`, gpt turn the MOS, plus
`reference`, `clip`, `distortion`, `level`, `ssim`, `motion`, `codec`) and `DIR/manifest.json`
with the options: rerunning with the same options is a no-op (cache, lock, splits and CLI:
`prresq.data.synthetic_set`; encoding: `prresq.data.video.encode`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from prresq.data.synthetic_set import geom, level_mos, run_cli, seed_key, set_options, ssim_map, write_set
from prresq.data.video import read_frames_at
from prresq.data.video.encode import CODECS, encode_clip

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TYPES = ("compression", "blur", "noise", "drop", "stutter", "freeze")
MOTIONS = ("pan", "zoom_in", "zoom_out")
FREEZE_START = 0.3  # the stall begins at this fraction of the clip


def _lin(lo: float, hi: float, s: float) -> float:
    return float(lo + (hi - lo) * s)


# ----------------------------------------------------------------------------------------------
# Rendering: a virtual camera over a still photo


Box = tuple[float, float, float, float]


def camera_path(
    photo_size: tuple[int, int],
    out_size: tuple[int, int],
    frames: int,
    rng: np.random.Generator,
    motion: str | None = None,
) -> tuple[str, list[Box]]:
    """A linear pan or zoom (`motion` in MOTIONS, drawn when None): one crop box (x0, y0, x1, y1) per frame."""
    pw, ph = photo_size
    aspect = out_size[0] / out_size[1]
    wh = ph * float(rng.uniform(0.55, 0.8))
    wh = min(wh, 0.95 * pw / aspect)
    ww = wh * aspect
    motion = str(rng.choice(MOTIONS)) if motion is None else motion
    if motion not in MOTIONS:
        raise ValueError(f"motion={motion!r}: expected one of {MOTIONS}")
    if motion == "pan":
        ends = []
        for span in (pw - ww, ph - wh):
            a, b = rng.uniform(0, span, size=2) if span > 0 else (0.0, 0.0)
            if span > 0 and abs(b - a) < 0.4 * span:  # make the camera travel
                a, b = (0.1 * span, 0.9 * span) if rng.random() < 0.5 else (0.9 * span, 0.1 * span)
            ends.append((float(a), float(b)))
        (xa, xb), (ya, yb) = ends
        start, end = (xa, ya, xa + ww, ya + wh), (xb, yb, xb + ww, yb + wh)
    else:
        cx = float(rng.uniform(ww / 2, pw - ww / 2))
        cy = float(rng.uniform(wh / 2, ph - wh / 2))
        z = float(rng.uniform(0.5, 0.7))  # the tight window's size relative to the wide one
        wide = (cx - ww / 2, cy - wh / 2, cx + ww / 2, cy + wh / 2)
        tight = (cx - z * ww / 2, cy - z * wh / 2, cx + z * ww / 2, cy + z * wh / 2)
        start, end = (wide, tight) if motion == "zoom_in" else (tight, wide)
    steps = np.linspace(0.0, 1.0, frames)
    boxes = [tuple(float(a + (b - a) * t) for a, b in zip(start, end)) for t in steps]
    return motion, boxes  # type: ignore[return-value]


def render(photo: Image.Image, boxes: Sequence[Box], out_size: tuple[int, int]) -> np.ndarray:
    """The pristine clip `[T, H, W, 3]` uint8: each box resampled (sub-pixel) to `out_size`."""
    return np.stack([np.asarray(photo.resize(out_size, Image.Resampling.BICUBIC, box=b)) for b in boxes])


# ----------------------------------------------------------------------------------------------
# Degradations: (pristine clip, severity s, rng) -> (frames to encode, their frame slots)


Degrade = Callable[[np.ndarray, float, np.random.Generator, Any], tuple[np.ndarray, list[int]]]


def _all_slots(clip: np.ndarray) -> list[int]:
    return list(range(len(clip)))


def blur(clip: np.ndarray, s: float, rng: np.random.Generator, ctx: Any) -> tuple[np.ndarray, list[int]]:
    radius = geom(0.5, 3.0, s)
    out = [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(radius))) for f in clip]
    return np.stack(out), _all_slots(clip)


def noise(clip: np.ndarray, s: float, rng: np.random.Generator, ctx: Any) -> tuple[np.ndarray, list[int]]:
    sigma = np.float32(geom(4.0, 40.0, s))
    noisy = clip.astype(np.float32) + rng.standard_normal(clip.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), _all_slots(clip)


def compression(clip: np.ndarray, s: float, rng: np.random.Generator, ctx: Any) -> tuple[np.ndarray, list[int]]:
    return clip, _all_slots(clip)  # the encoder does the damage


def drop(clip: np.ndarray, s: float, rng: np.random.Generator, ctx: Any) -> tuple[np.ndarray, list[int]]:
    n = len(clip)
    order = ctx["drop_order"]  # one permutation of the interior slots per clip: levels nest
    k = min(n - 2, int(round(_lin(0.15, 0.6, s) * (n - 2))))
    lost = set(order[:k].tolist())
    kept = [i for i in range(n) if i not in lost]
    return clip[kept], kept


def _content_clip(clip: np.ndarray, content: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    return clip[list(content)], list(range(len(content)))


def stutter(clip: np.ndarray, s: float, rng: np.random.Generator, ctx: Any) -> tuple[np.ndarray, list[int]]:
    h = _lin(1.5, 6.0, s)
    return _content_clip(clip, [int(np.floor(np.floor(i / h) * h)) for i in range(len(clip))])


def freeze(clip: np.ndarray, s: float, rng: np.random.Generator, ctx: Any) -> tuple[np.ndarray, list[int]]:
    n = len(clip)
    a = int(round(FREEZE_START * n))
    length = max(1, int(round(_lin(0.15, 0.6, s) * n)))
    content = [i if i < a else a if i < a + length else i - length for i in range(n)]
    return _content_clip(clip, content)


DEGRADATIONS: dict[str, Degrade] = {
    "compression": compression,
    "blur": blur,
    "noise": noise,
    "drop": drop,
    "stutter": stutter,
    "freeze": freeze,
}


# ----------------------------------------------------------------------------------------------
# Measuring (the clips are encoded by prresq.data.video.encode)


def luma_ssim(reference: np.ndarray, distorted: np.ndarray, window: int = 7) -> float:
    """Mean SSIM over frames of the BT.601 luma of `[T, H, W, 3]` clips (7x7 uniform window).

    Population (co)variances, averaged over the whole frame (border windows reflected).
    """
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = reference.astype(np.float32) @ w
    y = distorted.astype(np.float32) @ w
    return float(ssim_map(x, y, window, sample_covariance=False).mean())


def displayed(path: Path, frames: int, fps: int) -> np.ndarray:
    """What a player shows at each frame slot (held frames included): `[T, H, W, 3]`."""
    imgs, _ = read_frames_at(path, [(i + 0.5) / fps for i in range(frames)])
    return np.stack([np.asarray(im) for im in imgs])


# ----------------------------------------------------------------------------------------------
# The dataset


def generate_synthetic_vqa(
    out_dir: str | Path,
    types: Sequence[str] = TYPES,
    levels: int = 4,
    clips_per_photo: int = 1,
    frames: int = 16,
    width: int = 160,
    height: int = 112,
    fps: int = 8,
    codec: str = "libx264",
    seed: int = 42,
    split: Sequence[float] = (6, 2, 2),
    photos: Sequence[str] | None = None,
    dataset_name: str = "synthetic_vqa",
    progress: bool = True,
    write: bool = True,
) -> Path:
    """Write (or reuse, when the manifest's options match) the synthetic VQA set; return `out_dir`.

    `write=False` waits for another process to write it (`prresq.data.synthetic_set.write_set`).
    """
    if codec not in CODECS:
        raise ValueError(f"codec={codec!r}: expected one of {list(CODECS)}")
    if frames < 4 or clips_per_photo < 1 or fps < 1:
        raise ValueError(f"frames={frames} (>= 4), clips_per_photo={clips_per_photo} (>= 1), fps={fps} (>= 1) required")
    if width % 2 or height % 2 or min(width, height) < 32:
        raise ValueError(f"{width}x{height}: sides must be even and >= 32 (yuv420p)")
    specific = dict(
        levels=levels, clips_per_photo=clips_per_photo, frames=frames, width=width, height=height, fps=fps, codec=codec
    )
    shared = dict(seed=seed, split=split, photos=photos, dataset_name=dataset_name)
    options = set_options(FORMAT_VERSION, types, (list(DEGRADATIONS), "degradation"), specific, **shared)
    return write_set(
        out_dir,
        options,
        _items,
        media_dir="videos",
        label="synthetic VQA",
        unit="clip",
        steps_per_photo=clips_per_photo * len(options["types"]) * levels,
        progress=progress,
        write=write,
    )


def _items(out: Path, refs: dict[str, Image.Image], options: dict[str, Any], bar: Any) -> Iterator[dict[str, Any]]:
    """Every clip of every photo at every type and level: encoded, measured, its row yielded (file order)."""
    types, levels, frames, fps, seed = (options[k] for k in ("types", "levels", "frames", "fps", "seed"))
    codec, spec, size = options["codec"], CODECS[options["codec"]], (options["width"], options["height"])
    for p, (name, photo) in enumerate(refs.items()):
        (out / "videos" / name).mkdir(exist_ok=True)
        for c in range(options["clips_per_photo"]):
            cam_rng = np.random.default_rng(seed_key(seed, name, c, "camera"))
            motion, boxes = camera_path(photo.size, size, frames, cam_rng, MOTIONS[(p + c) % len(MOTIONS)])
            clip = render(photo, boxes, size)
            drop_rng = np.random.default_rng(seed_key(seed, name, c, "drop"))
            ctx = {"drop_order": drop_rng.permutation(np.arange(1, frames - 1))}
            for dtype in types:
                for lv in range(1, levels + 1):
                    s = (lv - 1) / (levels - 1)
                    rng = np.random.default_rng(seed_key(seed, name, c, dtype, lv))
                    data, slots = DEGRADATIONS[dtype](clip, s, rng, ctx)
                    quality = _lin(spec.mild, spec.worst, s) if dtype == "compression" else spec.clean
                    if spec.knob == "bitrate" and dtype == "compression":
                        quality = geom(spec.mild, spec.worst, s)
                    sid = f"{name}_c{c:02d}_{dtype}_l{lv}"
                    rel = f"videos/{name}/{sid}.{spec.ext}"
                    encode_clip(data, out / rel, fps, codec, quality, slots)
                    sim = luma_ssim(clip, displayed(out / rel, frames, fps))
                    mos = f"{level_mos(lv, levels, sim):.2f}"
                    yield {
                        "id": sid,
                        "dataset_name": options["dataset_name"],
                        "image": [rel],
                        "video": [rel],
                        "conversations": [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": mos}],
                        "reference": name,
                        "clip": c,
                        "distortion": dtype,
                        "level": lv,
                        "ssim": round(sim, 4),
                        "motion": motion,
                        "codec": codec,
                    }
                    bar.update(1)


def main(argv: Sequence[str] | None = None) -> None:
    specific = {
        "clips_per_photo": {},
        "frames": {},
        "width": {},
        "height": {},
        "fps": {},
        "codec": {"choices": list(CODECS)},
    }
    run_cli(generate_synthetic_vqa, __doc__, specific, list(TYPES), argv)


if __name__ == "__main__":
    main()
