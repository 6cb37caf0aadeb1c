"""Open a video with PyAV and read its header: `probe` (duration, frame rate, size, rotation) and the
display-matrix orientation (`orient`) applied to every decoded frame. See `prresq.data.video`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from prresq.data.records import DataError

PathLike = str | os.PathLike
_EPS = 1e-6  # seconds: float slack when comparing presentation times

# ----------------------------------------------------------------------------------------------
# Metadata


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` reads from a file.

    num_frames: coded frames in the stream (the container's count, else counted by demuxing);
    fps: average frame rate; duration: seconds from the first frame to the end of the last;
    width/height: the *display* size (after rotation); rotation: degrees counter-clockwise the
    stored frames are turned for display (PyAV's `VideoFrame.rotation` convention, in [0, 360);
    for a mirrored matrix FFmpeg's rotation component, e.g. 180 for a plain horizontal flip);
    display_matrix: the raw 3x3 matrix (row-major, 16.16 fixed point) when the file carries
    one, the full transform `orient` applies; start_time: the first frame's pts in seconds.
    """

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int = 0
    display_matrix: tuple[int, ...] | None = None
    start_time: float = 0.0


def _check_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: video file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty video file (0 bytes)")
    return p


def _open(path: Path) -> Any:
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot open video ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: no video stream")
    return container


def _display_matrix(frame: Any, stream: Any) -> tuple[int, ...] | None:
    """The frame's display matrix (9 int32), or one built from a legacy `rotate` tag, or None."""
    from av.sidedata.sidedata import Type

    try:
        sd = frame.side_data.get(Type.DISPLAYMATRIX)
    except (KeyError, AttributeError, TypeError):  # pragma: no cover - older PyAV
        sd = None
    if sd is not None:
        raw = np.frombuffer(bytes(sd), dtype=np.int32)
        if raw.size >= 9:
            return tuple(int(v) for v in raw[:9])
    tags = {str(k).lower(): v for k, v in (stream.metadata or {}).items()}
    tag = tags.get("rotate")  # legacy, clockwise degrees (Matroska writes tags as ROTATE)
    if tag:
        try:
            clockwise = float(tag)
        except ValueError:
            return None
        return _rotation_matrix(-clockwise)
    return None


def _rotation_matrix(ccw_degrees: float) -> tuple[int, ...]:
    """FFmpeg's `av_display_rotation_set(m, -ccw)`: a matrix turning the frame ccw for display."""
    rad = math.radians(ccw_degrees)
    c, s = math.cos(rad), math.sin(rad)
    fp = 1 << 16
    return (round(c * fp), round(-s * fp), 0, round(s * fp), round(c * fp), 0, 0, 0, 1 << 30)


def _clockwise_theta(m: Sequence[int]) -> float:
    """FFmpeg's `get_rotation`: the clockwise angle in [0, 360) a player applies for this matrix."""
    a, b, c, d = (v / 65536.0 for v in (m[0], m[1], m[3], m[4]))
    s0, s1 = math.hypot(a, c), math.hypot(b, d)
    if s0 == 0 or s1 == 0:
        return 0.0
    ccw = -math.degrees(math.atan2(b / s1, a / s0))  # av_display_rotation_get
    theta = -round(ccw)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    return float(theta)


def orient(array: np.ndarray, display_matrix: Sequence[int] | None) -> np.ndarray:
    """Apply a display matrix to an `(H, W, C)` frame the way the ffmpeg CLI autorotates.

    Port of fftools' filter choice: theta = clockwise angle; 90 -> transpose clock (or
    cclock_flip when mirrored), 270 -> cclock (or clock_flip), 180 -> hflip and/or vflip by the
    diagonal signs, 0 -> vflip when mirrored vertically, any other angle -> rotation with
    expansion (black corners).
    """
    if display_matrix is None:
        return array
    m = display_matrix
    theta = _clockwise_theta(m)
    if abs(theta - 90) < 1.0:
        out = array.transpose(1, 0, 2) if m[3] > 0 else np.rot90(array, k=-1)  # cclock_flip / clock
    elif abs(theta - 180) < 1.0:
        out = array
        if m[0] < 0:
            out = out[:, ::-1]
        if m[4] < 0:
            out = out[::-1]
    elif abs(theta - 270) < 1.0:
        out = np.flipud(np.rot90(array, k=-1)) if m[3] < 0 else np.rot90(array, k=1)  # clock_flip / cclock
    elif abs(theta) > 1.0:
        img = Image.fromarray(np.ascontiguousarray(array))
        return np.asarray(img.rotate(-theta, resample=Image.Resampling.BILINEAR, expand=True))
    else:
        out = array[::-1] if m[4] < 0 else array
    return np.ascontiguousarray(out)


