"""Start-up config checks on the real composed training config: no silent no-op run, no error deep in a step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import DictConfig

from prresq.config_checks import ConfigError, check_train_config
from prresq.train import run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(overrides: list[str], tmp_path: Path) -> DictConfig:
    return compose_config("train", overrides, root_dir=tmp_path, output_dir=tmp_path, cache_dir=tmp_path / "cache")


# On a machine without CUDA, the overrides a CPU forces (the README's CPU recipe commands).
CPU_ONLY = [] if torch.cuda.is_available() else ["strategy=single", "trainer.devices=1", "trainer.precision=32"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_passes(experiment, tmp_path, monkeypatch):
    """The checks reject no shipped experiment (their K, micro-batches and reward mixes are valid)."""
    monkeypatch.setenv("PRERESQ_IQA_CHECKPOINT", str(tmp_path / "iqa_export"))  # preresq_vqa_lsvq's start
    check_train_config(_compose([f"experiment={experiment}", *CPU_ONLY], tmp_path))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grpo.k=1"], r"grpo\.k=1: K < 2 .*advantage"),
        (["grpo.k=0"], r"grpo\.k=0: K < 2"),
        (
            ["reward.fidelity.weight=0", "reward.format.weight=0"],
            r"reward\.fidelity\.weight=0, reward\.format\.weight=0: all reward weights are 0",
        ),
        (
            ["grpo.k=3", "data.batch_size=4", "grpo.micro_batch_size=5"],
            r"grpo\.micro_batch_size=5: must divide B\*K .*4\*3 = 12",
        ),
        (
            ["grpo.k=3", "data.batch_size=4", "grpo.micro_batch_size=4"],
            r"grpo\.micro_batch_size=4: .*whole groups of grpo\.k=3",
        ),
        (["grpo.micro_batch_size=0"], r"grpo\.micro_batch_size=0: must be a positive integer"),
        (["grpo.num_iterations=0"], r"grpo\.num_iterations=0: must be an integer >= 1"),
        (["grpo.temperature=0"], r"grpo\.temperature=0(\.0)?: must be > 0"),
        (["grpo.top_p=1.5"], r"grpo\.top_p=1\.5: must be in \(0, 1\]"),
        (["optim.lr=0"], r"optim\.lr=0: must be > 0"),
        (["loss.beta=-0.1"], r"loss\.beta=-0\.1: must be a number >= 0"),
        (["lr_scheduler.decay=cosine"], r"lr_scheduler\.decay='cosine': expected one of \('linear', 'constant'\)"),
        (["~optim._target_"], r"optim: no _target_"),
        (["data.batch_size=0"], r"data\.batch_size=0: must be an integer >= 1"),
        (["scoring.score_low=5"], r"scoring\.score_low=5\.?0?, scoring\.score_high=5\.0: score_low must be below"),
        (["trainer.max_steps=0"], r"trainer\.max_steps=0: trains nothing"),
        (["data.val_subset=-5"], r"data\.val_subset=-5: must be an integer >= 1 .*no validation item"),
        (["data.val_subset=0"], r"data\.val_subset=0: must be an integer >= 1"),
        (["data.val_subset=2.5"], r"data\.val_subset=2\.5: must be an integer >= 1"),
        (["scoring.answer_rule=median"], r"scoring\.answer_rule='median': expected one of released, answer_first"),
        (
            ["experiment=preresq_iqa_kadid", "model=tiny", "strategy=single"],
            r"trainer\.devices=4: strategy=single trains in one process",
        ),
        (["experiment=tiny_preresq", "schedule=two_stage", "schedule.stage2.k=1"], r"schedule\.stage2\.k=1: K < 2"),
    ],
)
def test_a_config_that_cannot_train_names_the_key_and_reason(overrides, message, tmp_path):
    """Each bad setting fails at start-up with `<key>=<value>: <reason>`."""
    cfg = _compose(["experiment=tiny_synthetic", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_train_config(cfg)


def test_every_problem_is_listed_at_once(tmp_path):
    """Two bad keys give one error that lists both."""
    cfg = _compose(["grpo.k=1", "optim.lr=0"], tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)grpo\.k=1.*optim\.lr=0"):
        check_train_config(cfg)


def test_train_stops_before_building_anything(tmp_path):
    """`run` refuses K = 1 before writing the tiny model or the data cache (nothing under cache_dir)."""
    cfg = _compose(["experiment=tiny_synthetic", "grpo.k=1", "warmup=none"], tmp_path)
    with pytest.raises(ConfigError, match="grpo.k=1"):
        run(cfg)
    assert not (tmp_path / "cache").exists()


def test_command_line_exits_nonzero_with_the_message(tmp_path):
    """`python -m prresq.train grpo.k=1 reward...weight=0` exits 1 (it exited 0 after logging zero loss)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "prresq.train",
            "experiment=tiny_synthetic",
            "grpo.k=1",
            "reward.fidelity.weight=0",
            "reward.format.weight=0",
            f"hydra.run.dir={tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert "grpo.k=1: K < 2" in out.stderr and "all reward weights are 0" in out.stderr
    assert not (tmp_path / "cache").exists()


