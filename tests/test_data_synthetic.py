"""prresq.data.synthetic and photos: MOS model, split by photo, caching, distortions, SSIM."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prresq.data.photos import SOURCES, is_grayscale, reference_photos
from prresq.data.synthetic import COLOR_ONLY, DISTORTIONS, generate_synthetic_iqa, random_crops, ssim
from prresq.data.synthetic_set import MANIFEST, fold_dir, fold_photos, level_mos, split_photos


def _rows(root: Path) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted(root.glob("*.jsonl"))}


def test_reference_photos_are_real_rgb_and_ordered():
    photos = reference_photos()
    assert len(photos) >= 10
    assert list(photos) == [n for n in SOURCES if n in photos]
    for im in photos.values():
        assert im.mode == "RGB" and min(im.size) >= 256
    assert sum(not is_grayscale(im) for im in photos.values()) >= 10


def test_reference_photos_unknown_name_and_too_few():
    with pytest.raises(ValueError, match="unknown"):
        reference_photos(["astronaut", "nope"])
    with pytest.raises(RuntimeError, match="needed"):
        reference_photos(["astronaut"])


def test_rows_have_the_anchor_format(synthetic_iqa):
    row = _rows(synthetic_iqa)["train"][0]
    assert set(row) >= {"id", "dataset_name", "image", "conversations", "reference", "distortion", "level"}
    assert row["conversations"][0] == {"from": "human", "value": "<image>"}
    assert row["conversations"][1]["from"] == "gpt"
    float(row["conversations"][1]["value"])
    with Image.open(synthetic_iqa / row["image"][0]) as im:
        assert im.size == (56, 56) and im.mode == "RGB"


def test_mos_strictly_decreasing_in_level_and_spread(synthetic_iqa):
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    for rows in _rows(synthetic_iqa).values():
        for r in rows:
            groups[(r["reference"], r["crop"], r["distortion"])][r["level"]] = float(r["conversations"][1]["value"])
    assert groups
    for key, by_level in groups.items():
        mos = [by_level[lv] for lv in sorted(by_level)]
        assert sorted(by_level) == [1, 2, 3, 4, 5], key
        assert all(a > b for a, b in zip(mos, mos[1:])), (key, mos)
    values = [m for g in groups.values() for m in g.values()]
    assert 1.0 <= min(values) < 1.8 and 4.2 < max(values) <= 5.0


def test_level_mos_bands_never_overlap():
    for levels in (2, 5, 7):
        worst_of_level = [level_mos(lv, levels, 0.0) for lv in range(1, levels + 1)]
        best_of_next = [level_mos(lv, levels, 1.0) for lv in range(2, levels + 1)]
        assert all(w > b for w, b in zip(worst_of_level, best_of_next))
        assert level_mos(1, levels, 1.0) <= 5.0 and level_mos(levels, levels, 0.0) >= 1.0


def test_split_by_reference_photo(synthetic_iqa):
    rows = _rows(synthetic_iqa)
    assert set(rows) == {"prior", "train", "val", "test"}
    photos = {split: {r["reference"] for r in rs} for split, rs in rows.items()}
    names = list(photos)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not photos[a] & photos[b], (a, b)
    manifest = json.loads((synthetic_iqa / MANIFEST).read_text())
    assert {k: set(v) for k, v in manifest["photos"].items()} == photos
    assert len(photos["prior"]) == 2 and len(photos["train"]) > len(photos["val"])


def test_split_photos_is_seeded_and_6_2_2():
    names = [f"p{i}" for i in range(10)]
    a = split_photos(names, 42)
    assert a == split_photos(list(reversed(names)), 42)
    assert [len(a[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert split_photos(names, 7) != a
    b = split_photos(names, 42, prior_photos=3)
    assert len(b["prior"]) == 3 and sum(len(v) for v in b.values()) == 10
    with pytest.raises(ValueError):
        split_photos(names[:3], 42, prior_photos=1)


def test_generation_is_cached_and_options_invalidate(tmp_path):
    kw = dict(types=["white_noise"], size=32, crops_per_photo=1, photos=list(SOURCES)[:10], progress=False)
    out = generate_synthetic_iqa(tmp_path, **kw)
    stamp = (out / MANIFEST).stat().st_mtime_ns
    first = (out / "train.jsonl").read_text()
    generate_synthetic_iqa(tmp_path, **kw)
    assert (out / MANIFEST).stat().st_mtime_ns == stamp  # same options: nothing rewritten
    generate_synthetic_iqa(tmp_path, **{**kw, "levels": 3})
    assert (out / MANIFEST).stat().st_mtime_ns != stamp
    assert {json.loads(x)["level"] for x in (out / "train.jsonl").read_text().splitlines()} == {1, 2, 3}
    generate_synthetic_iqa(tmp_path, **kw)
    assert (out / "train.jsonl").read_text() == first  # deterministic from the seed


def test_every_distortion_changes_the_image_more_with_level():
    photo = reference_photos(["astronaut"], min_count=1)["astronaut"]
    crop = random_crops(photo, "astronaut", 1, 64, seed=0)[0]
    ref = np.asarray(crop)
    assert len(DISTORTIONS) >= 10
    for name, fn in DISTORTIONS.items():
        imgs = [np.asarray(fn(crop, s, np.random.default_rng(0))) for s in (0.0, 1.0)]
        assert all(im.shape == ref.shape and im.dtype == np.uint8 for im in imgs), name
        sims = ssim(ref, np.stack(imgs))
        assert sims[0] < 0.999 or name in COLOR_ONLY and sims[0] < 0.9999, (name, sims)
        assert sims[1] < sims[0], (name, sims)


def test_grayscale_photos_skip_colour_only_types(synthetic_iqa):
    gray = {n for n, im in reference_photos().items() if is_grayscale(im)}
    seen = {(r["reference"], r["distortion"]) for rows in _rows(synthetic_iqa).values() for r in rows}
    assert gray and not any((g, t) in seen for g in gray for t in COLOR_ONLY)
    assert any((g, "white_noise") in seen for g in gray)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    noisy = np.stack([np.clip(ref + rng.normal(0, s, ref.shape), 0, 255).astype(np.uint8) for s in (5, 40)])
    expected = [structural_similarity(ref, x, channel_axis=2, data_range=255) for x in noisy]
    np.testing.assert_allclose(ssim(ref, noisy), expected, atol=1e-5)


def test_cli_writes_a_set(tmp_path, capsys):
    from prresq.data.synthetic import main

    main(["--out", str(tmp_path), "--size", "32", "--crops-per-photo", "1", "--types", "contrast", "--levels", "2"])
    assert "train" in capsys.readouterr().out
    assert (tmp_path / "test.jsonl").exists()


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default layout in small: 15 photos, 5 prior, the other 10 in 5 folds (32 px, 1 crop, 2 levels)."""
    out = tmp_path_factory.mktemp("folds") / "set"
    kw = dict(types=["contrast"], size=32, crops_per_photo=1, levels=2, prior_photos=5, progress=False)
    return generate_synthetic_iqa(out, num_folds=5, fold=0, **kw)


