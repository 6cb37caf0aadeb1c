"""Shared fixtures: the tiny model directories (Qwen2.5-VL, and one per family) and a small synthetic IQA set.

`compose_config` composes a real `conf/` config with a test's overrides and points its paths at the
test's directories; test files import it (`from conftest import compose_config`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from prresq.data.synthetic import generate_synthetic_iqa
from prresq.models import FAMILIES as MODEL_FAMILIES
from prresq.models import build_tiny_model

CONF = Path(__file__).resolve().parents[1] / "conf"

# Tiny models are latency-bound; spin-waiting OpenMP threads on a busy 2-core machine cost 10-50x.
torch.set_num_threads(1)

SYNTHETIC_TEST_OPTIONS = dict(
    types=["white_noise", "jpeg", "saturation"],
    size=56,
    crops_per_photo=2,
    levels=5,
    seed=42,
    prior_photos=2,
    progress=False,
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly written tiny Qwen2.5-VL model directory (random weights, real processor)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2.5-vl") / "model")


# Every registered model family; the shared-prefix equality battery runs on those that share a prefix.
ALL_FAMILIES = list(MODEL_FAMILIES)
FAMILIES = [name for name, family in MODEL_FAMILIES.items() if family.shares_prefix]


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Callable[[str], Path]:
    """`tiny_family_dir(family)`: a freshly written tiny model directory of that family (built once per run)."""
    built: dict[str, Path] = {"qwen2_5_vl": tiny_model_dir}

    def build(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{family}") / "model", family=family)
        return built[family]

    return build


@pytest.fixture(scope="session")
def synthetic_iqa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic IQA set (56 px, 3 distortion types, 2 crops per photo, a 2-photo prior split)."""
    return generate_synthetic_iqa(tmp_path_factory.mktemp("synthetic_iqa") / "set", **SYNTHETIC_TEST_OPTIONS)


def compose_config(
    name: str | None = "train",
    overrides: Sequence[str] = (),
    *,
    model_dir: str | Path | None = None,
    return_hydra_config: bool = False,
    **paths: str | Path,
) -> DictConfig:
    """Compose `conf/<name>.yaml` with `overrides`, as `python -m prresq.<name>` would.

    Each keyword in `paths` (`root_dir`, `cache_dir`, `data_dir`, `output_dir`) replaces that `cfg.paths` entry,
    and `model_dir` replaces `model.name_or_path`; entries not given keep the composed value.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    with open_dict(cfg):
        for key, value in paths.items():
            if key not in cfg.paths:
                raise KeyError(f"compose_config: conf/{name}.yaml has no paths.{key} (has {sorted(cfg.paths)})")
            cfg.paths[key] = str(value)
        if model_dir is not None:
            cfg.model.name_or_path = str(model_dir)
    return cfg


# A `tiny_synthetic` run small enough for a test: no warm-up, K = 2, 8 new tokens, one crop per photo.
TINY_TRAIN = [
    "experiment=tiny_synthetic",
    "warmup=none",
    "grpo.k=2",
    "grpo.max_new_tokens=8",
    "scoring.n=2",
    "data.batch_size=2",
    "data.synthetic.crops_per_photo=1",
    "trainer.max_time=null",
]


def train_like_make_train(root: Path, overrides: Sequence[str]) -> Path:
    """Train `TINY_TRAIN` + `overrides` into `<root>/outputs/tiny_synthetic/<date>_<time>` (where `make train` writes),
    with its cache in `<root>/.cache`, as a user's checkout after `make train`; returns the run directory."""
    from prresq.train import run

    run_dir = root / "outputs" / "tiny_synthetic" / "2026-01-01_00-00-00"
    cache = root / ".cache"
    cfg = compose_config(
        "train", [*TINY_TRAIN, *overrides], root_dir=root, cache_dir=cache, data_dir=cache / "data", output_dir=run_dir
    )
    run(cfg)
    return run_dir


def slurm_unavailable() -> str | None:
    """Why the `slurm`-marked tests cannot run here; None when an idle node answers `sinfo`."""
    import shutil
    import subprocess

    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on PATH; `experiments/slurm/cluster.sh start` starts a one-node cluster"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed: {err}"
    if out.returncode != 0:
        return f"sinfo failed: {(out.stderr or out.stdout).strip()[-300:]}"
    if not {"idle", "mixed"} & set(out.stdout.split()):
        return f"no idle SLURM node (sinfo states: {sorted(set(out.stdout.split()))})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slurm = [item for item in items if "slurm" in item.keywords]
    reason = slurm_unavailable() if slurm else None
    for item in slurm if reason else []:
        item.add_marker(pytest.mark.skip(reason=f"slurm: {reason}"))
