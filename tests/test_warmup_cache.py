"""The warm-up's vision-phase cache: keyed by what determines phase (a) only, and invisible in the result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from safetensors.torch import load_file

from prresq.rng_states import capture_rng_states
from prresq.warmup import run_warmup, vision_spec, warmup_digest

TINY_WARMUP = [
    "experiment=tiny_synthetic",
    "data.synthetic.crops_per_photo=1",
    "data.val_subset=8",
    "data.eval_batch_size=8",
    "scoring.n=2",
    "warmup.vision_steps=3",
    "warmup.vision_batch_size=4",
    "warmup.max_steps=3",
    "warmup.min_steps=3",
    "warmup.eval_every=2",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for every run here: the cache digests name the data by its path, as a study shares it."""
    return tmp_path_factory.mktemp("data")


def _cfg(overrides: list[str], cache_dir: Path, data_dir: Path, model_dir: Path):
    return compose_config(
        "train", [*TINY_WARMUP, *overrides], cache_dir=cache_dir, data_dir=data_dir, model_dir=model_dir
    )


def _phases(warmup_dir: Path) -> dict:
    return json.loads((warmup_dir / "warmup_history.json").read_text())["phases"]


def _history(warmup_dir: Path) -> str:
    """The validation history without its wall-clock field, as JSON text (a NaN score compares equal)."""
    rows = json.loads((warmup_dir / "warmup_history.json").read_text())["history"]
    return json.dumps([{k: v for k, v in row.items() if k != "seconds"} for row in rows], sort_keys=True)


def _weights(warmup_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted(warmup_dir.glob("*.safetensors"))
    assert files, f"no exported weights in {warmup_dir}"
    return {k: v for f in files for k, v in load_file(f).items()}


def test_vision_digest_ignores_fold_and_prompt_and_keys_seed_vision_settings_and_prior_data(tmp_path, tiny_model_dir):
    """Phase (a) trains on the prior photos only: the ablation study's folds and answer formats (the `prpo` arm's
    5-aspect prompt and template) share one digest; the seed, each vision setting, the prior data's options
    and the model directory each change it."""

    def digest(*overrides: str, model_dir: Path = tiny_model_dir) -> str:
        return warmup_digest(vision_spec(_cfg(list(overrides), tmp_path, tmp_path / "data", model_dir), model_dir))

    base = digest()
    assert digest("data.synthetic.fold=2") == base
    assert digest("data.synthetic.num_folds=3") == base
    assert digest("experiment=tiny_preresq") == base  # its own prompt, answer template, rewards, schedule
    assert digest("warmup.max_steps=7", "warmup.target_srcc=0.9", "warmup.lr=0.01") == base  # phase (b) only
    changed = [
        digest("seed=1"),
        digest("warmup.vision_steps=4"),
        digest("warmup.vision_batch_size=8"),
        digest("warmup.vision_lr=1e-4"),
        digest("warmup.vision_lr=null"),  # then phase (a) runs at warmup.lr
        digest("data.synthetic.prior_photos=4"),
        digest("data.synthetic.crops_per_photo=2"),
        digest("data.min_pixels=3136"),
        digest("model.dtype=bfloat16"),
    ]
    other_model = shutil.copytree(tiny_model_dir, tmp_path / "other-model")
    changed.append(digest(model_dir=other_model))
    assert len({base, *changed}) == len(changed) + 1


@pytest.mark.slow
def test_cached_vision_phase_gives_the_uncached_warmup_bit_for_bit(tmp_path, tiny_model_dir, data_dir):
    """A warm-up whose phase (a) comes from the vision cache (a fresh cache folder holding only that cache)
    exports exactly the weights of the warm-up that trained it: the cache restores the vision tower and the
    torch / numpy / Python generator states, so phase (b) samples and steps identically. Another fold reuses
    the cache; another seed misses it and trains its own."""
    first = run_warmup(_cfg([], tmp_path / "a", data_dir, tiny_model_dir), tiny_model_dir)
    rng_after_first = capture_rng_states()  # where phase (b)'s sampling (validation answers) left the generators
    assert _phases(first)["vision"]["reused"] is False
    vision_entries = [p for p in (tmp_path / "a" / "warmup_vision").iterdir() if p.is_dir()]
    assert len(vision_entries) == 1 and (vision_entries[0] / "vision.pt").is_file()

    shutil.copytree(tmp_path / "a" / "warmup_vision", tmp_path / "b" / "warmup_vision")
    again = run_warmup(_cfg([], tmp_path / "b", data_dir, tiny_model_dir), tiny_model_dir)
    rng_after_again = capture_rng_states()
    assert _phases(again)["vision"]["reused"] is True
    assert again.name == first.name  # the same full warm-up, computed a second time
    reference, cached = _weights(first), _weights(again)
    assert reference.keys() == cached.keys()
    assert all(torch.equal(reference[k], cached[k]) for k in reference), "cached phase (a) changed the warm-up"
    assert _history(first) == _history(again)  # the same losses and validation scores at the same steps
    # Phase (b) started from the generator states phase (a) left (restored from the cache), so it drew the same.
    assert torch.equal(rng_after_first["torch"], rng_after_again["torch"])
    assert torch.equal(rng_after_first["numpy"][1], rng_after_again["numpy"][1])
    assert rng_after_first["python"] == rng_after_again["python"]

    other_fold = run_warmup(_cfg(["data.synthetic.fold=1"], tmp_path / "a", data_dir, tiny_model_dir), tiny_model_dir)
    assert other_fold != first and _phases(other_fold)["vision"] == {
        **_phases(other_fold)["vision"],
        "digest": vision_entries[0].name,
        "reused": True,
    }
    other_seed = run_warmup(_cfg(["seed=1"], tmp_path / "a", data_dir, tiny_model_dir), tiny_model_dir)
    assert _phases(other_seed)["vision"]["reused"] is False
    assert len([p for p in (tmp_path / "a" / "warmup_vision").iterdir() if p.is_dir()]) == 2
