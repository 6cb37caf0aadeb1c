"""The real composed training config: fast_dev_run, a short run, and resume at the same step."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from prresq.rewards import register_reward
from prresq.train import run

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(overrides: list[str], out_dir: Path, cache_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(out_dir)
        cfg.paths.cache_dir = str(cache_dir)
        cfg.paths.data_dir = str(cache_dir / "data")
        cfg.paths.output_dir = str(out_dir)
    return cfg


TINY = [
    "experiment=tiny_synthetic",
    "warmup=none",
    "eval_before_after=false",
    "grpo.k=3",
    "grpo.max_new_tokens=8",
    "scoring.n=2",
    "data.batch_size=4",
    "trainer.max_time=null",
]


@register_reward("test_char_count")
class CharCount:
    """A reward a random model can earn (completion length in characters), so updates are not all zero."""

    def __call__(self, inputs):
        import torch

        k = inputs.scores.shape[1]
        return torch.tensor([len(t) / 10.0 for t in inputs.texts]).view(-1, k)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_fast_dev_run_of_the_composed_config(tmp_path, cache_dir):
    cfg = compose_train([*TINY, "trainer.fast_dev_run=true"], tmp_path, cache_dir)
    run(cfg)


def _logged(out_dir: Path, column: str) -> pd.Series:
    df = pd.concat([pd.read_csv(f) for f in sorted((out_dir / "csv").glob("version_*/metrics.csv"))])
    rows = df.dropna(subset=[column])
    return rows.set_index("step")[column]


def test_resume_continues_at_the_same_step(tmp_path, cache_dir):
    common = [
        *TINY,
        "+reward.length={name: test_char_count, weight: 1.0}",
        "trainer.val_check_interval=null",
        "trainer.limit_val_batches=0",
        "callbacks.checkpoint.every_n_train_steps=2",
        "export_dir=null",
    ]
    full = compose_train([*common, "trainer.max_steps=3"], tmp_path / "full", cache_dir)
    run(full)
    part = compose_train([*common, "trainer.max_steps=2"], tmp_path / "part", cache_dir)
    run(part)
    assert (tmp_path / "part" / "checkpoints" / "last.ckpt").exists()
    resumed = compose_train([*common, "trainer.max_steps=3", "ckpt_path=last"], tmp_path / "part", cache_dir)
    run(resumed)
    # The resumed step samples the same completions (RNG state), from the same batch (sampler state),
    # with the same weights and optimiser state: its loss, KL and completion lengths are the same.
    for column in ("train/loss", "train/kl", "train/completion_len", "train/advantage_std"):
        full, part = _logged(tmp_path / "full", column), _logged(tmp_path / "part", column)
        last = full.index.max()
        assert last in part.index, column
        assert part.loc[last] == pytest.approx(full.loc[last], rel=1e-4, abs=1e-9), column


def test_warmup_phases_run_and_export_a_loadable_model(tmp_path, cache_dir):
    overrides = [
        *[o for o in TINY if o != "warmup=none"],
        "warmup.vision_steps=2",
        "warmup.vision_batch_size=4",
        "warmup.max_steps=2",
        "warmup.min_steps=0",
        "warmup.eval_every=2",
        "data.val_subset=8",
        "trainer.fast_dev_run=true",
    ]
    results = run(compose_train(overrides, tmp_path, cache_dir))
    exported = list((cache_dir / "warmup").glob("*/warmup_history.json"))
    assert len(exported) == 1 and (exported[0].parent / "config.json").exists()
    assert results["warmup_final_val"]["step"] == 2  # the supervised phase stopped at max_steps
