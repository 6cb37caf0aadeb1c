"""Tiny models are cached per spec, never rewritten in place; adapters refuse a base model that changed under them
(issue 25 item 4)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from prresq.lora import save_adapter
from prresq.models import TinySpec, build_tiny_model, ensure_model_dir, load_policy, load_processor


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_tiny_override_gets_its_own_folder_and_leaves_the_shared_one_alone(tmp_path):
    """Pins: any `model.tiny.*` override rewrote the shared tiny model folder in place. Each spec now has its own
    folder under `model.name_or_path`; the first model's weights are untouched by the second spec, and asking for
    the first spec again returns its folder as it was (cached), with no temporary folder left."""
    root = tmp_path / "tiny-qwen2.5-vl"
    first = ensure_model_dir(root, {"seed": 0})
    weights = _sha(first / "model.safetensors")
    second = ensure_model_dir(root, {"seed": 0, "num_hidden_layers": 1})
    assert first != second and first.parent == second.parent == root
    assert _sha(first / "model.safetensors") == weights
    assert _sha(second / "model.safetensors") != weights
    assert ensure_model_dir(root, {"seed": 0}) == first and _sha(first / "model.safetensors") == weights
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted([first.name, second.name])
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]
    with pytest.raises(ValueError, match="holds the tiny model of spec digest .* not rewritten in place"):
        build_tiny_model(first, TinySpec(seed=1))


def test_an_adapter_export_refuses_a_base_model_that_changed_under_it(tmp_path):
    """Pins: an adapter export made on one base loaded silently onto whatever the base folder held later (other
    logits). The export records its base model's fingerprint; loading it onto a changed base is an error naming
    the folder and both fingerprints, before the base model is loaded."""
    base = build_tiny_model(tmp_path / "base")
    policy = load_policy(base, lora={"r": 4})
    export = tmp_path / "adapter"
    save_adapter(policy, export)
    load_processor(base).save_pretrained(export)
    assert load_policy(export) is not None  # the unchanged base loads

    other = build_tiny_model(tmp_path / "other", TinySpec(seed=1))
    shutil.copy(other / "model.safetensors", base / "model.safetensors")  # the base folder rewritten in place
    with pytest.raises(
        ValueError,
        match=rf"{export}: these adapters were trained on the base model {base} with "
        r"fingerprint [0-9a-f]{16}, but that folder now holds a model with fingerprint [0-9a-f]{16}",
    ):
        load_policy(export)
