"""Tests for prresq.data.benchmarks: every adapter on a tiny fixture in its native label format.

Fixtures live in tests/fixtures/benchmarks/<name>/ (label files as distributed, zero-byte media
placeholders: adapters only check that media exist). The MATLAB label files of CLIVE and
LIVE-VQC are written here with scipy.io.savemat into a copy of the fixture tree.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from scipy.io import savemat

from prresq.data.benchmarks import (
    BENCHMARKS,
    Benchmark,
    LabelFormatError,
    MissingMediaError,
    load_benchmark,
    load_benchmark_config,
    reference_split,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
CONF = REPO / "conf"
CONFIGS = sorted(p.stem for p in (CONF / "benchmark").glob("*.yaml"))

CLIVE_NAMES = [f"t{i}.bmp" for i in range(1, 8)] + ["10.bmp", "100.bmp", "1000.JPG"]
CLIVE_MOS = [63.9, 25.3, 48.1, 70.0, 55.5, 30.2, 44.4, 61.2, 23.9, 75.4]


def _cell(names: list[str]) -> np.ndarray:
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = n
    return cell


def _write_mats(data: Path) -> None:
    """The MATLAB label files, in the variable names and shapes of the releases."""
    savemat(data / "clive/Data/AllImages_release.mat", {"AllImages_release": _cell(CLIVE_NAMES)})
    savemat(data / "clive/Data/AllMOS_release.mat", {"AllMOS_release": np.array([CLIVE_MOS])})
    savemat(data / "clive/Data/AllStdDev_release.mat", {"AllStdDev_release": np.full((1, 10), 12.5)})
    savemat(
        data / "live_vqc/data.mat",
        {"video_list": _cell(["A001.mp4", "A002.mp4", "B105.mp4"]), "mos": np.array([[80.2], [35.1], [57.6]])},
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the fixture tree with the .mat files added (one per module)."""
    root = tmp_path_factory.mktemp("bench") / "data"
    shutil.copytree(FIXTURES, root)
    (root / "clive/Data").mkdir()
    _write_mats(root)
    return root


