"""The two video data flows through the real (tiny) Qwen2.5-VL processor.

VideoGridFlow: 1 grid + 3 local frames as images, labels interleaved, image tokens = sum of
grid_thw / merge^2. VideoNativeFlow: one video with metadata, so that the processor's
`video_grid_thw`, video token count and `second_per_grid_ts` follow from the sampled frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from PIL import Image

from prresq.data.collate import merge_video_kwargs
from prresq.data.dataflow import Flow, FlowOutput, build_flow
from prresq.data.photos import reference_photos
from prresq.data.synthetic_video import camera_path, render
from prresq.data.video import VideoGridFlow, VideoNativeFlow, probe, read_frames_at, smart_resize
from prresq.data.video.encode import encode_clip
from prresq.models import load_processor

PROMPT = "Rate both global and local quality of this video."
MERGE = 2  # spatial merge size of the tiny model
PATCH = 14
TEMPORAL = 2


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, min_pixels=28 * 28, max_pixels=224 * 224)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 24-frame (3 s at 8 fps) 160x112 camera pan over a real photo."""
    photo = reference_photos(["astronaut"], min_count=1)["astronaut"]
    _, boxes = camera_path(photo.size, (160, 112), 24, np.random.default_rng(0), "pan")
    return encode_clip(render(photo, boxes, (160, 112)), tmp_path_factory.mktemp("flow") / "pan.mp4", fps=8)


def _call(processor, outs: list[FlowOutput]):
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": o.content}], tokenize=False, add_generation_prompt=True
        )
        for o in outs
    ]
    images = [im for o in outs for im in o.images] or None
    videos = [v for o in outs for v in o.videos] or None
    kwargs = merge_video_kwargs([o.video_kwargs for o in outs])
    return processor(text=texts, images=images, videos=videos, padding=True, return_tensors="pt", **kwargs)


def _count(processor, inputs, token: str) -> int:
    return int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids(token)).sum())


def test_grid_flow_output(clip):
    flow = VideoGridFlow(rows=4, cols=4, tile_size=64, num_local=3, local_size=96)
    assert isinstance(flow, Flow)
    out = flow(clip, PROMPT)
    assert len(out.images) == 4 and out.videos == [] and out.video_kwargs == {}
    assert out.images[0].size == (4 * 64, 4 * 45)  # 160x112 frames: tiles 64x45
    assert all(im.size == (96, 67) for im in out.images[1:])
    types = [c["type"] for c in out.content]
    assert types == ["text", "image", "text", "image", "text", "image", "text", "image", "text"]
    assert out.content[0]["text"] == "Global multiframe picture:"
    assert [c["text"] for c in out.content[2:7:2]] == [f"Local single frame picture {i}:" for i in (1, 2, 3)]
    assert out.content[-1]["text"] == PROMPT
    bare = VideoGridFlow(num_local=2, labels=False, local_size=None)(clip, PROMPT)
    assert [c["type"] for c in bare.content] == ["image", "image", "image", "text"]
    assert bare.images[1].size == (160, 112)  # native resolution


