"""Every experiment under conf/experiment/ trains: a `fast_dev_run` of the real composed config.

Experiments are discovered by globbing, so a new one is covered as soon as its file exists. Those on
the tiny model run on CPU with tiny overrides (no warm-up, small K, short answers, small batches).
The paper recipes (full Qwen2.5-VL checkpoints, DeepSpeed, bf16) run on CPU too, with only the
overrides a CPU forces: `model=tiny`, `strategy=single`, `trainer.precision=32`, and their data from
native-layout mirrors (`prresq.data.mirrors`) as `paths.data_dir`. On a CUDA machine they run as
written instead, given the weights and data under PRRESQ_ROOT (skipped, with the missing path,
otherwise). What each paper recipe alone exercises is pinned in tests/test_recipes_cpu.py. The whole
module is `slow`.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import compose_config
from omegaconf import DictConfig, OmegaConf

import prresq.train as train
from prresq.data.mirrors import generate_mirrors
from prresq.rewards.registry import reward_term_keys

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MAX_NEW_TOKENS = 8
K = 2
CPU_OVERRIDES = ["model=tiny", "strategy=single", "trainer.precision=32"]


def _compose(name: str, overrides: list[str] = (), **paths: Any) -> DictConfig:
    return compose_config("train", [f"experiment={name}", *overrides], **paths)


def gpu_reason(cfg: DictConfig) -> str | None:
    """Why a composed experiment cannot run on CPU (None: it can)."""
    reasons = []
    if cfg.model.get("tiny") is None:
        reasons.append("a full Qwen2.5-VL checkpoint (model.tiny is null)")
    if "deepspeed" in str(cfg.strategy.get("_target_", "")).lower():
        reasons.append("the DeepSpeed strategy")
    return " and ".join(reasons) or None


def _params() -> list[Any]:
    return [pytest.param(name, id=name) for name in EXPERIMENTS]


class FirstStep(L.Callback):
    """Remembers what the first training step saw: K, the step counter and the logged metrics."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        self.steps.append({"k": pl_module.k, "global_step": trainer.global_step, "metrics": metrics})


def _tiny_overrides(cfg: DictConfig) -> list[str]:
    """Overrides that make any experiment a seconds-long CPU step (only keys the experiment has)."""
    overrides = [
        "warmup=none",
        "eval_before_after=false",
        f"grpo.k={K}",
        f"grpo.max_new_tokens={MAX_NEW_TOKENS}",
        "grpo.micro_batch_size=null",
        "scoring.n=2",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "trainer.fast_dev_run=true",
        "trainer.max_time=null",
        "trainer.devices=1",
        "export_dir=null",
    ]
    synthetic = cfg.data.get("synthetic") or {}
    if "crops_per_photo" in synthetic:  # a smaller synthetic IQA set: faster to write, same code path
        overrides.append("data.synthetic.crops_per_photo=4")
    if cfg.get("schedule") is not None and cfg.schedule.get("enabled", False):
        overrides += [f"schedule.stage1.k={K + 1}", f"schedule.stage2.k={K}"]
    return overrides


def _expected_k(cfg: DictConfig, metrics: dict[str, float]) -> int:
    """K of the step: that of the logged stage under a two-stage schedule, grpo.k otherwise."""
    if cfg.get("schedule") is not None and cfg.schedule.get("enabled", False):
        assert "train/stage" in metrics, sorted(metrics)
        return int(cfg.schedule[f"stage{int(metrics['train/stage'])}"].k)
    return int(cfg.grpo.k)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (tiny model, synthetic sets, native-layout mirrors) shared by the CPU experiments."""
    return tmp_path_factory.mktemp("cache")


def _mirror(cache_dir: Path) -> Path:
    """Native-layout mirrors of the paper recipes' datasets (written once per module, cached)."""
    return generate_mirrors(cache_dir / "mirror", ["kadid10k", "spaq", "lsvq"])


@pytest.mark.parametrize("name", _params())
def test_experiment_fast_dev_run(name: str, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _compose(name)
    on_gpu = gpu_reason(base) is not None and torch.cuda.is_available()
    paper_recipe_on_cpu = gpu_reason(base) is not None and not on_gpu
    cpu = CPU_OVERRIDES if paper_recipe_on_cpu else []
    if on_gpu:  # real weights and data live under PRRESQ_ROOT; only the outputs go to tmp
        paths = {"root_dir": os.environ.get("PRRESQ_ROOT", str(CONF.parent))}
    else:
        data_dir = _mirror(cache_dir) if paper_recipe_on_cpu else cache_dir / "data"
        paths = {"root_dir": tmp_path, "cache_dir": cache_dir, "data_dir": data_dir}
    # the tiny model on CPU; preresq_vqa_lsvq names its IQA checkpoint here
    model_dir = cache_dir / "tiny-qwen2.5-vl" if paper_recipe_on_cpu else None
    overrides = [*cpu, *_tiny_overrides(_compose(name, cpu))]
    cfg = _compose(name, overrides, model_dir=model_dir, output_dir=tmp_path / "out", **paths)
    if on_gpu:
        if "deepspeed" in str(cfg.strategy.get("_target_", "")).lower() and not importlib.util.find_spec("deepspeed"):
            pytest.skip(f"experiment={name}: deepspeed is not installed (pip install -e .[gpu])")
        model_dir = Path(cfg.model.name_or_path)
        if not (model_dir / "config.json").exists():
            pytest.skip(f"experiment={name}: no model weights at {model_dir}")
        missing = [s.get("jsonl") or s.root for s in cfg.data.train if not Path(s.get("jsonl") or s.root).exists()]
        if missing:
            pytest.skip(f"experiment={name}: no training data at {missing}")

    probe = FirstStep()
    build_trainer = train.build_trainer

    def with_probe(c: DictConfig) -> L.Trainer:
        trainer = build_trainer(c)
        trainer.callbacks.append(probe)
        return trainer

    monkeypatch.setattr(train, "build_trainer", with_probe)
    results = train.run(cfg)

    assert results == {}, "fast_dev_run neither evaluates the test split nor exports"
    assert len(probe.steps) == 1, f"fast_dev_run takes exactly one training step, saw {len(probe.steps)}"
    step = probe.steps[0]
    assert step["global_step"] == 1
    metrics = step["metrics"]
    assert step["k"] == _expected_k(cfg, metrics)
    assert "train/loss" in metrics and math.isfinite(metrics["train/loss"]), sorted(metrics)
    assert 0 < metrics["train/completion_len"] <= MAX_NEW_TOKENS
    for term in reward_term_keys(OmegaConf.to_container(cfg.reward, resolve=True)):
        assert f"train/reward/{term}_mean" in metrics, (term, sorted(metrics))