def _fold_photos(root: Path, num_folds: int) -> list[dict[str, set[str]]]:
    return [
        {s: {r["reference"] for r in rs} for s, rs in _rows(root / fold_dir(num_folds, f)).items()}
        for f in range(num_folds)
    ]


def test_no_photo_is_in_two_splits_of_a_fold(folded):
    """Within every fold, train, val and test hold disjoint photos, and the prior photos are in none of them."""
    prior = {r["reference"] for r in _rows(folded)["prior"]}
    assert len(prior) == 5
    for f, photos in enumerate(_fold_photos(folded, 5)):
        assert set(photos) == {"train", "val", "test"}
        assert [len(photos[s]) for s in ("train", "val", "test")] == [6, 2, 2], f
        assert not photos["train"] & photos["val"] and not photos["train"] & photos["test"], f
        assert not photos["val"] & photos["test"], f
        assert not prior & (photos["train"] | photos["val"] | photos["test"]), f


def test_every_non_prior_photo_is_a_test_photo_exactly_once(folded):
    """Across the folds each non-prior photo is tested once and validated once (the rotation of fold_photos)."""
    folds = _fold_photos(folded, 5)
    prior = {r["reference"] for r in _rows(folded)["prior"]}
    pool = set(reference_photos()) - prior
    tested = [p for fold in folds for p in fold["test"]]
    validated = [p for fold in folds for p in fold["val"]]
    assert sorted(tested) == sorted(pool) and sorted(validated) == sorted(pool)


def test_fold_zero_of_five_is_the_6_2_2_split(folded):
    """The default (5 folds, fold 0) reads byte-identical files to the fixed 6:2:2 split written before folds."""
    for split in ("train", "val", "test"):
        assert (folded / fold_dir(5, 0) / f"{split}.jsonl").read_bytes() == (folded / f"{split}.jsonl").read_bytes()


def test_folds_share_one_cached_set_and_bad_folds_are_named(folded):
    """Asking for another fold reuses the set (no rewrite); an impossible fold or fold count is a clear error."""
    stamp = (folded / MANIFEST).stat().st_mtime_ns
    kw = dict(types=["contrast"], size=32, crops_per_photo=1, levels=2, prior_photos=5, progress=False)
    generate_synthetic_iqa(folded, num_folds=5, fold=3, **kw)
    assert (folded / MANIFEST).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="fold=5"):
        generate_synthetic_iqa(folded, num_folds=5, fold=5, **kw)
    with pytest.raises(ValueError, match="num_folds=2"):
        fold_photos(split_photos([f"p{i}" for i in range(10)], 42), 2)


def test_uneven_folds_still_cover_every_photo_once():
    """13 photos in 5 folds (groups of 2 or 3): every photo tested once, splits of a fold disjoint."""
    names = [f"p{i:02d}" for i in range(13)]
    folds = fold_photos(split_photos(names, 42), 5)
    assert sorted(p for f in folds for p in f["test"]) == names
    for f in folds:
        assert len(set(f["train"]) | set(f["val"]) | set(f["test"])) == 13
        assert {len(f["test"]), len(f["val"])} <= {2, 3}
