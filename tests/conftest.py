"""Shared fixtures: the tiny Qwen2.5-VL directory and a small synthetic IQA set (built once per run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prresq.data.synthetic import generate_synthetic_iqa
from prresq.models import build_tiny_model

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


@pytest.fixture(scope="session")
def synthetic_iqa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic IQA set (56 px, 3 distortion types, 2 crops per photo, a 2-photo prior split)."""
    return generate_synthetic_iqa(tmp_path_factory.mktemp("synthetic_iqa") / "set", **SYNTHETIC_TEST_OPTIONS)
