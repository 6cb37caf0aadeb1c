"""Label files that disagree with themselves or with their documentation stop with the file, row and
value named (or are bad rows under `on_bad_sample`), on the native path and the JSONL path alike:
categorical columns, duplicated rows, MOS ranges, blank rows, undecodable files, media paths that
leave the dataset root. Each test writes real label files into a tmp dir and reads them with the
real adapters or the real `QualityDataModule`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import openpyxl
import pytest
from conftest import compose_config

from prresq.config_checks import ConfigError, check_train_config
from prresq.data.benchmarks import LabelFormatError, load_benchmark
from prresq.data.datamodule import QualityDataModule
from prresq.data.records import DataError, load_dataset

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def _copy(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    return root


def _native(root: Path, adapter: str, split: str | None, **kw) -> dict:
    return {"name": adapter, "benchmark": adapter, "root": str(root), "split": split, **kw}


def _datamodule(**splits) -> QualityDataModule:
    dm = QualityDataModule(**splits, batch_size=1)
    dm.setup()
    return dm


def _edit_csv(path: Path, row: int, old: str, new: str) -> None:
    """Replace `old` by `new` in spreadsheet row `row` (header = row 1) of a CSV."""
    lines = path.read_text().splitlines()
    assert old in lines[row - 1]
    lines[row - 1] = lines[row - 1].replace(old, new)
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- categorical columns


def test_lsvq_is_test_reads_its_spellings_case_insensitively(tmp_path):
    """`is_test` as True/False, TRUE/false, 1/0 or yes/no all give the same split."""
    root = _copy(tmp_path, "lsvq")
    labels = root / "labels_train_test.csv"
    expected = {s: [it.id for it in load_benchmark("lsvq", root, split=s).items] for s in ("train", "test")}
    for yes, no in (("TRUE", "false"), ("1", "0"), ("Yes", "NO")):
        text = (FIXTURES / "lsvq/labels_train_test.csv").read_text()
        labels.write_text(text.replace(",True,True", f",{yes},True").replace(",False,True", f",{no},True"))
        assert {s: [it.id for it in load_benchmark("lsvq", root, split=s).items] for s in expected} == expected


def test_lsvq_unknown_is_test_value_stops_instead_of_training_on_test_videos(tmp_path):
    """Pins issue 25 item 1: `is_test` = "T" was read as train (every test video trained on, the test
    split empty); now the DataModule stops naming the file, row, value and the accepted values."""
    root = _copy(tmp_path, "lsvq")
    labels = root / "labels_train_test.csv"
    _edit_csv(labels, 3, ",True,True", ",T,True")
    with pytest.raises(DataError) as err:
        _datamodule(train=_native(root, "lsvq", "train"))  # before: trained on the test video of row 3
    msg = str(err.value)
    assert f"{labels} row 3: column 'is_test' is 'T'" in msg
    assert "accepted values (case-insensitive): true, false, 1, 0, 1.0, 0.0, yes, no" in msg


def test_koniq_set_column_reads_its_spellings_and_stops_on_anything_else(tmp_path):
    """Pins issue 25 item 1: a `set` value other than training/validation/test (here "Train set") dropped
    the row from every split without a word; "Training" (another case) reads as training."""
    root = _copy(tmp_path, "koniq10k")
    sets = root / "koniq10k_distributions_sets.csv"
    _edit_csv(sets, 2, ",training", ",Training")
    train = _datamodule(train=_native(root, "koniq10k", "train")).datasets["train"]
    assert [r.id for r in train.records] == ["10004473376.jpg", "10007903636.jpg"]
    _edit_csv(sets, 4, ",training", ",Train set")
    with pytest.raises(LabelFormatError) as err:
        load_benchmark("koniq10k", root, split="train")  # before: row 4 left out of every split
    assert (
        f"{sets} row 4: column 'set' is 'Train set'; accepted values (case-insensitive): training, validation, test"
        in str(err.value)
    )


def test_koniq_image_missing_from_the_sets_file_stops(tmp_path):
    """An image of the scores file with no row in the sets file has no split: it was silently in none."""
    root = _copy(tmp_path, "koniq10k")
    sets = root / "koniq10k_distributions_sets.csv"
    sets.write_text("\n".join(sets.read_text().splitlines()[:-1]) + "\n")  # drop 10050349236.jpg
    with pytest.raises(
        LabelFormatError, match=re.escape(f"have no row in {sets}, so their split is unknown (rows [5])")
    ):
        load_benchmark("koniq10k", root, split="test")


def test_conversation_roles_are_read_case_insensitively_and_unknown_roles_stop(tmp_path):
    """The answer turn is `gpt` or `assistant` in any case, on both JSONL paths (training records and
    the `jsonl` benchmark adapter); a role outside human/user/system/gpt/assistant names the line."""
    (tmp_path / "a.png").write_bytes(b"")
    rows = [
        {
            "id": "a",
            "image": ["a.png"],
            "conversations": [{"from": "Human", "value": "?"}, {"from": "GPT", "value": 2}],
        },
        {
            "id": "b",
            "image": ["a.png"],
            "conversations": [{"from": "user", "value": "?"}, {"from": "Assistant", "value": 4}],
        },
    ]
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r.mos for r in load_dataset({"name": "toy", "jsonl": str(path)}).records] == [2.0, 4.0]
    assert [it.mos for it in load_benchmark("toy", path, adapter="jsonl").items] == [2.0, 4.0]
    rows[1]["conversations"][1]["from"] = "bot"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=re.escape(f"{path}:2: conversations: a turn's 'from' is 'bot'; accepted")):
        load_dataset({"name": "toy", "jsonl": str(path)})
    with pytest.raises(LabelFormatError, match=re.escape(f"{path} row 2: conversations: a turn's 'from' is 'bot'")):
        load_benchmark("toy", path, adapter="jsonl")


def test_jsonl_adapter_task_and_dataset_name_are_checked(tmp_path):
    """`task` reads iqa / vqa in any case (a VQA entry spelled "VQA" became images) and stops on
    anything else; a `dataset_name` filter that matches no record (it returned an empty benchmark
    with a warning) names the dataset names found."""
    path = FIXTURES / "synthetic_iqa/test.jsonl"
    assert load_benchmark("toy", path, adapter="jsonl", task="VQA").task == "vqa"
    with pytest.raises(ValueError, match="task is 'video'; accepted values \\(case-insensitive\\): iqa, vqa"):
        load_benchmark("toy", path, adapter="jsonl", task="video")
    assert len(load_benchmark("toy", path, adapter="jsonl", dataset_name="Synthetic_IQA")) == 2
    with pytest.raises(
        LabelFormatError,
        match=re.escape("no record has dataset_name 'kadid' (case-insensitive); found: ['kadid10k', 'synthetic_iqa']"),
    ):
        load_benchmark("toy", path, adapter="jsonl", dataset_name="kadid")


# ----------------------------------------------------------------------------- duplicated rows


def test_native_duplicates_with_equal_mos_merge_and_are_counted(tmp_path):
    root = _copy(tmp_path, "kadid10k")
    dmos = root / "dmos.csv"
    dmos.write_text(dmos.read_text() + "I02_10_03.png,I02.png,3.05,0.953\n")
    bench = load_benchmark("kadid10k", root)
    assert (
        len(bench) == 6 and bench.merged_duplicates == 1 and [it.id for it in bench.items].count("I02_10_03.png") == 1
    )
    ds = load_dataset(_native(root, "kadid10k", None))
    assert len(ds) == 6 and ds.merged_duplicates == 1


@pytest.mark.parametrize("on_bad_sample", ["raise", "skip"])
def test_native_duplicates_with_different_mos_stop_naming_both_rows(tmp_path, on_bad_sample):
    """Pins issue 25 item 6: both rows were kept (the adapter's warning swallowed by the data path)."""
    root = _copy(tmp_path, "kadid10k")
    dmos = root / "dmos.csv"
    dmos.write_text(dmos.read_text() + "I02_10_03.png,I02.png,4.4,0.953\n")
    with pytest.raises(DataError) as err:
        QualityDataModule(train=_native(root, "kadid10k", None), on_bad_sample=on_bad_sample).setup()
    assert (
        f"'I02_10_03.png' is labelled 2 times with different MOS: {dmos} row 4: MOS 3.05; {dmos} row 8: MOS 4.4"
        in str(err.value)
    )


def _jsonl(tmp_path: Path, rows: list[tuple[str, str, float]]) -> Path:
    for _, image, _ in rows:
        (tmp_path / image).write_bytes(b"")
    path = tmp_path / "toy.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "image": [m], "conversations": [{"from": "gpt", "value": s}]}) + "\n"
            for i, m, s in rows
        )
    )
    return path


