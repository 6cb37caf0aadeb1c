"""prresq.data.synthetic_video: MOS monotone in level per (photo, type), split by photo, cached, decodable."""

from __future__ import annotations

import inspect
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from prresq.data.datamodule import QualityDataModule
from prresq.data.synthetic_set import MANIFEST, split_photos
from prresq.data.synthetic_video import (
    DEGRADATIONS,
    camera_path,
    freeze,
    generate_synthetic_vqa,
    stutter,
)
from prresq.data.video import probe, read_frames
from prresq.models import load_processor

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
LEVELS = 3
FRAMES = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_synthetic_vqa(
        tmp_path_factory.mktemp("svqa"),
        levels=LEVELS,
        frames=FRAMES,
        width=64,
        height=48,
        photos=PHOTOS,
        progress=False,
    )


def _rows(out: Path) -> dict[str, list[dict]]:
    return {s: [json.loads(line) for line in open(out / f"{s}.jsonl")] for s in ("train", "val", "test")}


def _mos(row: dict) -> float:
    return float(row["conversations"][1]["value"])


def test_rows_follow_the_anchor_format(dataset):
    rows = [r for split in _rows(dataset).values() for r in split]
    assert len(rows) == len(PHOTOS) * len(DEGRADATIONS) * LEVELS
    for r in rows[:: len(rows) // 10]:
        assert r["dataset_name"] == "synthetic_vqa"
        assert r["image"] == r["video"] and r["image"][0].startswith("videos/") and r["image"][0].endswith(".mp4")
        assert r["conversations"][0] == {"from": "human", "value": "<video>"}
        assert 1.0 <= _mos(r) <= 5.0
        assert (dataset / r["image"][0]).is_file()
    assert len({r["id"] for r in rows}) == len(rows)


def test_mos_strictly_decreasing_in_level_within_each_photo_and_type(dataset):
    groups: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for split in _rows(dataset).values():
        for r in split:
            groups[r["reference"], r["distortion"]][r["level"]].append(_mos(r))
    assert len(groups) == len(PHOTOS) * len(DEGRADATIONS)
    for key, by_level in groups.items():
        assert sorted(by_level) == list(range(1, LEVELS + 1)), key
        for lv in range(1, LEVELS):
            assert min(by_level[lv]) > max(by_level[lv + 1]), (key, dict(by_level))


def test_split_by_source_photo(dataset):
    rows = _rows(dataset)
    photos = {s: {r["reference"] for r in split} for s, split in rows.items()}
    assert not (photos["train"] & photos["val"]) and not (photos["train"] & photos["test"])
    assert not (photos["val"] & photos["test"])
    expected = split_photos(PHOTOS, 42, (6, 2, 2))
    assert {s: sorted(p) for s, p in photos.items()} == {s: sorted(p) for s, p in expected.items()}
    assert json.loads((dataset / MANIFEST).read_text())["photos"] == expected


def test_second_call_is_cached(dataset):
    stamp = (dataset / MANIFEST).stat().st_mtime_ns
    again = generate_synthetic_vqa(
        dataset, levels=LEVELS, frames=FRAMES, width=64, height=48, photos=PHOTOS, progress=False
    )
    assert again == dataset and (dataset / MANIFEST).stat().st_mtime_ns == stamp


def test_clips_decode_and_drop_is_variable_frame_rate(dataset):
    rows = {r["id"]: r for split in _rows(dataset).values() for r in split}
    clean = probe(dataset / rows["astronaut_c00_blur_l1"]["video"][0])
    assert (clean.num_frames, clean.width, clean.height) == (FRAMES, 64, 48)
    assert clean.duration == pytest.approx(FRAMES / 8)
    dropped = probe(dataset / rows["astronaut_c00_drop_l3"]["video"][0])
    assert dropped.num_frames < FRAMES and dropped.duration == pytest.approx(FRAMES / 8)
    frames, _ = read_frames(dataset / rows["astronaut_c00_drop_l3"]["video"][0], FRAMES)
    assert len(frames) == FRAMES
    # a dropped slot shows the previous frame again: fewer distinct frames than slots
    distinct = {np.asarray(f).tobytes() for f in frames}
    assert len(distinct) == dropped.num_frames


def test_temporal_degradations_grow_with_level():
    clip = np.arange(16)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    rng = np.random.default_rng(0)
    for fn in (stutter, freeze):
        held = [16 - len(np.unique(fn(clip, s, rng, None)[0][:, 0, 0, 0])) for s in (0.0, 0.5, 1.0)]
        assert held[0] < held[1] < held[2], (fn.__name__, held)


def test_camera_path_moves_inside_the_photo():
    for motion in ("pan", "zoom_in", "zoom_out"):
        _, boxes = camera_path((400, 300), (160, 112), 16, np.random.default_rng(1), motion)
        arr = np.array(boxes)
        assert len(boxes) == 16 and (arr[:, :2] >= -1e-6).all()
        assert (arr[:, 2] <= 400 + 1e-6).all() and (arr[:, 3] <= 300 + 1e-6).all()
        assert np.abs(arr[0] - arr[-1]).max() > 10  # the camera moves


# ---------------------------------------------------------------- configs + datamodule + collator

CONF = Path(__file__).resolve().parents[1] / "conf"
PROMPT = "Rate the global and the local quality of this video."


def _data_cfg(name: str, data_dir: Path):
    return compose_config("train", [f"data={name}"], data_dir=data_dir)


def test_data_configs_instantiate(tmp_path):
    vqa = instantiate(_data_cfg("synthetic_vqa", tmp_path).data, _recursive_=False)
    assert isinstance(vqa, QualityDataModule) and vqa.dataset_names == {0: "synthetic_vqa"}
    assert vqa.specs["test"][0].jsonl == str(tmp_path / "synthetic_vqa" / "test.jsonl")
    options = dict(vqa.synthetic)
    assert get_method(options.pop("_target_")) is generate_synthetic_vqa
    assert options["out_dir"] == str(tmp_path / "synthetic_vqa")
    assert set(options) <= set(inspect.signature(generate_synthetic_vqa).parameters)
    lsvq = instantiate(_data_cfg("lsvq", tmp_path).data, _recursive_=False)
    assert lsvq.specs["train"][0].root == str(tmp_path / "lsvq") and lsvq.max_pixels == 401408


@pytest.mark.parametrize("flow_name", ["video_grid", "video_native"])
def test_datamodule_batches_through_each_video_flow(dataset, tiny_model_dir, flow_name):
    cfg = _data_cfg("synthetic_vqa", dataset.parent)
    for split in ("train", "val", "test"):
        cfg.data[split][0].jsonl = str(dataset / f"{split}.jsonl")
    cfg.data.batch_size = 4
    dm = instantiate(cfg.data, _recursive_=False)
    processor = load_processor(tiny_model_dir, dm.min_pixels, dm.max_pixels)
    flow = instantiate(OmegaConf.load(CONF / "dataflow" / f"{flow_name}.yaml"))
    dm.attach(processor, PROMPT, flow)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    inputs = batch["model_inputs"]
    assert batch["mos"].shape == (4,) and len(batch["media"]) == 4
    assert all(m.endswith(".mp4") for m in batch["media"])
    if flow_name == "video_grid":
        assert inputs["image_grid_thw"].shape == (4 * 4, 3) and "pixel_values_videos" not in inputs
    else:
        assert inputs["video_grid_thw"].shape == (4, 3) and "pixel_values" not in inputs
        assert inputs["video_grid_thw"][:, 0].tolist() == [2] * 4  # 1 s clips: min_frames 4 -> 2 steps
        assert torch.as_tensor(inputs["second_per_grid_ts"]).tolist() == pytest.approx([0.5] * 4)