def _rotation_ccw(display_matrix: Sequence[int] | None) -> int:
    if display_matrix is None:
        return 0
    return int(round(-_clockwise_theta(display_matrix))) % 360


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _first_frame(container: Any, stream: Any, path: Path) -> Any:
    import av

    try:
        for frame in container.decode(stream):
            return frame
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"{path}: corrupt video, cannot decode ({type(e).__name__}: {e})") from e
    raise DataError(f"{path}: video stream holds no decodable frame")


def _end_time(container: Any, stream: Any) -> float | None:
    """When the last frame stops showing: the largest pts after the last keyframe + one frame period.

    Packet durations are not used: in MP4 they are dts deltas, wrong for reordered (B-) frames.
    The period is 1 / the stream's guessed rate (for a clip with dropped frames, the nominal rate).
    """
    import av

    tb = stream.time_base
    rate = stream.guessed_rate or stream.base_rate or stream.average_rate
    if tb is None or not rate:
        return None
    last = None
    try:
        container.seek(2**62, stream=stream, backward=True)  # the last keyframe
        for packet in container.demux(stream):
            if packet.pts is not None and (last is None or packet.pts > last):
                last = packet.pts
    except (av.error.FFmpegError, OSError):
        return None
    return None if last is None else float(last * tb) + 1.0 / float(rate)


def _probe_open(container: Any, path: Path) -> VideoInfo:
    import av

    stream = container.streams.video[0]
    tb = stream.time_base
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    num_frames = int(stream.frames or 0)
    if num_frames <= 0:  # e.g. Matroska/WebM/MPEG-TS headers carry no count: count packets (no decoding)
        counter = _open(path)  # a fresh demuxer: seeking back to the first packet is unreliable (MPEG-TS)
        try:
            num_frames = sum(1 for p in counter.demux(counter.streams.video[0]) if p.size)
        except (av.error.FFmpegError, OSError) as e:
            raise DataError(f"{path}: corrupt video, cannot demux ({type(e).__name__}: {e})") from e
        finally:
            counter.close()
    duration = _seconds(stream.duration, tb)
    if not duration and container.duration:
        duration = container.duration / 1_000_000  # av.time_base
    if not duration and fps > 0:
        duration = num_frames / fps
    if fps <= 0 and duration:
        fps = num_frames / duration
    start = _seconds(stream.start_time, tb) or 0.0
    first = _first_frame(container, stream, path)
    if first.pts is not None and tb is not None:
        start = float(first.pts * tb)
    end = _end_time(container, stream)
    if end is not None and end > start:
        duration = end - start  # headers derive it from dts: too short for VFR clips with B-frames
    matrix = _display_matrix(first, stream)
    h, w = orient(np.zeros((first.height, first.width, 1), np.uint8), matrix).shape[:2]
    if num_frames <= 0 or not duration or duration <= 0:
        raise DataError(f"{path}: video reports no frames or no duration")
    return VideoInfo(
        num_frames=num_frames,
        fps=fps,
        duration=float(duration),
        width=int(w),
        height=int(h),
        rotation=_rotation_ccw(matrix),
        display_matrix=matrix,
        start_time=start,
    )


def probe(path: PathLike) -> VideoInfo:
    """Read a video's frame count, fps, duration, display size and rotation (decodes one frame)."""
    p = _check_file(path)
    container = _open(p)
    try:
        return _probe_open(container, p)
    finally:
        container.close()