@pytest.fixture
def scratch(tmp_path: Path):
    """Copy one fixture dataset into tmp_path (for tests that modify it)."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(FIXTURES / name, dst)
        if name in ("clive", "live_vqc"):
            (tmp_path / "clive/Data").mkdir(parents=True, exist_ok=True)
            (tmp_path / "live_vqc").mkdir(exist_ok=True)
            _write_mats(tmp_path)
        return dst

    return copy


# (adapter, fixture folder, split, n, first id, its MOS, its std, mos_range, task)
CASES = [
    ("kadid10k", "kadid10k", None, 6, "I01_01_01.png", 4.57, math.sqrt(0.496), (1, 5), "iqa"),
    ("tid2013", "tid2013", None, 4, "i01_01_1.bmp", 5.51429, 0.13179, (0, 9), "iqa"),
    ("pipal", "pipal", None, 4, "A0001_00_00.bmp", 1449.2368, None, (1012.9, 1581.07), "iqa"),
    ("koniq10k", "koniq10k", None, 4, "10004473376.jpg", 3.828571429, 0.527277894, (1, 5), "iqa"),
    ("koniq10k", "koniq10k", "test", 2, "10007357496.jpg", 3.479166667, 0.580003025, (1, 5), "iqa"),
    ("spaq", "spaq", None, 3, "00001.jpg", 42.65, None, (0, 100), "iqa"),
    ("clive", "clive", None, 3, "10.bmp", 61.2, 12.5, (0, 100), "iqa"),
    ("bid", "bid", None, 3, "DatabaseImage0001.JPG", 4.3182, None, (0, 5), "iqa"),
    ("sriqa_bench", "sriqa_bench", None, 3, "img001_bicubic.png", 2.10, 0.40, (2.10, 4.20), "iqa"),
    ("agiqa3k", "agiqa3k", None, 3, "AttnGAN_normal_000.jpg", 1.6185, 0.6049, (0, 5), "iqa"),
    ("jsonl", "synthetic_iqa/test.jsonl", None, 3, "syn-000", 4.25, None, (1, 5), "iqa"),
    ("konvid1k", "konvid1k", None, 3, "3339962845", 4.64, None, (1, 5), "vqa"),
    ("live_vqc", "live_vqc", None, 3, "A001.mp4", 80.2, None, (0, 100), "vqa"),
    ("lsvq", "lsvq", None, 2, "ia-batch1/-0DnTrbr9Ws", 52.48, None, (0, 100), "vqa"),
    ("lsvq_1080p", "lsvq", None, 2, "yfcc-batch9/31870", 61.07, None, (0, 100), "vqa"),
    ("youtube_ugc", "youtube_ugc", None, 3, "Animation_360P-3e40", 3.598, None, (1, 5), "vqa"),
]


@pytest.mark.parametrize(
    ("adapter", "folder", "split", "n", "first", "mos", "std", "rng", "task"), CASES, ids=[c[0] for c in CASES]
)
def test_adapter_reads_native_format(data, adapter, folder, split, n, first, mos, std, rng, task):
    bench = load_benchmark(adapter, data / folder, split=split)
    assert isinstance(bench, Benchmark) and bench.name == adapter and bench.task == task
    assert len(bench) == n
    item = bench.items[0]
    assert item.id == first
    assert item.mos == pytest.approx(mos)
    assert item.std == (pytest.approx(std) if std is not None else None)
    assert bench.mos_range == pytest.approx(rng)
    assert all(it.media.is_file() and it.media.is_absolute() == data.is_absolute() for it in bench.items)
    assert not bench.flipped and bench.skipped == []
    assert bench.label_file is not None and bench.label_file.exists()


def test_every_registered_adapter_has_a_case():
    covered = {c[0] for c in CASES} | {"text", "lsvq_test", "live_challenge"}
    assert set(BENCHMARKS) <= covered, set(BENCHMARKS) - covered


# ----------------------------------------------------------------------------- per-benchmark details


def test_reference_split_protocol():
    refs = [f"I{i:02d}.png" for i in range(1, 82)]
    split = reference_split(refs)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 49, "val": 16, "test": 16}
    assert split == reference_split(list(reversed(refs)))  # order of input does not matter
    assert split != reference_split(refs, seed=7)


def test_kadid_splits_partition_by_reference(data):
    """Both split sources partition the label file by reference: `released` (default) follows the shipped
    assignment (I01, I02 train; I07 val; I19, I29 test), `reference_seed` is `reference_split` (seed 42)."""
    root = data / "kadid10k"
    every = sorted(it.id for it in load_benchmark("kadid10k", root).items)
    for source in ("released", "reference_seed"):
        parts = {s: load_benchmark("kadid10k", root, split=s, split_source=source) for s in ("train", "val", "test")}
        assert sorted(it.id for b in parts.values() for it in b.items) == every
        refs = {s: {it.reference for it in b.items} for s, b in parts.items()}
        assert (
            not (refs["train"] & refs["test"])
            and not (refs["train"] & refs["val"])
            and not (refs["val"] & refs["test"])
        )
        if source == "released":
            assert refs == {"train": {"I01.png", "I02.png"}, "val": {"I07.png"}, "test": {"I19.png", "I29.png"}}
        else:
            expected = reference_split(["I01.png", "I02.png", "I07.png", "I19.png", "I29.png"])
            assert refs["test"] == {r for r, s in expected.items() if s == "test"}
    assert [it.id for it in load_benchmark("kadid10k", root, split="test").items] == ["I29_23_04.png", "I19_07_01.png"]


def test_tid2013_matches_names_case_insensitively(data):
    bench = load_benchmark("tid2013", data / "tid2013")
    last = bench.items[-1]
    assert last.id == "i25_24_5.bmp" and last.media.name == "I25_24_5.BMP"


def test_pipal_finds_images_in_distortion_subfolders(data):
    bench = load_benchmark("pipal", data / "pipal")
    assert {it.media.parent.name for it in bench.items} == {"Distortion_1", "Distortion_2", "Distortion_4"}


def test_koniq_zscore_column_and_split_file(data, scratch):
    z = load_benchmark("koniq10k", data / "koniq10k", score_column="MOS_zscore")
    assert z.mos_range == (0.0, 100.0) and z.items[0].mos == pytest.approx(77.38362069) and z.items[0].std is None
    root = scratch("koniq10k")
    (root / "koniq10k_distributions_sets.csv").unlink()
    assert len(load_benchmark("koniq10k", root)) == 4  # no split: the sets file is not needed


def test_koniq_official_split_file_alone(scratch):
    """The official `koniq10k_distributions_sets.csv` (github.com/subpic/koniq metadata/: image_name,
    c1..c5, c_total, MOS on 1-100, SD on 1-5, set) reads on its own, and split=test is its `set`."""
    root = scratch("koniq10k")
    (root / "koniq10k_scores_and_distributions.csv").unlink()
    bench = load_benchmark("koniq10k", root)
    assert bench.label_file.name == "koniq10k_distributions_sets.csv" and bench.mos_range == (1.0, 100.0)
    assert bench.items[0].mos == pytest.approx(77.3836206897) and bench.items[0].std is None
    assert [it.id for it in load_benchmark("koniq10k", root, split="test").items] == [
        "10007357496.jpg",
        "10050349236.jpg",
    ]


def test_koniq_split_uses_official_file_else_reference_split(data, scratch):
    """split=test follows the sets file wherever it is present; without it, reference_split (6:2:2, seed 42)."""
    official = [it.id for it in load_benchmark("koniq10k", data / "koniq10k", split="test").items]
    assert official == ["10007357496.jpg", "10050349236.jpg"]
    root = scratch("koniq10k")
    (root / "koniq10k_distributions_sets.csv").unlink()
    names = [it.id for it in load_benchmark("koniq10k", root).items]
    expected = [n for n in names if reference_split(names)[n] == "test"]
    assert [it.id for it in load_benchmark("koniq10k", root, split="test").items] == expected


@pytest.mark.parametrize("folder", ["spaq", "bid", "youtube_ugc"])
def test_spreadsheets_read_as_distributed(data, folder):
    """SPAQ, BID and YouTube-UGC ship .xlsx label files (YouTube-UGC's scores on sheet "MOS"); they
    read with the openpyxl dependency, no CSV export needed. Layouts: SPAQ "Image name", MOS, five
    attributes (IQA-PyTorch scripts/process_spaq.py); BID image number, grade by position (public
    BID loaders); YouTube-UGC vid, "MOS full" (loaders reading sheet_name='MOS')."""
    bench = load_benchmark(folder, data / folder)
    assert bench.label_file.suffix == ".xlsx" and len(bench) == 3


def test_csv_export_of_a_sheet_is_read_first(scratch):
    root = scratch("spaq")
    (root / "Annotations/MOS and Image attribute scores.csv").write_text("Image name,MOS\n00002.jpg,12.5\n")
    bench = load_benchmark("spaq", root)
    assert bench.label_file.suffix == ".csv" and [(it.id, it.mos) for it in bench.items] == [("00002.jpg", 12.5)]


def test_xlsx_without_openpyxl_names_the_package(scratch, monkeypatch):
    root = scratch("spaq")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import fails even where it is installed
    with pytest.raises(ImportError, match="openpyxl") as err:
        load_benchmark("spaq", root)
    assert str(root / "Annotations/MOS and Image attribute scores.csv") in str(err.value)


def test_sriqa_bench_release_layout(data):
    """SRIQA-Bench as its authors release it: `MOS/<content>.txt` with `<image name>,<MOS>` lines
    (comma or space), the reference `<content>_Original.png` among the rated lines, images under
    `images/<method>/` (layout as described in the dataset release, quoted in issue 12)."""
    bench = load_benchmark("sriqa_bench", data / "sriqa_bench_native")
    assert [it.id for it in bench.items] == [
        "img001_Original.png",
        "img001_bicubic.png",
        "img001_esrgan.png",
        "img002_Original.png",
        "img002_swinir.png",
    ]
    assert [it.mos for it in bench.items] == [4.62, 2.10, 3.85, 4.48, 4.20]
    assert bench.items[1].media == data / "sriqa_bench_native/images/bicubic/img001_bicubic.png"
    assert bench.mos_range == (2.10, 4.62) and bench.items[4].source.endswith("img002.txt row 2")


def test_lsvq_per_split_copies(data):
    """`LSVQ_whole_test.csv` / `LSVQ_whole_test_1080p.csv` (the copies VQA code ships): the official
    columns; the 1080p file has no `is_test` column (PatchVQ release notes; VQA loaders)."""
    root = data / "lsvq_whole"
    test = load_benchmark("lsvq_test", root)
    assert test.label_file.name == "LSVQ_whole_test.csv" and [(i.id, i.mos) for i in test.items] == [
        ("ia-batch1/-0DnTrbr9Ws", 52.48)
    ]
    hd = load_benchmark("lsvq_1080p", root)
    assert hd.label_file.name == "LSVQ_whole_test_1080p.csv" and [i.id for i in hd.items] == ["yfcc-batch9/31870"]


def test_missing_label_file_lists_every_name_tried(tmp_path):
    (tmp_path / "lsvq").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_benchmark("lsvq", tmp_path / "lsvq", split="train")
    for name in ("labels_train.csv", "LSVQ_whole_train.csv", "labels_train_test.csv"):
        assert str(tmp_path / "lsvq" / name) in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        load_benchmark("koniq10k", tmp_path / "lsvq")
    assert "koniq10k_scores_and_distributions.csv" in str(err.value)
    assert "koniq10k_distributions_sets.csv" in str(err.value)


def test_unexpected_header_names_file_found_and_expected(scratch):
    root = scratch("kadid10k")
    (root / "dmos.csv").write_text("image,reference,score\nI01_01_01.png,I01.png,4.5\n")
    with pytest.raises(LabelFormatError) as err:
        load_benchmark("kadid10k", root)
    msg = str(err.value)
    assert str(root / "dmos.csv") in msg and "['image', 'reference', 'score']" in msg and "dist_img" in msg


@pytest.mark.parametrize(
    ("value", "reason"),
    [("abc", "'abc' of 'I01_01_05.png' is not a number"), ("7.5", "7.5 of 'I01_01_05.png' outside")],
)
def test_bad_mos_names_the_row_or_is_skipped(scratch, value, reason):
    """A MOS that is not a number, or lies outside the adapter's 1-5 range, names the file and row
    (row 3 = the second data row under the header); on_bad_sample=skip lists it instead."""
    root = scratch("kadid10k")
    lines = (root / "dmos.csv").read_text().splitlines()
    lines[2] = lines[2].replace("1.32", value)
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelFormatError) as err:
        load_benchmark("kadid10k", root)
    assert f"{root / 'dmos.csv'} row 3: MOS {reason}" in str(err.value)
    with pytest.warns(UserWarning, match="skipped"):
        bench = load_benchmark("kadid10k", root, on_bad_sample="skip")
    assert len(bench) == 5 and bench.skipped == ["I01_01_05.png"]
    assert bench.rejected[0].reason.startswith(f"{root / 'dmos.csv'} row 3: MOS")


def test_clive_training_images_are_opt_in(data):
    bench = load_benchmark("clive", data / "clive", include_training_images=True)
    assert len(bench) == 10 and bench.items[0].media.parent.name == "trainingImages"
    assert load_benchmark("live_challenge", data / "clive").items[0].id == "10.bmp"


def test_agiqa3k_alignment_scores(data):
    bench = load_benchmark("agiqa3k", data / "agiqa3k", score_column="mos_align", std_column="std_align")
    assert bench.items[1].mos == pytest.approx(3.3451) and bench.items[1].std == pytest.approx(0.8022)


def test_lsvq_splits(data, scratch):
    root = data / "lsvq"
    assert [it.id for it in load_benchmark("lsvq", root, split="train").items] == ["ia-batch1/_1b5uUXTuN0"]
    assert len(load_benchmark("lsvq", root, split="all")) == 3
    assert len(load_benchmark("lsvq_test", root)) == 2
    assert load_benchmark("lsvq", root, split="test_1080p").items[1].id == "ia-batch12/YjGfz8Jx7Wk"
    own = scratch("lsvq")
    (own / "labels_test.csv").write_text("name,mos\nyfcc-batch1/10074,79.31\n")
    bench = load_benchmark("lsvq", own)
    assert bench.label_file.name == "labels_test.csv" and len(bench) == 1


def test_youtube_ugc_finds_originals_and_transcodes(data):
    bench = load_benchmark("youtube_ugc", data / "youtube_ugc")
    assert [it.media.name for it in bench.items] == [
        "Animation_360P-3e40.mkv",
        "Gaming_1080P-0ce6.mkv",
        "Vlog_480P-1b39_crf_10_ss_00_t_20.0.mp4",
    ]


def test_jsonl_root_as_folder_and_dataset_filter(data):
    root = data / "synthetic_iqa"
    bench = load_benchmark("jsonl", root, labels="test.jsonl", dataset_name="synthetic_iqa")
    assert [it.id for it in bench.items] == ["syn-000", "syn-001"]
    assert bench.items[1].mos == 1.5 and bench.items[1].media == root / "images/001.png"
    with pytest.raises(FileNotFoundError, match="labels"):
        load_benchmark("jsonl", root)


def test_text_adapter_flips_dmos(data):
    root = data / "liu13"
    plain = load_benchmark("text", root, labels="liu13_mos.txt")
    dmos = load_benchmark("text", root, labels="liu13_mos.txt", lower_is_better=True, mos_range=[0, 10])
    assert dmos.flipped and dmos.mos_range == (0.0, 10.0)
    assert [it.mos for it in dmos.items] == pytest.approx([10 - it.mos for it in plain.items])
    assert np.allclose(dmos.mapped_mos(1, 5), 1 + np.array([it.mos for it in dmos.items]) * 0.4)


def test_text_parser_rejects_bad_lines(tmp_path):
    (tmp_path / "mos.txt").write_text("a.png 3.0\nb.png oops\n")
    with pytest.raises(ValueError, match=r"mos.txt row 2"):
        load_benchmark("text", tmp_path, check_media=False)


# ----------------------------------------------------------------------------- errors and options


@pytest.mark.parametrize("adapter", sorted(BENCHMARKS))
def test_missing_root_names_expected_label_file(tmp_path, adapter):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        load_benchmark(adapter, root)
    msg = str(err.value)
    assert f"benchmark {adapter!r}" in msg and "adapter" in msg
    assert str(root) in msg and "does not exist" in msg


def test_missing_label_file_names_full_path(scratch):
    root = scratch("kadid10k")
    (root / "dmos.csv").unlink()
    with pytest.raises(FileNotFoundError, match="kadid10k") as err:
        load_benchmark("kadid10k", root)
    assert str(root / "dmos.csv") in str(err.value) and "does not exist" not in str(err.value)


def test_missing_media_raise_by_default_or_are_skipped(scratch):
    root = scratch("kadid10k")
    for name in ("I02_10_03.png", "I29_23_04.png"):
        (root / "images" / name).unlink()
    with pytest.raises(MissingMediaError) as err:
        load_benchmark("kadid10k", root)
    assert isinstance(err.value, FileNotFoundError)
    assert "2 of 6" in str(err.value) and str(root / "images/I02_10_03.png") in str(err.value)
    assert [i for i, _ in err.value.missing] == ["I02_10_03.png", "I29_23_04.png"]
    assert f"{root / 'dmos.csv'} row 4: media file not found" in str(err.value)
    with pytest.warns(UserWarning, match="skipped"):
        bench = load_benchmark("kadid10k", root, on_bad_sample="skip")
    assert len(bench) == 4 and bench.skipped == ["I02_10_03.png", "I29_23_04.png"]
    assert [r.media.name for r in bench.rejected] == ["I02_10_03.png", "I29_23_04.png"]
    with pytest.warns(UserWarning, match="skipped"):
        assert load_benchmark("kadid10k", root, skip_missing=True).skipped == bench.skipped
    assert len(load_benchmark("kadid10k", root, check_media=False)) == 6


def test_missing_media_list_is_truncated(scratch):
    root = scratch("kadid10k")
    shutil.rmtree(root / "images")
    with pytest.raises(MissingMediaError, match=r"and 1 more"):
        load_benchmark("kadid10k", root)


def test_bad_names_options_and_splits(data):
    with pytest.raises(KeyError, match="unknown benchmark"):
        load_benchmark("nope", data)
    with pytest.raises(TypeError, match="unknown option"):
        load_benchmark("kadid10k", data / "kadid10k", colour="red")
    with pytest.raises(ValueError, match="unknown split"):
        load_benchmark("tid2013", data / "tid2013", split="test")
    assert len(load_benchmark("kadid10k", data / "kadid10k", limit=2)) == 2


def test_to_frame(data):
    df = load_benchmark("sriqa_bench", data / "sriqa_bench").to_frame()
    assert list(df.columns) == ["id", "media", "mos", "std"] and df["std"].iloc[2] == pytest.approx(0.31)


# ----------------------------------------------------------------------------- configs


@pytest.fixture
def hydra_conf():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_fixture(hydra_conf, data, name):
    cfg = compose(config_name=None, overrides=[f"+benchmark={name}", f"+paths.data_dir={data}"])
    node = cfg.benchmark[name]
    assert node.name == name and node.adapter in BENCHMARKS
    assert node.root == str(data / Path(node.root).name)
    bench = load_benchmark_config(node)
    assert bench.name == name and bench.task == node.task and len(bench) > 0


# (config, n, first id, its MOS, observed mos_range): benchmarks shipped only as a `name mos [std]` list
TEXT_LIST_CONFIGS = [
    ("liu13", 3, "blur01_cho.png", 5.12, (3.48, 7.9)),
    ("min19", 3, "haze01_dcp.png", 3.61, (2.95, 4.02)),
]


@pytest.mark.parametrize(("name", "n", "first", "mos", "rng"), TEXT_LIST_CONFIGS, ids=[c[0] for c in TEXT_LIST_CONFIGS])
def test_text_list_benchmarks_are_configs_of_the_text_adapter(hydra_conf, data, name, n, first, mos, rng):
    """Liu13 and Min19 have no adapter of their own: their conf/benchmark yaml names the generic `text` adapter,
    its label file and media folder, and reads the items (ids, MOS, observed range) of the fixture list."""
    cfg = compose(config_name=None, overrides=[f"+benchmark={name}", f"+paths.data_dir={data}"])
    node = cfg.benchmark[name]
    assert node.adapter == "text" and name not in BENCHMARKS
    bench = load_benchmark_config(node)
    assert bench.name == name and bench.adapter == "text" and bench.task == "iqa" and len(bench) == n
    assert bench.items[0].id == first and bench.items[0].mos == pytest.approx(mos) and bench.items[0].std is None
    assert bench.mos_range == pytest.approx(rng) and not bench.flipped and bench.skipped == []
    assert all(it.media.is_file() for it in bench.items)


def test_configs_cover_the_benchmark_list():
    expected = {
        "kadid10k", "tid2013", "pipal", "koniq10k", "spaq", "clive", "bid", "liu13", "sriqa_bench",
        "agiqa3k", "min19", "konvid1k", "live_vqc", "lsvq_test", "lsvq_1080p", "youtube_ugc", "synthetic_iqa",
    }  # fmt: skip
    assert set(CONFIGS) == expected


def test_configs_multi_select(hydra_conf):
    cfg = compose(config_name=None, overrides=["+benchmark=[kadid10k,lsvq_1080p]", "+paths.data_dir=/d"])
    assert set(cfg.benchmark) == {"kadid10k", "lsvq_1080p"}
    assert cfg.benchmark.lsvq_1080p.split == "test_1080p" and cfg.benchmark.kadid10k.root == "/d/kadid10k"


def test_config_task_mismatch_is_rejected(data):
    node = {"name": "x", "adapter": "kadid10k", "root": str(data / "kadid10k"), "task": "vqa"}
    with pytest.raises(ValueError, match="task"):
        load_benchmark_config(node)


def test_unrated_sheet_rows_are_logged_not_silently_dropped(data, caplog):
    """YouTube-UGC's MOS sheet lists videos without a score (row 5 of the fixture, HDR): left out, logged with the row."""
    with caplog.at_level("WARNING", logger="prresq.data.benchmarks"):
        bench = load_benchmark("youtube_ugc", data / "youtube_ugc")
    assert len(bench) == 3 and "1 row(s) with an empty name or score left out (rows [5])" in caplog.text
