"""The warm-up says loudly when it misses its target (or stops, by a setting) and has its own batch size."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import compose_config

from prresq.train import run
from prresq.warmup import WarmupTargetMissed

WARMUP = [
    "experiment=tiny_synthetic",
    "eval_before_after=false",
    "grpo.k=2",
    "grpo.max_new_tokens=8",
    "scoring.n=2",
    "data.batch_size=4",
    "data.synthetic.crops_per_photo=1",
    "data.val_subset=8",
    "warmup.vision_steps=0",
    "warmup.batch_size=3",
    "warmup.max_steps=2",
    "warmup.min_steps=0",
    "warmup.eval_every=2",
    "warmup.target_srcc=0.99",  # out of reach in 2 steps
    "trainer.max_steps=1",
    "trainer.max_time=null",
    "trainer.limit_val_batches=0",
    "export_dir=null",
]


def test_a_missed_target_warns_loudly_or_stops_before_rl(tmp_path, caplog):
    """Pins: a supervised phase that ends below `warmup.target_srcc` logs a warning naming the SRCC, the target and
    what to change, and RL still runs; with `warmup.on_target_missed=stop` the run stops before RL (no checkpoint),
    also when the warm-up comes from its cache. The phase trains at `warmup.batch_size`, not `data.batch_size`."""
    cache = tmp_path / "cache"

    def compose(overrides: list[str], out: str):
        return compose_config(
            "train", [*WARMUP, *overrides], root_dir=tmp_path, cache_dir=cache, output_dir=tmp_path / out
        )

    with caplog.at_level(logging.WARNING, logger="prresq.warmup"):
        run(compose([], "warn"))
    (warning,) = [r.getMessage() for r in caplog.records if "did not reach its target" in r.getMessage()]
    assert "warmup.target_srcc=0.99" in warning and "warmup.max_steps" in warning and "warmup.batch_size" in warning
    assert (tmp_path / "warn" / "checkpoints" / "last.ckpt").exists()  # RL ran
    (history,) = [json.loads(p.read_text()) for p in (cache / "warmup").glob("*/warmup_history.json")]
    assert [h["batch_size"] for h in history["history"]] == [3]
    with pytest.raises(WarmupTargetMissed, match=r"SRCC .* < warmup\.target_srcc=0\.99"):
        run(compose(["warmup.on_target_missed=stop"], "stop"))  # the cached warm-up, checked again
    assert not (tmp_path / "stop" / "checkpoints").exists()
