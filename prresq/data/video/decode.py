"""Frame sampling by time and time-based decoding with keyframe seeks: `sample_indices`,
`sample_times`, `read_frames_at`, `read_frames`. See `prresq.data.video`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from prresq.data.records import DataError
from prresq.data.video.probe import _EPS, PathLike, VideoInfo, _check_file, _display_matrix, _open, orient, probe

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
