"""prresq.data.records: MOS mapping, and a clear DataError (file + line) for every kind of bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prresq.data.records import DataError, DatasetSpec, load_dataset, load_datasets


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)


def _row(i: int, mos: object = None, image: str | None = None) -> dict:
    return {
        "id": f"s{i}",
        "dataset_name": "toy",
        "image": [image or f"img/{i}.png"],
        "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": mos}],
    }


def _write(tmp: Path, rows: list[object], n_images: int = 4) -> Path:
    for i in range(n_images):
        _image(tmp / "img" / f"{i}.png")
    path = tmp / "toy.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _good(n: int = 4) -> list[dict]:
    return [_row(i, str(1.0 + i)) for i in range(n)]  # MOS 1, 2, 3, 4


def test_mos_is_min_max_mapped_per_dataset(tmp_path):
    path = _write(tmp_path, _good())
    ds = load_dataset({"name": "toy", "jsonl": str(path)})
    assert [r.mos for r in ds.records] == [1.0, 2.0, 3.0, 4.0]
    assert [r.mos_mapped for r in ds.records] == pytest.approx([1.0, 7 / 3, 11 / 3, 5.0])
    fixed = load_dataset({"name": "toy", "jsonl": str(path), "mos_range": [0, 10]}, map_to=(0, 1))
    assert [r.mos_mapped for r in fixed.records] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    r = ds.records[0]
    assert r.dataset == "toy" and r.id == "s0" and r.media == tmp_path / "img" / "0.png"
    assert r.source == f"{path}:1" and r.extra["dataset_name"] == "toy"


def test_top_level_mos_root_and_video_key(tmp_path):
    media = tmp_path / "media"
    _image(media / "a.png")
    _image(media / "b.png")
    path = tmp_path / "lists" / "v.jsonl"
    path.parent.mkdir()
    rows = [{"id": "a", "video": "a.png", "mos": 10}, {"id": "b", "video": ["b.png"], "mos": 70}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = load_dataset(DatasetSpec(name="v", jsonl=path, root=media))
    assert [r.mos_mapped for r in ds.records] == [1.0, 5.0]
    assert ds.records[0].media_type == "video" and ds.records[1].media == media / "b.png"


def test_several_datasets_map_independently(tmp_path):
    a = _write(tmp_path / "a", _good())
    b = _write(tmp_path / "b", [_row(i, str(10 * i)) for i in range(4)])
    da, db = load_datasets([{"name": "a", "jsonl": str(a)}, {"name": "b", "jsonl": str(b)}])
    assert da.records[-1].mos_mapped == db.records[-1].mos_mapped == 5.0
    assert db.mos_range == (0.0, 30.0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"id": "s1", "image": ["img/1.png"], "conversations": [', "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        (_row(1, None) | {"conversations": [{"from": "human", "value": "<image>"}]}, "missing MOS"),
        (_row(1, "good"), "'good' is not a number"),
        (_row(1, "nan"), "not finite"),
        (_row(1, True), "is not a number"),
        (_row(1, "2.0", image="img/missing.png"), "media file not found"),
        ({k: v for k, v in _row(1, "2.0").items() if k != "image"}, "no 'image' or 'video' field"),
        ({k: v for k, v in _row(1, "2.0").items() if k != "id"}, "missing 'id'"),
        (_row(0, "2.0"), "'s0' is labelled 2 times with different MOS: .*toy.jsonl:1: MOS 1; .*toy.jsonl:2: MOS 2"),
    ],
    ids=[
        "malformed",
        "not-object",
        "missing-mos",
        "non-numeric",
        "nan",
        "bool",
        "missing-media",
        "no-media-field",
        "no-id",
        "duplicate",
    ],
)
def test_bad_row_names_file_and_line(tmp_path, bad, message):
    rows: list[object] = [_row(0, "1.0"), bad, _row(2, "3.0"), _row(3, "4.0")]
    path = _write(tmp_path, rows)
    with pytest.raises(DataError, match=message) as exc:
        load_dataset({"name": "toy", "jsonl": str(path)})
    assert f"{path}:2:" in str(exc.value)


def test_mos_outside_given_range(tmp_path):
    path = _write(tmp_path, [*_good(3), _row(3, "12")])
    with pytest.raises(DataError, match=f"{path}:4: MOS 12.0 outside mos_range"):
        load_dataset({"name": "toy", "jsonl": str(path), "mos_range": [1, 5]})


def test_skip_mode_counts_and_warns(tmp_path, caplog):
    rows: list[object] = [_row(0, "1.0"), "{oops", _row(1, "x"), _row(2, "3.0"), _row(3, "4.0", image="img/9.png")]
    path = _write(tmp_path, rows)
    with caplog.at_level(logging.WARNING, logger="prresq.data.records"):
        ds = load_dataset({"name": "toy", "jsonl": str(path)}, on_bad_sample="skip")
    assert [r.id for r in ds.records] == ["s0", "s2"]
    assert len(ds.skipped) == 3 and ds.skipped[0].startswith("line 2:")
    assert "skipped 3 bad row(s)" in caplog.text and "line 2" in caplog.text


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: dataset file not found"):
        load_dataset({"name": "toy", "jsonl": str(tmp_path / "nope.jsonl")})


def test_empty_dataset(tmp_path):
    path = _write(tmp_path, [])
    with pytest.raises(DataError, match=f"{path}: empty dataset"):
        load_dataset({"name": "toy", "jsonl": str(path)})
    path = _write(tmp_path, ["{bad", _row(1, "x")])
    with pytest.raises(DataError, match=r"empty dataset 'toy': no valid rows \(2 bad rows skipped\)"):
        load_dataset({"name": "toy", "jsonl": str(path)}, on_bad_sample="skip")


def test_all_equal_mos(tmp_path):
    path = _write(tmp_path, [_row(i, "3.0") for i in range(3)])
    with pytest.raises(DataError, match="all 3 MOS .* equal 3.0"):
        load_dataset({"name": "toy", "jsonl": str(path)})


def test_bad_spec_and_mode(tmp_path):
    with pytest.raises(ValueError, match="needs 'name' and either 'jsonl'"):
        DatasetSpec.from_config({"jsonl": "x"})
    with pytest.raises(ValueError, match="lo < hi"):
        DatasetSpec.from_config({"name": "a", "jsonl": "x", "mos_range": [5, 1]})
    with pytest.raises(ValueError, match="on_bad_sample"):
        load_dataset({"name": "a", "jsonl": str(_write(tmp_path, _good()))}, on_bad_sample="ignore")


def test_corrupt_image_is_found_at_load_time(tmp_path):
    from prresq.data.media import load_image

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match="bad.png: corrupt or unreadable image"):
        load_image(bad)
    good = tmp_path / "good.png"
    _image(good)
    truncated = tmp_path / "truncated.png"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) - 20])
    with pytest.raises(DataError, match="truncated.png"):
        load_image(truncated)
    assert load_image(good).mode == "RGB"
