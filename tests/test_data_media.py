"""Image loading: every PIL mode to the RGB a viewer shows, and huge images as named, skippable bad samples."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from prresq.data.collate import PromptCollator
from prresq.data.dataflow import ImageFlow
from prresq.data.media import load_image
from prresq.data.records import DataError, Record
from prresq.models import load_processor

RAMP16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520, mean 32760


def _rgb(path: Path, **kw) -> np.ndarray:
    im = load_image(path, **kw)
    assert im.mode == "RGB"
    return np.asarray(im, dtype=np.float64)


def test_16_bit_grey_png_is_scaled_not_clipped_to_white(tmp_path):
    """I;16 values v become round(v / 257): the ramp keeps its mean (127.5), not 254.5 as with convert("RGB")."""
    path = tmp_path / "g16.png"
    Image.fromarray(RAMP16).save(path)
    assert Image.open(path).mode.startswith("I;16")
    rgb = _rgb(path)
    want = np.rint(RAMP16 / 257.0)
    assert np.abs(rgb[..., 0] - want).max() <= 0.5 and rgb[..., 0].mean() == pytest.approx(127.47, abs=0.05)
    assert (rgb[..., 0] == rgb[..., 2]).all() and rgb.min() == 0 and rgb.max() == 255


@pytest.mark.parametrize(
    ("values", "expected_mean"),
    [
        (RAMP16.astype(np.int32), np.rint(RAMP16 / 257.0).mean()),  # 16-bit data in a 32-bit image
        (np.full((8, 8), 200, np.int32), 200.0),  # already 8-bit
        (np.array([[-1000, 3000]] * 4, np.int32), 127.5),  # wider range: min-max scaled (0 and 255)
    ],
)
def test_32_bit_integer_image(tmp_path, values, expected_mean):
    """Mode I: 0..255 as is, 0..65535 as 16-bit, other ranges min-max scaled to 0..255."""
    path = tmp_path / "i32.tif"
    Image.fromarray(values, "I").save(path)
    assert Image.open(path).mode == "I"
    assert _rgb(path).mean() == pytest.approx(expected_mean, abs=0.05)


@pytest.mark.parametrize(("value", "expected"), [(0.5, 128.0), (0.25, 64.0), (100.0, 100.0)])
def test_float_image(tmp_path, value, expected):
    """Mode F: [0, 1] scaled by 255 (convert("RGB") gives black), [0, 255] kept."""
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((8, 8), value, np.float32), "F").save(path)
    assert Image.open(path).mode == "F"
    assert _rgb(path).mean() == pytest.approx(expected, abs=0.01)


def test_palette_with_transparency_is_composited_over_white(tmp_path):
    """P + transparency index: transparent pixels are white (convert("RGB") shows the hidden palette red)."""
    im = Image.new("P", (8, 4))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    im.paste(1, (4, 0, 8, 4))  # right half: index 1 (blue); left half: index 0 (red), transparent
    path = tmp_path / "p.png"
    im.save(path, transparency=0)
    rgb = _rgb(path)
    assert (rgb[:, :4] == 255).all()
    assert (rgb[:, 4:] == [0, 0, 255]).all()


def test_grey_with_alpha_is_composited_over_white(tmp_path):
    """LA: black at alpha 0 becomes white, at alpha 255 stays black, at alpha 128 is mid grey."""
    grey = np.zeros((4, 12), np.uint8)
    alpha = np.repeat(np.array([0, 128, 255], np.uint8), 4)[None].repeat(4, 0)
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(path)
    rgb = _rgb(path)[..., 0]
    assert (rgb[:, :4] == 255).all() and (rgb[:, 8:] == 0).all()
    assert rgb[:, 4:8].mean() == pytest.approx(255 * (1 - 128 / 255), abs=1.0)


def test_cmyk_image(tmp_path):
    """CMYK: no ink is white, full magenta + yellow is red, full black ink is black."""
    cmyk = np.zeros((2, 6, 4), np.uint8)
    cmyk[:, 2:4, 1:3] = 255
    cmyk[:, 4:, 3] = 255
    path = tmp_path / "c.tif"
    Image.fromarray(cmyk, "CMYK").save(path)
    rgb = _rgb(path)
    assert (rgb[:, :2] == 255).all() and (rgb[:, 2:4] == [255, 0, 0]).all() and (rgb[:, 4:] == 0).all()


def test_exif_rotated_jpeg_is_shown_upright(tmp_path):
    """Orientation 6 (rotate 90 degrees clockwise to display): a 40x20 black|white image shows as 20x40, black on top."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    rgb = _rgb(path)
    assert rgb.shape == (40, 20, 3)
    assert rgb[:18].mean() < 10 and rgb[22:].mean() > 245


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid small PNG whose header (IHDR, CRC recomputed) declares width x height."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def test_huge_image_is_a_named_data_error(tmp_path):
    """A 14000x14000 PNG (PIL's DecompressionBombError before) and an image over a set limit name the file."""
    bomb = _png_claiming(tmp_path / "bomb.png", 14000, 14000)
    with pytest.raises(DataError, match=r"bomb\.png: .*pixel"):
        load_image(bomb)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    assert load_image(small).size == (100, 100)
    with pytest.raises(DataError, match=r"small\.png: 100x100 = 10000 pixels is above the limit max_pixels=5000"):
        load_image(small, max_pixels=5000)
    assert ImageFlow(max_image_pixels=None)(small, "q").images[0].size == (100, 100)


def test_8000_square_photo_is_under_the_default_limit(tmp_path):
    """The default limit admits an 8000x8000 image (64 MP); only its header is read here."""
    path = _png_claiming(tmp_path / "big.png", 8000, 8000)
    with pytest.raises(DataError, match="corrupt or unreadable"):  # refused for its truncated data, not its size
        load_image(path)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, min_pixels=56 * 56, max_pixels=112 * 112)


def test_huge_image_is_skipped_under_skip_in_a_worker_loader(processor, tmp_path):
    """on_bad_sample=skip drops the 14000x14000 image in a DataLoader worker; raise names the JSONL row."""
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(good)
    bomb = _png_claiming(tmp_path / "bomb.png", 14000, 14000)
    recs = [Record(f"r{i}", "toy", p, 1.0, 1.0, {}, f"/d/train.jsonl:{i + 1}") for i, p in enumerate([good, bomb])]
    skip = PromptCollator(processor, "Q", on_bad_sample="skip")
    batches = list(DataLoader(recs, batch_size=2, collate_fn=skip, num_workers=1))
    assert len(batches) == 1 and batches[0]["ids"] == ["r0"]
    with pytest.raises(DataError, match=r"/d/train\.jsonl:2: .*bomb\.png"):
        list(DataLoader(recs, batch_size=2, collate_fn=PromptCollator(processor, "Q"), num_workers=1))
