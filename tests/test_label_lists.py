"""The anchors' label lists read in every line format they ship (issue 22, item 1 and its bad input):
`name mos [std]`, `ref name mos [std]` (the rated image is the second name, the reference is kept) and
`path, mos`; a header is a first line without a number; no data row is ever dropped silently; the
released KADID-10K split and a user's split lists select items by name."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prresq.data.benchmarks import LabelFormatError, load_benchmark, read_label_list

REPO = Path(__file__).resolve().parents[1]
LISTS = Path(__file__).parent / "fixtures" / "anchor_lists"
KADID = Path(__file__).parent / "fixtures" / "benchmarks" / "kadid10k"

# (file as the anchors ship it, format, first rated name, its reference, MOS, std) - the fixtures' first rows
FIRST_ROWS = [
    ("KADID-10K_train_set.txt", "ref name mos [std]", "I01_01_01.png", "I01.png", 4.633587786259543, 0.7042726744663603),
    ("KADID-10K_mos.txt", "ref name mos [std]", "I01_01_01.png", "I01.png", 4.57, 0.7042726744663603),
    ("Deblur_test_all.txt", "ref name mos [std]", "0_1.png", "0_0.png", 4.569234903368079, None),
    ("SRIQA-Bench_test_all.txt", "ref name mos [std]", "online50_SeeSRx4.png", "online50_Original.png", 100.00000000000001, None),
    ("GT_SRIQA-Bench.txt", "ref name mos [std]", "online50_SeeSRx4.png", "online50_Original.png", 5.0, None),
    ("dehaze_test_all.txt", "ref name mos [std]", "Adirondack_Berman16.png", "Adirondack.png", 3.350470259550412, None),
    ("AGIQA-3K_test_all.txt", "name mos [std]", "AttnGAN_normal_000.jpg", "", 21.511657711264263, 0.223270101),
    ("LIVEC_test_all.txt", "name mos [std]", "t1.bmp", "", 68.01712128701747, 18.3762),
    ("BID_test_all.txt", "name mos [std]", "DatabaseImage0190.JPG", "", 52.28900832768076, None),
    ("GT_CLIVE.txt", "name mos [std]", "t1.bmp", "", 3.720687, None),
    ("KoNViD_labels_cleaned.txt", "path, mos", "KoNViD_1k_videos/4542323058.mp4", "", 3.22, None),
    ("LIVE_VQC_labels_normalized.txt", "path, mos", "Video/A001.mp4", "", 4.3616, None),
    ("LSVQ_test_labels_normalized.txt", "path, mos", "yfcc-batch1/747.mp4", "", 3.872, None),
    ("YouTube_labels.txt", "path, mos", "Sports_2160P-4e9f.mp4", "", 4.405, None),
]  # fmt: skip


@pytest.mark.parametrize(("file", "fmt", "name", "ref", "mos", "std"), FIRST_ROWS, ids=[r[0] for r in FIRST_ROWS])
def test_every_anchor_line_shape_reads_through_the_text_adapter(file, fmt, name, ref, mos, std):
    """Each fixture holds the first three rows of the anchors' file byte for byte: all three read, the
    first with its rated name, reference, MOS and std (the `ref name` lists failed before)."""
    rows, bad, found = read_label_list(LISTS / file)
    assert found == fmt and bad == [] and len(rows) == 3
    bench = load_benchmark(file, LISTS, adapter="text", labels=file, check_media=False)
    assert len(bench) == 3 and bench.rejected == []
    first = bench.items[0]
    assert (first.id, first.reference, first.mos) == (name, ref, pytest.approx(mos))
    assert first.std == (pytest.approx(std) if std is not None else None)
    assert first.source.endswith(f"{file} row 1")


def test_the_count_script_reads_every_row(tmp_path):
    """experiments/anchor_lists.py prints rows read / rows in the file; on the fixtures every row reads."""
    out = subprocess.run(
        [sys.executable, str(REPO / "experiments/anchor_lists.py"), str(LISTS)],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    counts = re.findall(r"^(\S+)\s.*?(\d+) /\s+(\d+) rows read$", out, flags=re.M)
    assert len(counts) == len(FIRST_ROWS) and all(a == b == "3" for _, a, b in counts)


def _write(tmp_path: Path, text: str, name: str = "list.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_header_is_only_a_first_line_without_a_number(tmp_path):
    """A first line with no number is a header; a first line that is data is never taken for one (the old
    reader dropped the first `ref name mos` row as a header); a numberless line later is a bad row."""
    rows, bad, _ = read_label_list(_write(tmp_path, "image mos\na.png 3.5\nb.png 2.0\n"))
    assert [r.name for r in rows] == ["a.png", "b.png"] and bad == []
    rows, bad, _ = read_label_list(_write(tmp_path, "r.png a.png 3.5\nr.png b.png 2.0\n"))
    assert [(r.reference, r.name) for r in rows] == [("r.png", "a.png"), ("r.png", "b.png")] and bad == []
    _write(tmp_path, "a.png 3.5\nimage mos\nb.png 2.0\n")
    with pytest.raises(
        LabelFormatError, match=r"(?s)1 of 3 rows of .*list\.txt row 2: MOS 'mos' of 'image' is not a number"
    ):
        load_benchmark("x", tmp_path, adapter="text", labels="list.txt", check_media=False)


def test_mixed_formats_bad_mos_and_conflicting_duplicates_are_named_or_skipped(tmp_path):
    """Bad input: a list mixing two line formats, a MOS that is not a number, a name listed twice with two
    MOS: an error naming the file and the rows; with on_bad_sample=skip they are counted and listed."""
    text = "r.png a.png 3.5 0.1\nb.png 2.0\nr.png c.png abc\nr.png d.png 4.0\nr.png d.png 1.0\nr.png e.png 2.5\n"
    _write(tmp_path, text)
    with pytest.raises(LabelFormatError) as err:
        load_benchmark("x", tmp_path, adapter="text", labels="list.txt", check_media=False)
    msg = str(err.value)
    assert "4 of 6 rows of" in msg and f"{tmp_path / 'list.txt'} row 2: a 'name mos [std]' row" in msg
    assert "row 3: MOS 'abc' of 'c.png' is not a number" in msg
    assert "row 4: 'd.png' is listed with two different MOS: row 4 (4.0), row 5 (1.0)" in msg
    with pytest.warns(UserWarning, match="4 of 6 rows"):
        bench = load_benchmark(
            "x", tmp_path, adapter="text", labels="list.txt", check_media=False, on_bad_sample="skip"
        )
    assert [it.id for it in bench.items] == ["a.png", "e.png"]
    assert sorted(r.id for r in bench.rejected) == ["b.png", "c.png", "d.png", "d.png"]


def test_same_row_twice_is_read_once_and_logged(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        rows, bad, _ = read_label_list(_write(tmp_path, "a.png 3.5\na.png 3.5\nb.png 2\n"))
    assert [r.name for r in rows] == ["a.png", "b.png"] and bad == [] and "1 repeated row(s)" in caplog.text


def test_references_outside_the_released_split_are_named(tmp_path):
    root = tmp_path / "kadid10k"
    shutil.copytree(KADID, root)
    with open(root / "dmos.csv", "a") as f:
        f.write("I99_01_01.png,I99.png,3.0,0.2\n")
    shutil.copyfile(root / "images/I01_01_01.png", root / "images/I99_01_01.png")
    with pytest.raises(LabelFormatError, match=r"1 reference\(s\) are not in the released kadid10k split .*'I99.png'"):
        load_benchmark("kadid10k", root, split="train")
    assert len(load_benchmark("kadid10k", root)) == 7  # no split: every row


def test_user_split_lists_select_items_for_any_adapter(tmp_path):
    """split_lists points any adapter at the user's {train,val,test} files in the anchors' formats; names
    the label file lacks are an error naming the list and the count (listed under skip)."""
    root = tmp_path / "kadid10k"
    shutil.copytree(KADID, root)
    (root / "train.txt").write_text("I01.png I01_01_01.png 4.6 0.7\nI02.png I02_10_03.png 3.0 0.9\n")
    (root / "test.txt").write_text("I19_07_01.png 4.2\nI07_16_02.png 3.9\n")
    lists = {"train": "train.txt", "test": str(root / "test.txt")}
    train = load_benchmark("kadid10k", root, split="train", split_lists=lists)
    test = load_benchmark("kadid10k", root, split="test", split_lists=lists)
    assert [it.id for it in train.items] == ["I01_01_01.png", "I02_10_03.png"]
    assert [it.id for it in test.items] == ["I07_16_02.png", "I19_07_01.png"]  # label-file order
    with pytest.raises(ValueError, match=r"split 'val' has no file in split_lists"):
        load_benchmark("kadid10k", root, split="val", split_lists=lists)
    (root / "test.txt").write_text("I19_07_01.png 4.2\nnope.png 3.9\ngone.png 2.0\n")
    with pytest.raises(
        LabelFormatError,
        match=r"test\.txt: 2 of its 3 image\(s\) are not in the label file: \['nope.png', 'gone.png'\]",
    ):
        load_benchmark("kadid10k", root, split="test", split_lists=lists)
    with pytest.warns(UserWarning, match="2 image"):
        kept = load_benchmark("kadid10k", root, split="test", split_lists=lists, on_bad_sample="skip")
    assert [it.id for it in kept.items] == ["I19_07_01.png"]
    text = load_benchmark("l", LISTS, adapter="text", labels="Deblur_test_all.txt", check_media=False,
                          split="test", split_lists={"test": str(LISTS / "Deblur_test_all.txt")})  # fmt: skip
    assert len(text) == 3 and math.isfinite(text.items[0].mos)


def test_sriqa_bench_adapter_reads_the_anchors_ref_name_list(tmp_path):
    """The sriqa_bench adapter's flat-list fallback (no MOS/ folder) reads the anchors' `ref name mos` list."""
    root = tmp_path / "sriqa_bench"
    root.mkdir()
    shutil.copyfile(LISTS / "GT_SRIQA-Bench.txt", root / "GT_SRIQA-Bench.txt")
    bench = load_benchmark("sriqa_bench", root, labels="GT_SRIQA-Bench.txt", check_media=False)
    assert [it.id for it in bench.items] == ["online50_SeeSRx4.png", "online50_Original.png", "online50_OSEDiffx4.png"]
    assert {it.reference for it in bench.items} == {"online50_Original.png"}