def test_a_micro_batch_larger_than_the_batch_is_one_micro_batch(tmp_path):
    """Pins: `grpo.micro_batch_size` >= B*K means one micro-batch of the whole batch (the paper recipe's 12 at
    the smaller B and K of a CPU run), not an error; below B*K it must still divide it."""
    cfg = _compose(["experiment=tiny_synthetic", "grpo.k=3", "data.batch_size=2", "grpo.micro_batch_size=12"], tmp_path)
    check_train_config(cfg)
    cfg = _compose(["experiment=tiny_synthetic", "grpo.k=3", "data.batch_size=4", "grpo.micro_batch_size=9"], tmp_path)
    with pytest.raises(ConfigError, match=r"grpo\.micro_batch_size=9: must divide B\*K"):
        check_train_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["reward.fidelity.variant=probavg"], r"reward\.fidelity\.variant='probavg': expected one of mean, prob_avg"),
        (
            ["reward=[preresq_iqa,preresq_format]", "reward.pairwise_score_rank.variant=fixed"],
            r"reward\.pairwise_score_rank\.variant='fixed': expected one of released, corrected",
        ),
        (
            ["+reward.extra={name: fidelty}"],
            r"reward\.extra\.name='fidelty': no such reward; registered rewards: .*fidelity",
        ),
        (["+reward.fidelity.alpha=1"], r"reward\.fidelity \(reward 'fidelity'\): .*alpha"),
        (["reward.scope=world"], r"reward\.scope='world': expected one of local, global"),
        (["loss.aggregation=tokens"], r"loss\.aggregation='tokens': expected one of sequence, token, constant"),
        (["scoring.mode=mean"], r"scoring\.mode='mean': expected one of greedy, sample, both, expected"),
        (["data.on_bad_sample=ignore"], r"data\.on_bad_sample='ignore': expected one of raise, skip"),
        (["model.attn_implementation=flash"], r"model\.attn_implementation='flash': expected one of sdpa"),
    ],
)
def test_enum_like_options_are_checked_at_start_up(overrides, message, tmp_path):
    """Pins: a misspelt choice stops `run` at start-up, naming the key and the accepted values, before any data
    or model is written (it failed at the first training step, after data, model and the warm-up)."""
    cfg = _compose(["experiment=tiny_synthetic", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA refuses")
def test_gpu_only_settings_are_refused_on_a_cpu(tmp_path):
    cfg = _compose(["experiment=tiny_synthetic", "strategy=deepspeed_zero2", "trainer.precision=16-mixed"], tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)DeepSpeed needs CUDA GPUs.*trainer\.precision=16-mixed: 16-bit"):
        check_train_config(cfg)


def test_preresq_vqa_lsvq_without_its_iqa_checkpoint_refuses_to_start(tmp_path, monkeypatch):
    """Pins: without PRERESQ_IQA_CHECKPOINT the VQA recipe stops at start-up saying how to set it; it wrote a random
    tiny model into checkpoints/PreResIQA-R1 (named like the released checkpoint), which a later run would load."""
    monkeypatch.delenv("PRERESQ_IQA_CHECKPOINT", raising=False)
    cfg = _compose(
        ["experiment=preresq_vqa_lsvq", "model=tiny", "strategy=single", "trainer.devices=1", "trainer.precision=32"],
        tmp_path,
    )
    with pytest.raises(ConfigError, match=r"PRERESQ_IQA_CHECKPOINT=outputs/preresq_iqa_kadid/<date>_<time>/export"):
        run(cfg)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "cache").exists()