def test_jsonl_duplicates_follow_the_same_rule(tmp_path):
    """Equal repeats merge and are counted (the JSONL path refused every repeat); different MOS or
    different media stop naming both lines."""
    path = _jsonl(tmp_path, [("a", "a.png", 1.0), ("b", "b.png", 3.0), ("a", "a.png", 1.0), ("c", "c.png", 5.0)])
    ds = _datamodule(train={"name": "toy", "jsonl": str(path)}).datasets["train"].parts[0]
    assert [r.id for r in ds.records] == ["a", "b", "c"] and ds.merged_duplicates == 1
    path = _jsonl(tmp_path, [("a", "a.png", 1.0), ("b", "b.png", 3.0), ("a", "a.png", 2.0)])
    with pytest.raises(
        DataError, match=re.escape(f"'a' is labelled 2 times with different MOS: {path}:1: MOS 1; {path}:3: MOS 2")
    ):
        load_dataset({"name": "toy", "jsonl": str(path)}, on_bad_sample="skip")
    path = _jsonl(tmp_path, [("a", "a.png", 1.0), ("b", "b.png", 3.0), ("a", "c.png", 1.0)])
    with pytest.raises(DataError, match=re.escape(f"'a' is labelled 2 times with different media: {path}:1:")):
        load_dataset({"name": "toy", "jsonl": str(path)})


