"""An export folder holds one export (issue 25 item 3): written beside the target and swapped in whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_train import TINY, compose_train

from prresq.export_dir import ExportDirError, write_export
from prresq.lora import is_adapter_dir
from prresq.models import load_scoring_model
from prresq.train import run

ONE_STEP = [*TINY, "model.lora={r: 4}", "trainer.max_steps=1", "trainer.limit_val_batches=0"]
ONE_STEP += ["trainer.val_check_interval=null", "callbacks.checkpoint=null"]


def test_an_adapter_export_replaces_an_earlier_full_export_whole(tiny_model_dir, tmp_path):
    """Pins: a LoRA run exporting into a folder that held a full export left both sets of files, and
    `load_scoring_model` (eval, infer) then loaded the old full model. Now the folder holds the adapter export
    only, and loads as adapters on their base; with `export_replace=false` the run is refused before training."""
    export = tmp_path / "export"
    shutil.copytree(tiny_model_dir, export)  # an earlier full export
    cache = tmp_path / "cache"
    run(compose_train([*ONE_STEP, f"export_dir={export}"], tmp_path / "run", cache))
    assert is_adapter_dir(export), sorted(p.name for p in export.iterdir())
    assert not (export / "config.json").exists() and not (export / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export.")]  # no temporary folder left
    model, _ = load_scoring_model({"dtype": "float32"}, checkpoint=export, device="cpu")
    assert any("lora_" in name for name, _ in model.named_parameters())

    with pytest.raises(ExportDirError, match=r"export_dir=.*export already holds an export.*export_replace=true"):
        run(compose_train([*ONE_STEP, f"export_dir={export}", "export_replace=false"], tmp_path / "run2", cache))
    assert not (tmp_path / "run2" / "csv").exists()  # refused before training


def test_a_failed_export_write_leaves_the_previous_export_as_it_was(tmp_path):
    """A write that fails half-way removes its temporary folder; the previous export is untouched."""
    target = tmp_path / "export"
    write_export(target, lambda out: (out / "config.json").write_text("old"))

    def broken(out: Path) -> None:
        (out / "adapter_config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_export(target, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert [p.name for p in target.iterdir()] == ["config.json"] and (target / "config.json").read_text() == "old"
