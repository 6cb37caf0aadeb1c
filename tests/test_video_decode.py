"""prresq.data.video decoding: sampling indices, time-based decoding, seeking, rotation, errors, grid."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from prresq.data.video import (
    DataError,
    make_grid,
    orient,
    probe,
    read_frames,
    read_frames_at,
    sample_indices,
    sample_times,
)
from prresq.data.video.encode import yuv_frame

W, H = 96, 64
BITS = 7  # frame index written as a 7-bit barcode of 12x12 blocks along the top


def frame_with_index(i: int) -> np.ndarray:
    a = np.zeros((H, W, 3), np.uint8)
    a[12:, :, 0] = np.linspace(40, 200, W, dtype=np.uint8)[None, :]  # asymmetric background
    a[12:, :, 2] = np.linspace(30, 220, H - 12, dtype=np.uint8)[:, None]
    for b in range(BITS):
        a[:12, 12 * b : 12 * (b + 1)] = 255 if (i >> b) & 1 else 0
    return a


def index_of(img: Image.Image | np.ndarray) -> int:
    a = np.asarray(img).astype(np.float32).mean(axis=2)
    return sum(1 << b for b in range(BITS) if a[3:9, 12 * b + 3 : 12 * b + 9].mean() > 128)


def write_clip(
    path: Path,
    n: int,
    fps: int = 8,
    gop: int | None = None,
    rotation: float | None = None,
    hflip: bool = False,
    slots: list[int] | None = None,
    lossless: bool = False,
) -> Path:
    """Lossy x264 (CRF 10, B-frames) by default; `lossless` where pixels are compared across files
    (x264's output can differ between runs by a few levels, its lossless mode cannot)."""
    slots = list(range(n)) if slots is None else slots
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        opts = {"qp": "0"} if lossless else {"crf": "10"}
        opts["threads"] = "1"
        if gop:
            opts.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        s.options = opts
        if rotation is not None or hflip:
            s.set_display_rotation(rotation or 0, hflip=hflip)
        for slot in slots:
            f = yuv_frame(frame_with_index(slot))
            f.pts, f.time_base = slot, Fraction(1, fps)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "cfr64": write_clip(d / "cfr64.mp4", 64),
        "short4": write_clip(d / "short4.mp4", 4),
        "gop8": write_clip(d / "gop8.mp4", 96, gop=8),
        "vfr": write_clip(d / "vfr.mp4", 0, slots=[0, 1, 2, 6, 7, 8, 9, 15]),
        "plain": write_clip(d / "plain.mp4", 4, lossless=True),
    }


# ---------------------------------------------------------------- sampling indices


def test_sample_indices_uniform_linspace_random():
    assert sample_indices(64, 16) == list(range(2, 64, 4))
    assert sample_indices(10, 1) == [5]
    lin = sample_indices(64, 5, "linspace")
    assert lin[0] == 0 and lin[-1] == 63 and lin == sorted(lin)
    rnd = sample_indices(64, 16, "random", rng=np.random.default_rng(0))
    assert [r // 4 for r in rnd] == list(range(16))  # one frame inside each segment
    with pytest.raises(ValueError):
        sample_indices(64)
    with pytest.raises(ValueError):
        sample_indices(0, 4)


def test_sample_indices_by_fps():
    # 64 frames at 8 fps = 8 s; 2 per second -> 16 uniformly spread frames
    assert sample_indices(64, fps=2, video_fps=8) == list(range(2, 64, 4))
    assert len(sample_indices(64, fps=2, video_fps=8, max_frames=6)) == 6
    assert sample_indices(64, fps=0.05, video_fps=8) == [32]  # at least one frame
    with pytest.raises(ValueError):
        sample_indices(64, fps=2)  # needs the video's fps


def test_sample_indices_short_clip_repeats_uniformly():
    assert sample_indices(4, 16) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert sample_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]
    assert sample_indices(4, 7, pad="last") == [0, 1, 2, 3, 3, 3, 3]


def test_sample_times():
    assert sample_times(8.0, 4) == [1.0, 3.0, 5.0, 7.0]
    assert len(sample_times(8.0, fps=2)) == 16
    assert len(sample_times(8.0, fps=2, max_frames=5)) == 5
    assert len(sample_times(1.0, fps=1, min_frames=4)) == 4