# ----------------------------------------------------------------------------- MOS mappings


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[5,1]", r"data\.mos_map_to=\[5, 1\]: must be increasing .*invert quality"),
        ("[0,100]", r"data\.mos_map_to=\[0, 100\]: must lie inside the answer scale .* = \[1, 5\]"),
        ("[2,2]", r"data\.mos_map_to=\[2, 2\]: must be increasing"),
    ],
)
def test_mos_map_to_must_be_increasing_and_inside_the_answer_scale(tmp_path, value, message):
    """Pins issue 25 item 7: [5, 1] silently inverted quality, [0, 100] mapped MOS where no clamped
    answer reaches; both now fail at start-up."""
    with pytest.raises(ConfigError, match=message):
        check_train_config(_train_config(tmp_path, value))


def test_mos_map_to_inside_the_answer_scale_passes(tmp_path):
    check_train_config(_train_config(tmp_path, "[2,4]"))  # the shipped [1, 5] passes in test_config_checks


def _train_config(tmp_path: Path, mos_map_to: str):
    paths = {"root_dir": tmp_path, "output_dir": tmp_path, "cache_dir": tmp_path / "cache"}
    return compose_config("train", ["experiment=tiny_synthetic", f"data.mos_map_to={mos_map_to}"], **paths)


def test_native_mos_outside_the_declared_range_names_the_row(tmp_path):
    """Pins issue 25 item 7: a native entry's `mos_range` narrower than its data mapped MOS outside [1, 5]
    (here 4.57 with [1.5, 4.5] -> 5.09); now the row is named, or left out and listed under skip."""
    root = _copy(tmp_path, "kadid10k")
    entry = _native(root, "kadid10k", None, mos_range=[1.5, 4.5])
    with pytest.raises(DataError) as err:
        _datamodule(train=entry)
    msg = str(err.value)
    assert "2 of 6 rows have a MOS outside the declared mos_range [1.5, 4.5]" in msg
    assert f"{root / 'dmos.csv'} row 2: MOS 4.57 of 'I01_01_01.png' outside" in msg
    ds = load_dataset(entry, on_bad_sample="skip")
    assert len(ds) == 4 and len(ds.skipped) == 2 and max(r.mos_mapped for r in ds.records) <= 5.0


