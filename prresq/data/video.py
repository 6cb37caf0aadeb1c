"""Video decoding with PyAV, frame sampling, the global-temporal grid and the two video data flows.

Decoding (PyAV only):
- `probe(path)` reads the stream header, decodes the first frame (this validates the file and
  reads the display matrix) and demuxes the packets after the last keyframe (the duration runs
  to the end of the last frame: container headers derive it from dts, which is short for
  variable-frame-rate clips with B-frames); `read_frames(path, num_frames=... | fps=...)`
  returns RGB PIL frames and their timestamps in seconds from the first frame.
- Frames are chosen by **time**, not by index: a target time t gets the frame on screen at t (the
  last frame whose presentation time is <= t). Variable-frame-rate clips (dropped frames, pts
  gaps) are therefore sampled as a player shows them. For a constant-rate clip this equals
  `sample_indices(...)` exactly.
- Long videos are not decoded end to end: before each wanted time the decoder seeks to the
  keyframe at or before it whenever that keyframe lies beyond the current decode position (or,
  with no keyframe index, when the gap exceeds `seek_gap_s`), then decodes forward. When a seek
  lands after the wanted time (MPEG-TS and FLV seek coarsely) it backs off and seeks again; a
  seek to the very start reopens the file. Tested to return the frames of a full decode in MP4,
  MPEG-TS, Matroska and FLV.
- Clips shorter than the requested number of frames: the sampled times are still uniform, so
  frames repeat uniformly (each frame about num/num_frames times, temporal order kept); e.g.
  4 frames sampled to 16 give 0000111122223333. `sample_indices(..., pad="last")` offers the
  other convention (all frames once, then the last frame repeated).
- Rotation metadata (the display matrix, or the legacy `rotate` tag) is applied exactly as the
  ffmpeg command line does by default (rotations by multiples of 90 degrees via transpose, flips,
  other angles by rotating with expansion), so frames come out upright as players show them.
- A missing, empty, corrupt or frameless file raises `prresq.data.records.DataError` naming it.

Data flows (see prresq/CONTRACTS.md, "Data flow seam"):
- `VideoGridFlow`: PreResQ-R1's global-temporal / local-spatial flow. Image 0 is a rows x cols
  grid of uniformly sampled frames ("Global multiframe picture:"), images 1..num_local are single
  frames sampled uniformly ("Local single frame picture i:"), then the prompt, as in the
  authors' released VQA inference script.
- `VideoNativeFlow`: Qwen2.5-VL's native video input. The flow samples and resizes the frames
  itself and hands the processor a `(T, H, W, 3)` uint8 array with `video_kwargs =
  {"video_metadata": [{"fps": T / duration, "total_num_frames": T, "frames_indices": 0..T-1, ...}],
  "do_sample_frames": False}`: in transformers 5 the processor derives `second_per_grid_ts =
  temporal_patch_size / fps` from that metadata (an `fps=` keyword alone is ignored and silently
  gives 24 fps). `prresq.data.collate.merge_video_kwargs` joins the kwargs of a batch (the
  metadata lists are concatenated, one entry per video).

Run `python -m prresq.data.video CLIP.mp4 [--num-frames 16] [--grid out.png]` to print a clip's
metadata and sampled timestamps (and write its 4x4 grid).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from prresq.data.dataflow import FlowOutput
from prresq.data.records import DataError

PathLike = str | os.PathLike
_EPS = 1e-6  # seconds: float slack when comparing presentation times

__all__ = [
    "VideoInfo",
    "probe",
    "sample_indices",
    "sample_times",
    "read_frames",
    "read_frames_at",
    "orient",
    "make_grid",
    "smart_resize",
    "VideoGridFlow",
    "VideoNativeFlow",
]


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


# ----------------------------------------------------------------------------------------------
# Sampling


def _count_for_fps(duration: float, fps: float, max_frames: int | None, min_frames: int = 1) -> int:
    n = int(math.floor(duration * fps + 1e-9))
    n = max(n, min_frames, 1)
    if max_frames is not None:
        n = min(n, max_frames)
    return n


def sample_indices(
    num_frames: int,
    num: int | None = None,
    mode: str = "uniform",
    *,
    fps: float | None = None,
    video_fps: float | None = None,
    max_frames: int | None = None,
    pad: str = "uniform",
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Frame indices to sample from a constant-rate clip of `num_frames` frames.

    Give `num` (how many) or `fps` with `video_fps` (samples per second of video; the count is
    floor(duration * fps), at least 1, at most `max_frames`, and the samples are then uniform).
    Modes: "uniform" (centre of each of `num` equal segments: floor((i + 0.5) * n / num)),
    "linspace" (first and last frame included), "random" (one random frame per segment, `rng`).
    Short clips (num > num_frames): pad="uniform" repeats frames uniformly in temporal order
    (what time-based decoding does), pad="last" takes every frame once and repeats the last.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames={num_frames}: a clip needs at least one frame")
    if (num is None) == (fps is None):
        raise ValueError("give exactly one of num (a frame count) or fps (frames per second)")
    if fps is not None:
        if not video_fps or video_fps <= 0 or fps <= 0:
            raise ValueError(f"sampling by fps={fps} needs the clip's video_fps (got {video_fps})")
        num = _count_for_fps(num_frames / video_fps, fps, max_frames)
    assert num is not None
    if num <= 0:
        raise ValueError(f"num={num}: sample at least one frame")
    if max_frames is not None:
        num = min(num, max_frames)
    n = num_frames
    if num > n and pad == "last":
        return list(range(n)) + [n - 1] * (num - n)
    if pad not in ("uniform", "last"):
        raise ValueError(f"pad={pad!r}: expected 'uniform' or 'last'")
    if mode == "uniform":
        return [min(n - 1, int(math.floor((i + 0.5) * n / num + 1e-9))) for i in range(num)]
    if mode == "linspace":
        return [int(round(x)) for x in np.linspace(0, n - 1, num)]
    if mode == "random":
        if num > n:
            return sample_indices(n, num, "uniform")
        rng = rng or np.random.default_rng()
        edges = [int(math.floor(i * n / num)) for i in range(num + 1)]
        return [int(rng.integers(edges[i], max(edges[i] + 1, edges[i + 1]))) for i in range(num)]
    raise ValueError(f"mode={mode!r}: expected 'uniform', 'linspace' or 'random'")


def sample_times(
    duration: float,
    num: int | None = None,
    mode: str = "uniform",
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    min_frames: int = 1,
    rng: np.random.Generator | None = None,
) -> list[float]:
    """Times (seconds from the first frame) to sample: the time-axis twin of `sample_indices`.

    "uniform": centre of each of `num` equal slices of [0, duration); "linspace": from 0 to just
    before the end; "random": a random time in each slice. With `fps`, num = floor(duration * fps)
    clamped to [min_frames, max_frames].
    """
    if duration <= 0:
        raise ValueError(f"duration={duration}: nothing to sample")
    if (num is None) == (fps is None):
        raise ValueError("give exactly one of num (a frame count) or fps (frames per second)")
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps={fps} must be positive")
        num = _count_for_fps(duration, fps, max_frames, min_frames)
    assert num is not None
    if max_frames is not None:
        num = min(num, max_frames)
    if num <= 0:
        raise ValueError(f"num={num}: sample at least one frame")
    if mode == "uniform":
        return [(i + 0.5) * duration / num for i in range(num)]
    if mode == "linspace":
        last = duration * (1 - 1e-3)
        return [float(x) for x in np.linspace(0.0, last, num)]
    if mode == "random":
        rng = rng or np.random.default_rng()
        return [float((i + rng.random()) * duration / num) for i in range(num)]
    raise ValueError(f"mode={mode!r}: expected 'uniform', 'linspace' or 'random'")


# ----------------------------------------------------------------------------------------------
# Decoding


@dataclass
class DecodeStats:
    """Counters from one decode (used by tests and benchmarks)."""

    seeks: int = 0
    decoded: int = 0


def _keyframe_times(stream: Any) -> list[float]:
    tb = stream.time_base
    if tb is None:
        return []
    try:
        entries = stream.index_entries
        return sorted(float(e.timestamp * tb) for e in entries if e.is_keyframe)
    except (AttributeError, TypeError):  # pragma: no cover - containers without an index
        return []


def _frame_time(frame: Any) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


class _Decoder:
    """Forward decoder over a file's video stream with seek-to-keyframe.

    A seek that lands after the wanted time (some demuxers index keyframes by dts or seek
    coarsely, e.g. MPEG-TS) backs off and seeks again; a seek to the very start reopens the
    file instead, since demuxers cannot always seek back to their first packet.
    """

    def __init__(self, path: Path, start: float) -> None:
        self.path, self.start = path, start
        self.stats = DecodeStats()
        self.container: Any = None
        self._restart()

    def _restart(self) -> None:
        if self.container is not None:
            self.container.close()
        self.container = _open(self.path)
        self.stream = self.container.streams.video[0]
        self._it: Iterator[Any] = self._frames()
        self._pending: Any = None
        self.position = self.start  # time of the last frame pulled (at open: the start, no seek needed there)

    def close(self) -> None:
        self.container.close()

    def _frames(self) -> Iterator[Any]:
        import av

        try:
            for frame in self.container.decode(self.stream):
                self.stats.decoded += 1
                yield frame
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise DataError(f"{self.path}: corrupt video, decoding failed ({type(e).__name__}: {e})") from e

    def next(self) -> Any:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        frame = next(self._it, None)
        if frame is not None:
            t = _frame_time(frame)
            self.position = t if t is not None else self.position
        return frame

    def push_back(self, frame: Any) -> None:
        self._pending = frame

    @property
    def pending_time(self) -> float | None:
        return None if self._pending is None else _frame_time(self._pending)

    def seek(self, t: float) -> Any:
        """Seek so that the next frame is at or before `t`; return that first frame (or None at EOF)."""
        import av

        tb = self.stream.time_base
        back = 0.0
        while True:
            target = t - back
            self.stats.seeks += 1
            if target <= self.start:
                self._restart()
                return self.next()
            try:
                self.container.seek(int(math.floor(target / tb)), stream=self.stream, backward=True)
            except (av.error.FFmpegError, OSError) as e:
                raise DataError(f"{self.path}: seek failed ({type(e).__name__}: {e})") from e
            self._it, self._pending = self._frames(), None
            first = self.next()
            ft = None if first is None else _frame_time(first)
            if first is not None and ft is not None and ft <= t + _EPS:
                return first
            back = max(2 * back, 0.5)


def _select(dec: _Decoder, times: Sequence[float], seek: bool, seek_gap_s: float) -> list[Any]:
    """For each absolute time (sorted), the frame on screen then (last frame with pts <= t)."""
    path = dec.path
    keyframes = _keyframe_times(dec.stream) if seek else []
    out: list[Any] = []
    prev: Any = None
    for t in times:
        pending_t = dec.pending_time
        if seek and (pending_t is None or pending_t <= t + _EPS):
            pos = dec.position
            if len(keyframes) > 1:  # Matroska lists only the first keyframe until its cues are read
                i = int(np.searchsorted(keyframes, t + _EPS, side="right")) - 1
                jump = i >= 0 and keyframes[i] > pos + _EPS
            else:
                jump = t - pos > seek_gap_s
            if jump:
                first = dec.seek(t)
                prev = None
                if first is not None:
                    dec.push_back(first)
        while True:
            frame = dec.next()
            if frame is None:
                break
            ft = _frame_time(frame)
            if ft is None:
                raise DataError(f"{path}: frames carry no timestamps; cannot sample by time")
            if ft <= t + _EPS:
                prev = frame
                continue
            dec.push_back(frame)
            break
        chosen = prev if prev is not None else dec.next()
        if chosen is None:
            raise DataError(f"{path}: video stream holds no decodable frame")
        if prev is None:  # target before the first frame: use the first frame, keep it pending
            dec.push_back(chosen)
        out.append(chosen)
    return out


def read_frames_at(
    path: PathLike,
    times: Sequence[float],
    *,
    seek: bool = True,
    seek_gap_s: float = 2.0,
    info: VideoInfo | None = None,
    return_stats: bool = False,
) -> Any:
    """Decode the frames shown at `times` (seconds from the first frame, any order).

    Returns `(frames, timestamps)`: RGB PIL images, upright, in the order of `times`, and each
    chosen frame's own presentation time (seconds from the first frame). `seek=False` decodes
    the whole stream (the reference the seek path must reproduce). With `return_stats`, a
    third element counts seeks and decoded frames.
    """
    from av.video.reformatter import VideoReformatter

    p = _check_file(path)
    info = info or probe(p)
    dec = _Decoder(p, info.start_time)
    try:
        order = sorted(range(len(times)), key=lambda i: times[i])
        absolute = [info.start_time + max(0.0, float(times[i])) for i in order]
        chosen = _select(dec, absolute, seek, seek_gap_s)

        reformatter = VideoReformatter()  # one per file: reuses the swscale context (10x faster on small frames)
        cache: dict[int, Image.Image] = {}
        frames: list[Image.Image] = [None] * len(times)  # type: ignore[list-item]
        stamps: list[float] = [0.0] * len(times)
        for i, frame in zip(order, chosen):
            key = id(frame)
            if key not in cache:
                matrix = _display_matrix(frame, dec.stream)
                rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()
                cache[key] = Image.fromarray(orient(rgb, matrix))
            frames[i] = cache[key]
            stamps[i] = (_frame_time(frame) or 0.0) - info.start_time
    finally:
        dec.close()
    if return_stats:
        return frames, stamps, dec.stats
    return frames, stamps


def read_frames(
    path: PathLike,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = 64,
    *,
    min_frames: int = 1,
    mode: str = "uniform",
    seek: bool = True,
    rng: np.random.Generator | None = None,
) -> tuple[list[Image.Image], list[float]]:
    """Sample `num_frames` frames uniformly in time, or `fps` frames per second (at most `max_frames`).

    Returns `(frames, timestamps)`: upright RGB PIL images and each frame's presentation time
    in seconds from the first frame. Neither given: 16 frames. Short clips repeat frames
    uniformly (see the module docstring).
    """
    if num_frames is None and fps is None:
        num_frames = 16
    info = probe(path)
    times = sample_times(
        info.duration, num_frames, mode, fps=fps, max_frames=max_frames, min_frames=min_frames, rng=rng
    )
    return read_frames_at(path, times, seek=seek, info=info)


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
    """Qwen2.5-VL native video input: sampled frames + their sampling fps, through `videos=`.

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
    size_factor: int = 28
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


# ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--grid", default=None, help="write the 4x4 global-temporal grid here")
    args = parser.parse_args()
    info = probe(args.path)
    print(info)
    frames, stamps = read_frames(args.path, args.num_frames, args.fps)
    print(f"{len(frames)} frames of {frames[0].size} at t = {[round(s, 3) for s in stamps]}")
    if args.grid:
        make_grid(read_frames(args.path, 16)[0]).save(args.grid)
        print(f"grid -> {args.grid}")


if __name__ == "__main__":
    main()
