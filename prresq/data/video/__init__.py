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

Modules: `probe` (header, orientation), `decode` (sampling by time, seeking decoder), `flows` (grid,
resizing, the two data flows), `encode` (writing clips: reproducible yuv420p input, dropped-frame gaps).

Run `python -m prresq.data.video CLIP.mp4 [--num-frames 16] [--grid out.png]` to print a clip's
metadata and sampled timestamps (and write its 4x4 grid).
"""

from prresq.data.records import DataError
from prresq.data.video.decode import DecodeStats, read_frames, read_frames_at, sample_indices, sample_times
from prresq.data.video.flows import VideoGridFlow, VideoNativeFlow, make_grid, smart_resize
from prresq.data.video.probe import VideoInfo, orient, probe

__all__ = [
    "DataError",
    "DecodeStats",
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