# ----------------------------------------------------------------------------- blank rows, undecodable files


@pytest.mark.parametrize("split", [None, "train"])
def test_trailing_comma_row_is_a_bad_row(tmp_path, split):
    """Pins: a trailing `,,,` row crashed the split with TypeError (even under skip); now it is a bad
    row named by its row number, left out and listed under skip."""
    root = _copy(tmp_path, "kadid10k")
    dmos = root / "dmos.csv"
    dmos.write_text(dmos.read_text() + ",,,\n")
    with pytest.raises(LabelFormatError, match=re.escape(f"{dmos} row 8: an empty row")):
        load_benchmark("kadid10k", root, split=split)
    with pytest.warns(UserWarning, match="skipped"):
        bench = load_benchmark("kadid10k", root, split=split, on_bad_sample="skip")
    assert [r.reason for r in bench.rejected] == [f"{dmos} row 8: an empty row"]
    assert len(bench) == len(load_benchmark("kadid10k", FIXTURES / "kadid10k", split=split))


def test_blank_xlsx_row_is_a_bad_row(tmp_path):
    """A blank row inside SPAQ's .xlsx (and a row with a name but no MOS) are bad rows naming the row."""
    root = _copy(tmp_path, "spaq")
    sheet_path = root / "Annotations/MOS and Image attribute scores.xlsx"
    book = openpyxl.load_workbook(sheet_path)
    sheet = book.active
    sheet.insert_rows(3)  # blank row 3
    sheet.append(["00009.jpg", None])  # row 6: name, no MOS
    book.save(sheet_path)
    with pytest.raises(LabelFormatError) as err:
        load_benchmark("spaq", root, split="train")
    assert f"{sheet_path} row 3: an empty row" in str(err.value) and f"{sheet_path} row 6: no MOS (empty cell)" in str(
        err.value
    )
    with pytest.warns(UserWarning, match="skipped"):
        bench = load_benchmark("spaq", root, on_bad_sample="skip")
    assert len(bench) == 3 and len(bench.rejected) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.5\nI01_caf\xe9.png,I01.png,2,0.5\n".encode(
                "latin-1"
            ),
            r"row 3|line 3: not UTF-8 text \(byte 0xe9",
        ),
        ("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.5\n".encode("utf-16"), r": UTF-16 text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"line 3: binary data"),
    ],
    ids=["latin-1", "utf-16", "binary"],
)
def test_undecodable_label_files_name_the_file_and_line(tmp_path, data, message):
    """Pins: Latin-1 / UTF-16 / binary label files raised a bare UnicodeDecodeError."""
    root = _copy(tmp_path, "kadid10k")
    (root / "dmos.csv").write_bytes(data)
    with pytest.raises(DataError, match=re.escape(str(root / "dmos.csv")) + ".*" + message):
        load_dataset(_native(root, "kadid10k", None))
    jsonl = tmp_path / "toy.jsonl"
    jsonl.write_bytes(data)
    with pytest.raises(DataError, match=re.escape(str(jsonl)) + ".*" + message):
        load_dataset({"name": "toy", "jsonl": str(jsonl)})


def test_truncated_xlsx_names_the_file(tmp_path):
    """Pins: a truncated .xlsx raised zipfile.BadZipFile with no file name."""
    root = _copy(tmp_path, "spaq")
    sheet = root / "Annotations/MOS and Image attribute scores.xlsx"
    sheet.write_bytes(sheet.read_bytes()[:700])
    with pytest.raises(DataError, match=re.escape(f"{sheet}: not a readable .xlsx workbook") + ".*BadZipFile"):
        load_dataset(_native(root, "spaq", "train"))