# ---------------------------------------------------------------- decoding


def test_probe(clips):
    info = probe(clips["cfr64"])
    assert (info.num_frames, info.fps, info.duration) == (64, 8.0, 8.0)
    assert (info.width, info.height, info.rotation) == (W, H, 0)


def test_read_frames_equals_sample_indices_on_constant_rate(clips):
    frames, stamps = read_frames(clips["cfr64"], 16)
    expected = sample_indices(64, 16)
    assert [index_of(f) for f in frames] == expected
    assert stamps == pytest.approx([i / 8 for i in expected])
    assert all(f.size == (W, H) and f.mode == "RGB" for f in frames)


def test_read_frames_by_fps(clips):
    frames, stamps = read_frames(clips["cfr64"], fps=2, max_frames=None)
    assert [index_of(f) for f in frames] == sample_indices(64, fps=2, video_fps=8)
    assert np.diff(stamps) == pytest.approx([0.5] * 15)
    frames, _ = read_frames(clips["cfr64"], fps=2, max_frames=10)
    assert len(frames) == 10


def test_short_clip_repeats_frames_uniformly(clips):
    frames, stamps = read_frames(clips["short4"], 16)
    assert [index_of(f) for f in frames] == sample_indices(4, 16)
    assert sorted(set(stamps)) == pytest.approx([0, 0.125, 0.25, 0.375])


def test_variable_frame_rate_holds_previous_frame(clips):
    info = probe(clips["vfr"])
    assert info.num_frames == 8 and info.duration == pytest.approx(2.0)
    frames, stamps = read_frames_at(clips["vfr"], [(i + 0.5) / 8 for i in range(16)])
    # slots 3-5 and 10-14 were dropped: a player keeps showing the previous frame
    assert [index_of(f) for f in frames] == [0, 1, 2, 2, 2, 2, 6, 7, 8, 9, 9, 9, 9, 9, 9, 15]
    assert stamps[3] == pytest.approx(0.25) and stamps[-1] == pytest.approx(15 / 8)


def test_seek_decoding_equals_full_decoding(clips):
    path = clips["gop8"]
    # unordered, two on one frame; 3.95 and 9.97 lie just before a keyframe (4 s, 10 s) whose dts
    # (pts - 2 B-frames) is before them: the seek overshoots and must back off
    times = [11.3, 0.05, 3.3, 3.31, 3.95, 9.97, 7.9, 5.5, 11.9, 0.5]
    frames, stamps, stats = read_frames_at(path, times, return_stats=True)
    full, full_stamps, full_stats = read_frames_at(path, times, seek=False, return_stats=True)
    assert full_stats.seeks == 0 and stats.seeks >= 3
    assert stats.decoded < full_stats.decoded
    assert stamps == full_stamps
    for a, b in zip(frames, full):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert [index_of(f) for f in frames] == [int(t * 8) for t in times]
    # sparse times: each costs one seek and at most one GOP (8 frames) plus the B-frame delay
    sparse, _, stats = read_frames_at(path, [0.1, 6.2, 11.6], return_stats=True)
    assert [index_of(f) for f in sparse] == [0, 49, 92]
    assert stats.decoded <= 3 * 11 < full_stats.decoded / 2


@pytest.mark.parametrize("ext", ["ts", "mkv", "flv"])
def test_seek_decoding_in_other_containers(tmp_path, ext):
    """MPEG-TS / FLV seeks overshoot (and cannot return to the first packet); Matroska's index is lazy."""
    path = write_clip(tmp_path / f"gop8.{ext}", 96, gop=8)
    times = [0.05, 3.95, 3.8, 9.97, 6.1, 11.9, 0.3]
    frames, stamps, stats = read_frames_at(path, times, return_stats=True)
    full, full_stamps, full_stats = read_frames_at(path, times, seek=False, return_stats=True)
    assert stats.seeks >= 2 and stats.decoded < full_stats.decoded
    assert stamps == pytest.approx(full_stamps)
    assert [index_of(f) for f in frames] == [index_of(f) for f in full] == [int(t * 8) for t in times]


# ---------------------------------------------------------------- rotation


