"""The two video data flows (`VideoGridFlow`, `VideoNativeFlow`) and their frame helpers
(`make_grid`, `smart_resize`). See `prresq.data.video` and prresq/CONTRACTS.md, "Data flow seam".
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from prresq.data.dataflow import FlowOutput
from prresq.data.records import DataError
from prresq.data.video.decode import read_frames_at, sample_indices, sample_times
from prresq.data.video.probe import PathLike, probe

# ----------------------------------------------------------------------------------------------
# Grid and resizing


def _tile_wh(frame: Image.Image, tile_size: int | Sequence[int] | None) -> tuple[int, int]:
    w, h = frame.size
    if tile_size is None:
        return w, h
    if isinstance(tile_size, int):
        scale = min(1.0, tile_size / max(w, h))  # shrink only: enlarging adds no detail
        return max(1, round(w * scale)), max(1, round(h * scale))
    tw, th = (int(v) for v in tile_size)
    return tw, th


def make_grid(
    frames: Sequence[Image.Image],
    rows: int = 4,
    cols: int = 4,
    tile_size: int | Sequence[int] | None = 224,
    border: int = 0,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """Tile frames row-major (time runs left to right, then top to bottom) into one image.

    `tile_size`: an int caps the tile's longer side (aspect ratio of the first frame kept; frames
    are shrunk, never enlarged), a pair is the exact (width, height), None keeps the frames' size. When `len(frames) != rows * cols` the frames
    are resampled uniformly (repeats for short lists) to fill the grid exactly.
    """
    if rows <= 0 or cols <= 0:
        raise ValueError(f"grid {rows}x{cols}: rows and cols must be positive")
    if not frames:
        raise ValueError("make_grid needs at least one frame")
    k = rows * cols
    if len(frames) != k:
        frames = [frames[i] for i in sample_indices(len(frames), k)]
    tw, th = _tile_wh(frames[0], tile_size)
    grid = Image.new("RGB", (cols * tw + (cols - 1) * border, rows * th + (rows - 1) * border), background)
    for i, frame in enumerate(frames):
        tile = frame.convert("RGB")
        if tile.size != (tw, th):
            tile = tile.resize((tw, th), Image.Resampling.BICUBIC)
        r, c = divmod(i, cols)
        grid.paste(tile, (c * (tw + border), r * (th + border)))
    return grid


def _resize_longer(img: Image.Image, size: int | None) -> Image.Image:
    """Shrink so that the longer side is `size` (never enlarge; None keeps the image)."""
    if size is None or max(img.size) <= size:
        return img
    scale = size / max(img.size)
    wh = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(wh, Image.Resampling.BICUBIC)


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 3136, max_pixels: int = 200704
) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides divisible by `factor`, area in [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / max(1, min(height, width)) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} exceeds 200")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


# ----------------------------------------------------------------------------------------------
# Flows


@dataclass
class VideoGridFlow:
    """PreResQ-R1's global-temporal + local-spatial flow: 1 grid image + `num_local` frames.

    Image 0: a rows x cols grid of rows*cols frames sampled uniformly in time (tiles of
    `tile_size`, see `make_grid`). Images 1..num_local: single frames sampled uniformly in time, at
    native resolution by default, as the released flow feeds them (the processor's max_pixels
    bounds their tokens); `local_size` optionally shrinks them to that many px on the longer side.
    With `labels`, each image is preceded by the released prompt's labels ("Global multiframe
    picture:", "Local single frame picture i:"); the prompt text comes last. Frame choice and tile
    size were not released: uniform sampling and `tile_size` are our defaults.
    """

    rows: int = 4
    cols: int = 4
    tile_size: int | tuple[int, int] | None = 224
    num_local: int = 3
    local_size: int | None = None
    labels: bool = True
    border: int = 0
    global_label: str = "Global multiframe picture:"
    local_label: str = "Local single frame picture {index}:"
    seek: bool = True

    def __post_init__(self) -> None:
        if self.rows <= 0 or self.cols <= 0 or self.num_local < 0:
            raise ValueError(f"VideoGridFlow: rows={self.rows}, cols={self.cols}, num_local={self.num_local}")
        if isinstance(self.tile_size, list):
            self.tile_size = tuple(self.tile_size)  # Hydra passes ListConfig/list

    @property
    def num_images(self) -> int:
        return 1 + self.num_local

    def frames(self, path: PathLike) -> tuple[list[Image.Image], list[Image.Image]]:
        """Decode the grid frames and the local frames in one pass over the file."""
        info = probe(path)
        grid_t = sample_times(info.duration, self.rows * self.cols)
        local_t = sample_times(info.duration, self.num_local) if self.num_local else []
        frames, _ = read_frames_at(path, grid_t + local_t, seek=self.seek, info=info)
        return frames[: len(grid_t)], frames[len(grid_t) :]

    def images(self, path: PathLike) -> list[Image.Image]:
        grid_frames, local_frames = self.frames(path)
        grid = make_grid(grid_frames, self.rows, self.cols, self.tile_size, self.border)
        return [grid] + [_resize_longer(f, self.local_size) for f in local_frames]

    def __call__(self, media_path: PathLike | Sequence[PathLike], prompt: str) -> FlowOutput:
        path = _single_media(media_path)
        images = self.images(path)
        content: list[dict] = []
        for i in range(len(images)):
            if self.labels:
                label = self.global_label if i == 0 else self.local_label.format(index=i)
                content.append({"type": "text", "text": label})
            content.append({"type": "image"})
        content.append({"type": "text", "text": prompt})
        return FlowOutput(content=content, images=images, videos=[], video_kwargs={})


@dataclass
class VideoNativeFlow:
    """Native video input (Qwen2.5-VL's convention): sampled frames + their sampling fps, through `videos=`.

    Frames: `num_frames` uniformly in time, or `fps` per second clamped to [min_frames,
    max_frames]; the count is rounded to a multiple of `frame_factor` (the temporal patch, 2)
    as qwen-vl-utils does. Each frame is resized with Qwen's `smart_resize` (sides multiple of
    `size_factor`, area in [min_pixels, max_pixels]; `total_pixels` additionally bounds the
    whole clip as qwen-vl-utils' VIDEO_TOTAL_PIXELS). Output: one `(T, H, W, 3)` uint8 array and
    `video_kwargs = {"video_metadata": [meta], "do_sample_frames": False}` with
    meta.fps = T / duration (the sampling rate), so the processor sets
    `second_per_grid_ts = temporal_patch_size * duration / T`.
    """

    num_frames: int | None = None
    fps: float | None = 2.0
    max_frames: int = 32
    min_frames: int = 4
    max_pixels: int = 128 * 28 * 28
    min_pixels: int = 4 * 28 * 28
    total_pixels: int | None = None
    frame_factor: int = 2
    size_factor: int | None = 28  # None: the model family's (patch x merge), set when the data module attaches it
    seek: bool = True

    def __post_init__(self) -> None:
        if self.num_frames is not None and self.num_frames <= 0:
            raise ValueError(f"VideoNativeFlow: num_frames={self.num_frames}")
        if self.num_frames is None and (self.fps is None or self.fps <= 0):
            raise ValueError("VideoNativeFlow needs num_frames or a positive fps")

    def frame_count(self, duration: float) -> int:
        f = self.frame_factor
        if self.num_frames is not None:
            n = self.num_frames
        else:
            assert self.fps is not None
            n = duration * self.fps
            lo = math.ceil(self.min_frames / f) * f
            hi = math.floor(self.max_frames / f) * f
            n = min(max(n, lo), hi)
        return max(f, int(round(n / f)) * f)

    def sample(self, path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
        """Return the `(T, H, W, 3)` clip and its processor metadata."""
        info = probe(path)
        n = self.frame_count(info.duration)
        frames, _ = read_frames_at(path, sample_times(info.duration, n), seek=self.seek, info=info)
        max_pixels = self.max_pixels
        if self.total_pixels is not None:
            per_frame = self.total_pixels / n * self.frame_factor
            max_pixels = max(min(max_pixels, per_frame), int(self.min_pixels * 1.05))
        if self.size_factor is None:
            raise ValueError("VideoNativeFlow.size_factor is null: attach a processor (the data module sets it)")
        h, w = smart_resize(frames[0].height, frames[0].width, self.size_factor, self.min_pixels, int(max_pixels))
        clip = np.stack([np.asarray(f.resize((w, h), Image.Resampling.BICUBIC)) for f in frames])
        meta = {
            "total_num_frames": n,
            "fps": n / info.duration,
            "duration": info.duration,
            "width": w,
            "height": h,
            "frames_indices": list(range(n)),
        }
        return clip, meta

    def __call__(self, media_path: PathLike | Sequence[PathLike], prompt: str) -> FlowOutput:
        clip, meta = self.sample(_single_media(media_path))
        content = [{"type": "video"}, {"type": "text", "text": prompt}]
        return FlowOutput(
            content=content,
            images=[],
            videos=[clip],
            video_kwargs={"video_metadata": [meta], "do_sample_frames": False},
        )


def _single_media(media: PathLike | Sequence[PathLike]) -> PathLike:
    if isinstance(media, (str, os.PathLike)):
        return media
    items = list(media)
    if len(items) != 1:
        raise DataError(f"{items}: a video record holds exactly one video, got {len(items)} paths")
    return items[0]