def test_malformed_jsonl_line_of_the_jsonl_adapter_names_the_line(tmp_path):
    """Pins: the `jsonl` benchmark adapter raised a bare JSONDecodeError; now the line is a bad row
    naming the file and line (left out and listed under skip)."""
    src = FIXTURES / "synthetic_iqa"
    root = tmp_path / "synthetic_iqa"
    shutil.copytree(src, root)
    path = root / "test.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"id": "x", "image": [', *lines[1:]]) + "\n")
    with pytest.raises(LabelFormatError, match=re.escape(f"{path} row 2: malformed JSON")):
        load_benchmark("jsonl", path)
    with pytest.warns(UserWarning, match="skipped"):
        bench = load_benchmark("jsonl", path, on_bad_sample="skip")
    assert len(bench) == len(lines) and bench.rejected[0].reason.startswith(f"{path} row 2: malformed JSON")


# ----------------------------------------------------------------------------- media paths inside the root


def test_native_media_path_leaving_the_root_is_refused_unless_allowed(tmp_path):
    """Pins: a label row `../secret.png` (or an absolute path) was read from outside the dataset
    folder; now it is a bad row naming the row, unless the entry sets allow_media_outside_root."""
    root = _copy(tmp_path, "kadid10k")
    (tmp_path / "secret.png").write_bytes(b"")
    dmos = root / "dmos.csv"
    dmos.write_text(dmos.read_text() + f"../../secret.png,I06.png,2.5,0.4\n{tmp_path / 'secret.png'},I07.png,3.5,0.4\n")
    with pytest.raises(DataError) as err:
        _datamodule(train=_native(root, "kadid10k", None))
    msg = str(err.value)
    assert f"{dmos} row 8: media path {root / 'images/../../secret.png'} of '../../secret.png' leads outside" in msg
    assert f"{dmos} row 9: media path {tmp_path / 'secret.png'}" in msg and "allow_media_outside_root" in msg
    ds = _datamodule(train=_native(root, "kadid10k", None, allow_media_outside_root=True)).datasets["train"]
    assert len(ds) == 8


def test_jsonl_media_path_leaving_the_root_is_refused_unless_allowed(tmp_path):
    (tmp_path / "outside.png").write_bytes(b"")
    data = tmp_path / "data"
    data.mkdir()
    for n in ("a.png", "b.png"):
        (data / n).write_bytes(b"")
    rows = [
        ("a", "a.png", 1.0),
        ("b", "b.png", 2.0),
        ("c", "../outside.png", 3.0),
        ("d", str(tmp_path / "outside.png"), 4.0),
    ]
    path = data / "toy.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "image": [m], "conversations": [{"from": "gpt", "value": s}]}) + "\n"
            for i, m, s in rows
        )
    )
    with pytest.raises(
        DataError, match=re.escape(f"{path}:3: media path '../outside.png' leads outside the dataset root")
    ):
        load_dataset({"name": "toy", "jsonl": str(path)})
    skipped = load_dataset({"name": "toy", "jsonl": str(path)}, on_bad_sample="skip")
    assert [r.id for r in skipped.records] == ["a", "b"] and len(skipped.skipped) == 2
    allowed = _datamodule(train={"name": "toy", "jsonl": str(path), "allow_media_outside_root": True})
    assert [r.id for r in allowed.datasets["train"].records] == ["a", "b", "c", "d"]
    with pytest.raises(LabelFormatError, match=re.escape(f"{path} row 3: media path")):
        load_benchmark("toy", path, adapter="jsonl")
    assert len(load_benchmark("toy", path, adapter="jsonl", allow_media_outside_root=True)) == 4


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    """A prompt holding U+2028 (valid JSON, written by `json.dumps(..., ensure_ascii=False)`) is one
    record on both JSONL paths; `str.splitlines` cut it in two and the adapter failed on both halves."""
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    rows = [
        {
            "id": "a",
            "image": ["a.png"],
            "conversations": [{"from": "human", "value": "x\u2028y"}, {"from": "gpt", "value": 1}],
        },
        {"id": "b", "image": ["b.png"], "conversations": [{"from": "gpt", "value": 3}]},
    ]
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert [r.id for r in load_dataset({"name": "toy", "jsonl": str(path)}).records] == ["a", "b"]
    assert [it.id for it in load_benchmark("toy", path, adapter="jsonl").items] == ["a", "b"]