@pytest.mark.parametrize(
    ("rotation", "hflip", "expected"),
    [
        (90, False, lambda a: np.rot90(a, 1)),  # counter-clockwise, PyAV / FFmpeg convention
        (-90, False, lambda a: np.rot90(a, -1)),
        (180, False, lambda a: np.rot90(a, 2)),
        (0, True, lambda a: a[:, ::-1]),
        (90, True, lambda a: np.rot90(a, 1)[:, ::-1]),  # rotate, then mirror
    ],
)
def test_rotation_metadata_is_applied(tmp_path, clips, rotation, hflip, expected):
    path = write_clip(tmp_path / "rot.mp4", 4, rotation=rotation, hflip=hflip, lossless=True)
    info = probe(path)
    upright = np.asarray(read_frames(clips["plain"], 4)[0][1])
    frames, _ = read_frames(path, 4)
    got = np.asarray(frames[1])
    assert np.array_equal(got, expected(upright))
    assert (info.width, info.height) == (got.shape[1], got.shape[0])
    if not hflip:
        assert info.rotation == rotation % 360


def test_legacy_rotate_tag_is_applied(tmp_path, clips):
    """No display matrix, only the old `rotate` tag (clockwise degrees; Matroska stores it as ROTATE)."""
    path = tmp_path / "tag.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"qp": "0", "threads": "1"}
        s.metadata["rotate"] = "90"
        for i in range(4):
            for p in s.encode(yuv_frame(frame_with_index(i))):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (270, H, W)
    got = np.asarray(read_frames(path, 4)[0][2])
    upright = np.asarray(read_frames(clips["plain"], 4)[0][2])
    assert np.array_equal(got, np.rot90(upright, -1))  # turned clockwise


def test_orient_other_angles_expand():
    a = np.full((40, 60, 3), 200, np.uint8)
    m = (55706, -34493, 0, 34493, 55706, 0, 0, 0, 1 << 30)  # 31.8 degrees counter-clockwise
    out = orient(a, m)
    assert out.shape[0] > 40 and out.shape[1] > 60 and out[0, 0].sum() == 0  # black corners


def test_orient_without_matrix_is_identity():
    a = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert orient(a, None) is a


# ---------------------------------------------------------------- errors


def test_missing_empty_corrupt_files_raise_data_error_naming_the_file(tmp_path, clips):
    missing = tmp_path / "nope.mp4"
    empty = tmp_path / "empty.mp4"
    empty.touch()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clips["cfr64"].read_bytes()[:1500])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    audio = tmp_path / "audio.wav"
    with av.open(str(audio), "w") as out:
        s = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            out.mux(p)
    for path in (missing, empty, junk, truncated, text, audio):
        with pytest.raises(DataError, match=path.name):
            read_frames(path, 4)
        with pytest.raises(ValueError):  # DataError is a ValueError
            probe(path)


# ---------------------------------------------------------------- grid


def _solid(i: int, size: tuple[int, int] = (80, 40)) -> Image.Image:
    return Image.new("RGB", size, (i * 15, 255 - i * 15, (i * 47) % 256))


def test_make_grid_shape_and_order():
    frames = [_solid(i) for i in range(16)]
    grid = make_grid(frames, rows=4, cols=4, tile_size=40)  # longer side 40 -> tiles 40x20
    assert grid.size == (160, 80)
    a = np.asarray(grid)
    for i in range(16):
        r, c = divmod(i, 4)
        assert tuple(a[r * 20 + 10, c * 40 + 20]) == frames[i].getpixel((0, 0))
    assert make_grid(frames, 4, 4, tile_size=(30, 30), border=2).size == (4 * 30 + 6, 4 * 30 + 6)
    assert make_grid(frames, 2, 8, tile_size=None).size == (8 * 80, 2 * 40)


def test_make_grid_resamples_other_frame_counts():
    frames = [_solid(i) for i in range(4)]
    a = np.asarray(make_grid(frames, 4, 4, tile_size=(10, 10)))
    seen = [tuple(a[r * 10 + 5, c * 10 + 5]) for r in range(4) for c in range(4)]
    assert seen == [frames[i].getpixel((0, 0)) for i in sample_indices(4, 16)]
    with pytest.raises(ValueError):
        make_grid([], 4, 4)