def test_grid_flow_local_frames_are_uniform_in_time(clip):
    grid_frames, local = VideoGridFlow(num_local=3).frames(clip)
    assert len(grid_frames) == 16 and len(local) == 3
    # 24 frames, 3 local ones: the centres of three 8-frame thirds are frames 4, 12 and 20
    expected, _ = read_frames_at(clip, [4 / 8, 12 / 8, 20 / 8])
    for a, b in zip(local, expected):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_grid_flow_through_processor(processor, clip):
    out = VideoGridFlow(tile_size=64, local_size=96)(clip, PROMPT)
    inputs = _call(processor, [out])
    thw = inputs["image_grid_thw"]
    assert thw.shape == (4, 3)
    n_img = _count(processor, inputs, "<|image_pad|>")
    assert n_img == int(thw.prod(dim=1).sum()) // MERGE**2
    assert inputs["pixel_values"].shape[0] == int(thw.prod(dim=1).sum())
    h, w = smart_resize(out.images[0].height, out.images[0].width, PATCH * MERGE, 28 * 28, 224 * 224)
    assert thw[0].tolist() == [1, h // PATCH, w // PATCH]
    assert "pixel_values_videos" not in inputs
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert text.index("Global multiframe picture:") < text.index("Local single frame picture 1:")


def test_native_flow_frame_count_rules():
    flow = VideoNativeFlow(fps=2.0, max_frames=10, min_frames=4)
    assert flow.frame_count(3.0) == 6
    assert flow.frame_count(30.0) == 10
    assert flow.frame_count(0.5) == 4
    assert VideoNativeFlow(num_frames=7).frame_count(3.0) == 8  # multiple of the temporal patch
    with pytest.raises(ValueError):
        VideoNativeFlow(num_frames=None, fps=None)


def test_native_flow_through_processor(processor, clip):
    flow = VideoNativeFlow(fps=2.0, max_frames=16, max_pixels=112 * 112)
    out = flow(clip, PROMPT)
    assert [c["type"] for c in out.content] == ["video", "text"] and out.images == []
    (video,) = out.videos
    duration = probe(clip).duration
    t, h, w, c = video.shape
    assert (t, c) == (6, 3) and video.dtype == np.uint8 and h % 28 == 0 and w % 28 == 0
    meta = out.video_kwargs["video_metadata"][0]
    assert out.video_kwargs["do_sample_frames"] is False
    assert meta["fps"] == pytest.approx(t / duration) and meta["total_num_frames"] == t

    inputs = _call(processor, [out])
    thw = inputs["video_grid_thw"]
    assert thw.tolist() == [[t // TEMPORAL, h // PATCH, w // PATCH]]
    assert inputs["pixel_values_videos"].shape == (int(thw.prod()), 3 * TEMPORAL * PATCH * PATCH)
    assert _count(processor, inputs, "<|video_pad|>") == int(thw.prod()) // MERGE**2
    assert _count(processor, inputs, "<|image_pad|>") == 0
    # seconds per temporal grid step follow the sampling rate (2 frames per step at 2 fps = 1 s)
    assert torch.as_tensor(inputs["second_per_grid_ts"]).tolist() == pytest.approx([TEMPORAL * duration / t])


def test_native_flow_batch_with_merged_kwargs(processor, clip, tmp_path):
    frames = np.stack([np.asarray(Image.new("RGB", (112, 84), (i * 20, 90, 160))) for i in range(8)])
    short = encode_clip(frames, tmp_path / "short.mp4", fps=4)  # 2 s
    a = VideoNativeFlow(num_frames=8, max_pixels=112 * 112)(clip, PROMPT)
    b = VideoNativeFlow(num_frames=4, max_pixels=112 * 112)(short, PROMPT)
    inputs = _call(processor, [a, b])
    thw = inputs["video_grid_thw"]
    assert thw[:, 0].tolist() == [4, 2]
    assert torch.as_tensor(inputs["second_per_grid_ts"]).tolist() == pytest.approx([2 * 3.0 / 8, 2 * 2.0 / 4])
    per_row = (inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")).sum(dim=1)
    assert per_row.tolist() == (thw.prod(dim=1) // MERGE**2).tolist()
    with pytest.raises(ValueError):
        merge_video_kwargs([{"do_sample_frames": False}, {"do_sample_frames": True}])


def test_flows_build_from_registry_and_config(clip):
    flow = build_flow({"_target_": "prresq.data.video.VideoGridFlow", "tile_size": [64, 48], "num_local": 1})
    out = flow(clip, PROMPT)
    assert out.images[0].size == (256, 192) and len(out.images) == 2
    native = build_flow({"name": "video_native", "num_frames": 4})
    assert isinstance(native, VideoNativeFlow)


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory) -> Path:
    """A 6-frame 640x360 pan: wider than the old 448 px cap on local frames."""
    photo = reference_photos(["astronaut"], min_count=1)["astronaut"]
    _, boxes = camera_path(photo.size, (640, 360), 6, np.random.default_rng(1), "pan")
    return encode_clip(render(photo, boxes, (640, 360)), tmp_path_factory.mktemp("wide") / "pan.mp4", fps=6)


def _grid_flow_from_config(overrides: list[str]) -> VideoGridFlow:
    cfg = compose_config("train", ["dataflow=video_grid", *overrides])
    return instantiate(cfg.dataflow)


def test_grid_flow_config_feeds_local_frames_at_native_resolution(processor, wide_clip):
    """Pins item 10: `dataflow=video_grid` feeds the local-spatial frames at the clip's native resolution (as
    the released flow does), so only the processor's max_pixels bounds them (here 224 * 224: smart_resize of
    360x640); `dataflow.local_size=448` is the optional downscale to 448 px on the longer side."""
    flow = _grid_flow_from_config([])
    out = flow(wide_clip, PROMPT)
    assert [im.size for im in out.images[1:]] == [(640, 360)] * 3
    thw = _call(processor, [out])["image_grid_thw"]
    h, w = smart_resize(360, 640, PATCH * MERGE, 28 * 28, 224 * 224)
    assert thw[1:].tolist() == [[1, h // PATCH, w // PATCH]] * 3

    small = _grid_flow_from_config(["dataflow.local_size=448"])(wide_clip, PROMPT)
    assert [im.size for im in small.images[1:]] == [(448, 252)] * 3
    assert small.images[0].size == out.images[0].size  # the grid does not depend on local_size
