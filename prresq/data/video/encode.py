"""Encoding clips with PyAV: exactly reproducible encoder input (RGB -> yuv420p in numpy), gaps for dropped frames.

`CODECS` holds how each encoder is driven (file extension, quality knob, the near-transparent
setting and the range the synthetic VQA set's compression levels span); `encode_clip` writes
`[T, H, W, 3]` uint8 frames, `yuv_frames` / `yuv_frame` make the encoder-ready frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CodecSpec:
    """How to drive one encoder: file extension, its quality knob, the clean and the degraded range."""

    ext: str
    knob: str  # "crf" (an encoder option) or "bitrate" (bits per second)
    clean: float  # the near-transparent setting used for every non-compression type
    mild: float  # compression level 1
    worst: float  # compression level `levels`
    options: tuple[tuple[str, str], ...] = ()


CODECS: dict[str, CodecSpec] = {
    "libx264": CodecSpec("mp4", "crf", 18, 30, 51, (("preset", "veryfast"), ("threads", "1"))),
    "libx265": CodecSpec(
        "mp4", "crf", 18, 32, 51, (("preset", "veryfast"), ("x265-params", "log-level=error:pools=1"))
    ),
    "libvpx-vp9": CodecSpec("webm", "crf", 20, 45, 63, (("b", "0"),)),
    "libsvtav1": CodecSpec("mp4", "crf", 20, 45, 63),
    "mpeg4": CodecSpec("mp4", "bitrate", 2_000_000, 400_000, 20_000),
}


def yuv_frames(clip: np.ndarray) -> list[Any]:
    """`[T, H, W, 3]` (or one `[H, W, 3]`) uint8 RGB (even sides) as encoder-ready yuv420p frames.

    The conversion is done here in numpy (BT.601, limited range, 2x2 chroma means), so the
    encoder's input is exactly reproducible, independent of swscale's code paths and flags.
    """
    import av

    clip = clip[None] if clip.ndim == 3 else clip
    t, h, w, _ = clip.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even sides, got {w}x{h}")
    x = clip.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + (65.738 * r + 129.057 * g + 25.064 * b) / 256.0
    m = x.reshape(t, h // 2, 2, w // 2, 2, 3).mean(axis=(2, 4))  # 2x2 means first: the map is linear
    r, g, b = m[..., 0], m[..., 1], m[..., 2]
    cb = 128.0 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256.0
    cr = 128.0 + (112.439 * r - 94.154 * g - 18.285 * b) / 256.0
    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, cb, cr)]
    frames = []
    for i in range(t):
        frame = av.VideoFrame(w, h, "yuv420p")
        for plane, data in zip(frame.planes, (p[i] for p in planes)):
            rows = np.zeros((data.shape[0], plane.line_size), np.uint8)  # zeroed row padding
            rows[:, : data.shape[1]] = data
            plane.update(rows.tobytes())
        frames.append(frame)
    return frames


def yuv_frame(rgb: np.ndarray) -> Any:
    """One `(H, W, 3)` uint8 RGB frame as a yuv420p `av.VideoFrame` (see `yuv_frames`)."""
    return yuv_frames(rgb)[0]


def encode_clip(
    frames: np.ndarray,
    path: str | Path,
    fps: int,
    codec: str = "libx264",
    quality: float | None = None,
    slots: Sequence[int] | None = None,
) -> Path:
    """Encode `[T, H, W, 3]` uint8 frames; `slots` (frame numbers at `fps`) leave gaps for dropped frames."""
    import av

    spec = CODECS[codec]
    quality = spec.clean if quality is None else quality
    path = Path(path)
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stdout otherwise
    slots = list(range(len(frames))) if slots is None else list(slots)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        options = dict(spec.options)
        if spec.knob == "crf":
            options["crf"] = str(int(round(quality)))
        else:
            stream.bit_rate = int(quality)
        stream.options = options
        tb = Fraction(1, fps)
        for vf, slot in zip(yuv_frames(frames), slots):
            vf.pts, vf.time_base = slot, tb
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
