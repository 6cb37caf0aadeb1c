"""The data seam: train / val / test entries that name a benchmark adapter read the datasets' own
label files through the adapters `prresq.eval` uses, with one split function on both sides; the
export CLI and the native-layout mirrors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import compose_config

from prresq.data.benchmarks import load_benchmark, load_benchmark_config, released_split
from prresq.data.datamodule import QualityDataModule
from prresq.data.export import main as export_main
from prresq.data.mirrors import generate_mirrors
from prresq.data.records import DataError, load_dataset

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def _native(root: Path, split: str | None, name: str = "kadid10k", **kw) -> dict:
    return {"name": name, "benchmark": name, "root": str(root), "split": split, **kw}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """KADID-10K and SPAQ mirrors of the synthetic IQA set (seconds)."""
    return generate_mirrors(tmp_path_factory.mktemp("mirror"), ["kadid10k", "spaq"])


def test_native_entry_reads_through_the_eval_adapter():
    """A {benchmark, root, split} entry yields the adapter's rows of that split, MOS mapped from the
    adapter's native range (KADID 1-5) to [1, 5], each record naming its label file row."""
    root = FIXTURES / "kadid10k"
    ds = load_dataset(_native(root, "train"))
    bench = load_benchmark("kadid10k", root, split="train")
    assert [r.id for r in ds.records] == [it.id for it in bench.items] and len(ds) > 0
    assert [r.mos_mapped for r in ds.records] == [it.mos for it in bench.items]
    assert ds.mos_range == (1.0, 5.0) and ds.records[0].source == bench.items[0].source
    spaq = load_dataset(_native(FIXTURES / "spaq", None, "spaq"))
    assert spaq.records[0].mos == 42.65 and spaq.records[0].mos_mapped == pytest.approx(1 + 42.65 / 100 * 4)


def test_reference_images_never_cross_splits_and_eval_sees_the_same_test_split(mirror):
    """Splits follow the released KADID-10K split by reference image: the train / val / test entries of the data
    config partition KADID's references, and the eval benchmark's test split is the datamodule's."""
    cfg = compose_config("train", ["data=kadid", "+benchmark=[kadid10k]", f"paths.data_dir={mirror}"])
    specs = {s: list(cfg.data[s]) for s in ("train", "val", "test")}
    dm = QualityDataModule(**specs)
    dm.setup()
    refs = {s: {r.id.split("_")[0] for r in dm.datasets[s].records} for s in specs}
    assert not refs["train"] & refs["val"] and not refs["train"] & refs["test"] and not refs["val"] & refs["test"]
    assert [len(refs[s]) for s in specs] == [9, 3, 3]  # 15 references named 3:1:1 from the released split
    every = pd.read_csv(mirror / "kadid10k/dmos.csv")
    assert sum(len(dm.datasets[s]) for s in specs) == len(every)
    expected = released_split("kadid10k")
    assert all(expected[f"{ref}.png"] == s for s, names in refs.items() for ref in names)
    bench = load_benchmark_config(cfg.benchmark.kadid10k)
    assert [it.id for it in bench.items] == [r.id for r in dm.datasets["test"].records]


def test_export_cli_round_trips_through_jsonl(tmp_path, capsys):
    """`python -m prresq.data.export` writes the anchors' JSONL; read back as a JSONL entry with the
    written mos_range, it gives the native entry's records (JSONL stays supported)."""
    root = FIXTURES / "kadid10k"
    export_main(["kadid10k", str(root), "--split", "train", "test", "--out", str(tmp_path)])
    counts = {s: len(load_benchmark("kadid10k", root, split=s)) for s in ("train", "test")}
    assert re.findall(r"(\w+)\.jsonl: (\d+) rows", capsys.readouterr().out) == [(s, str(n)) for s, n in counts.items()]
    for split in ("train", "test"):
        row = json.loads((tmp_path / f"{split}.jsonl").read_text().splitlines()[0])
        assert row["image"][0].startswith("images/") and row["conversations"][-1]["from"] == "gpt"
        via_jsonl = load_dataset(
            {
                "name": "kadid10k",
                "jsonl": str(tmp_path / f"{split}.jsonl"),
                "root": str(root),
                "mos_range": row["mos_range"],
            }
        )
        native = load_dataset(_native(root, split))
        assert [(r.id, r.media, r.mos_mapped) for r in via_jsonl.records] == [
            (r.id, r.media, r.mos_mapped) for r in native.records
        ]


def test_missing_media_of_a_native_entry_follows_on_bad_sample(tmp_path):
    """A label row whose media file is missing raises a DataError naming the label file and row, or
    with on_bad_sample=skip is dropped and counted, as a JSONL row would be."""
    root = tmp_path / "kadid10k"
    shutil.copytree(FIXTURES / "kadid10k", root)
    (root / "images/I01_01_05.png").unlink()
    with pytest.raises(DataError, match=re.escape(f"{root / 'dmos.csv'} row 3: media file not found")):
        load_dataset(_native(root, None))
    ds = load_dataset(_native(root, None), on_bad_sample="skip")
    assert len(ds) == 5 and len(ds.skipped) == 1 and "row 3" in ds.skipped[0]


def test_native_entry_needs_a_root():
    with pytest.raises(ValueError, match="'benchmark' and 'root'"):
        load_dataset({"name": "kadid10k", "benchmark": "kadid10k", "split": "train"})


def test_mirrors_have_the_native_layout(mirror):
    """The KADID-10K mirror is dmos.csv + images/I<ref>_<type>_<level>.png; the SPAQ mirror is the
    .xlsx + TestImage/<nnnnn>.jpg; both read with the real adapters."""
    dmos = pd.read_csv(mirror / "kadid10k/dmos.csv")
    assert list(dmos.columns) == ["dist_img", "ref_img", "dmos", "var"]
    assert all(re.fullmatch(r"I\d\d_\d\d_\d\d\.png", n) for n in dmos["dist_img"])
    sheet = pd.read_excel(mirror / "spaq/Annotations/MOS and Image attribute scores.xlsx")
    assert list(sheet.columns)[:2] == ["Image name", "MOS"] and sheet["MOS"].between(0, 100).all()
    assert (
        len(load_benchmark("spaq", mirror / "spaq"))
        == len(sheet)
        == len(list((mirror / "spaq/TestImage").glob("*.jpg")))
    )


def test_koniq_mirror_carries_the_official_split(tmp_path):
    """The KonIQ-10k mirror writes both label files; the adapter takes train/val/test from the sets
    file's `set` column (by reference photo), MOS 1-5 in the scores file and 1-100 in the sets file."""
    root = generate_mirrors(tmp_path, ["koniq10k"]) / "koniq10k"
    sets = pd.read_csv(root / "koniq10k_distributions_sets.csv")
    assert list(sets.columns) == ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"]
    assert sets["MOS"].between(1, 100).all() and set(sets["set"]) == {"training", "validation", "test"}
    for split, name in (("train", "training"), ("val", "validation"), ("test", "test")):
        ids = [it.id for it in load_benchmark("koniq10k", root, split=split).items]
        assert ids == sets.loc[sets["set"] == name, "image_name"].tolist()
    assert load_benchmark("koniq10k", root).mos_range == (1.0, 5.0)
