"""The real composed training config: fast_dev_run, a short run, and resume at the same step."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pandas as pd
import pytest
import torch
import yaml
from conftest import CONF, compose_config
from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from prresq.rewards import register_reward
from prresq.rewards.registry import reward_term_keys
from prresq.train import run


def compose_train(overrides: list[str], out_dir: Path, cache_dir: Path) -> DictConfig:
    return compose_config(
        "train", overrides, root_dir=out_dir, cache_dir=cache_dir, data_dir=cache_dir / "data", output_dir=out_dir
    )


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


class FitProbe(L.Callback):
    """Records what a fit did: batches run, optimiser steps, how far the policy moved, the logged metrics."""

    runs: ClassVar[list[dict[str, Any]]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.before = torch.cat([p.detach().reshape(-1).clone() for p in pl_module.policy.parameters()])
        self.train_batches = self.val_batches = 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.train_batches += 1

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.val_batches += 1

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        after = torch.cat([p.detach().reshape(-1) for p in pl_module.policy.parameters()])
        FitProbe.runs.append(
            dict(
                train_batches=self.train_batches,
                val_batches=self.val_batches,
                global_step=trainer.global_step,
                moved=float((after - self.before).abs().max()),
                metrics={k: float(v) for k, v in trainer.callback_metrics.items()},
            )
        )


def test_fast_dev_run_of_the_composed_config(tmp_path, cache_dir):
    """Pins: `trainer.fast_dev_run=true` on the composed tiny config runs exactly one training batch (one
    optimiser step that moves the policy) and one validation batch, logs a finite loss, every reward term
    of the composed mix and the validation SRCC, and runs no held-out evaluation or export."""
    FitProbe.runs.clear()
    overrides = [
        *TINY,
        "trainer.fast_dev_run=true",
        "+reward.length={name: test_char_count, weight: 1.0}",  # a reward a random model earns: non-zero update
        "+callbacks.probe={_target_: test_train.FitProbe}",
    ]
    cfg = compose_train(overrides, tmp_path, cache_dir)
    results = run(cfg)
    (probe,) = FitProbe.runs
    assert (probe["train_batches"], probe["val_batches"], probe["global_step"]) == (1, 1, 1)
    assert probe["moved"] > 0, "the optimiser step did not change the policy"
    metrics = probe["metrics"]
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["train/grad_norm"])
    assert metrics["train/grad_norm"] > 0
    for term in reward_term_keys(OmegaConf.to_container(cfg.reward)):
        assert f"train/reward/{term}_mean" in metrics, (term, sorted(metrics))
    assert "val/srcc" in metrics and "val/parse_fail_rate" in metrics
    assert not (tmp_path / "export").exists()
    assert "before" not in results and "after" not in results and "export_dir" not in results


def _logged(out_dir: Path, column: str) -> pd.Series:
    df = pd.concat([pd.read_csv(f) for f in sorted((out_dir / "csv").glob("version_*/metrics.csv"))])
    rows = df.dropna(subset=[column])
    return rows.set_index("step")[column]


def assert_last_step_logged_alike(full_dir: Path, part_dir: Path) -> None:
    """The last step of the uninterrupted run in `full_dir` logs the same loss, KL, lengths and advantage spread
    in the resumed run in `part_dir`."""
    for column in ("train/loss", "train/kl", "train/completion_len", "train/advantage_std"):
        full, part = _logged(full_dir, column), _logged(part_dir, column)
        last = full.index.max()
        assert last in part.index, column
        assert part.loc[last] == pytest.approx(full.loc[last], rel=1e-4, abs=1e-9), column


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
    assert_last_step_logged_alike(tmp_path / "full", tmp_path / "part")


def test_a_resume_that_extends_max_steps_steps_at_the_longer_schedules_learning_rate(tmp_path, cache_dir):
    """Pins: a run stopped at `max_steps=2` and resumed with `max_steps=4` takes its first resumed step at the
    LR of the 4-step schedule (linear decay, no warm-up: lr * (4 - 2) / 4), not at the 2-step schedule's
    last value (0) that the optimiser state was saved with."""
    lr = 1.0e-4
    common = [
        *TINY,
        "lr_scheduler.decay=linear",
        f"optim.lr={lr}",
        "trainer.val_check_interval=null",
        "trainer.limit_val_batches=0",
        "callbacks.checkpoint.every_n_train_steps=2",
        "export_dir=null",
    ]
    run(compose_train([*common, "trainer.max_steps=2"], tmp_path, cache_dir))
    run(compose_train([*common, "trainer.max_steps=4", "ckpt_path=last"], tmp_path, cache_dir))
    logged = _logged(tmp_path, "lr-AdamW")
    assert logged.loc[0] == pytest.approx(lr) and logged.loc[1] == pytest.approx(lr / 2)  # the 2-step schedule
    assert logged.loc[2] == pytest.approx(lr * 2 / 4) and logged.loc[3] == pytest.approx(lr * 1 / 4)


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


class ModeProbe(L.Callback):
    """Records whether the policy is in train mode at every training batch."""

    modes: ClassVar[list[bool]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        ModeProbe.modes.append(pl_module.policy.training)


def test_policy_trains_in_train_mode_after_the_held_out_score_before(tmp_path):
    """Pins: the held-out score before RL (`eval_before_after=true`) hands the policy back in train mode,
    so RL updates run with dropout and gradient checkpointing as configured (Lightning keeps the module
    modes it finds at the start of fit; a policy left in eval mode silently turns checkpointing off)."""
    ModeProbe.modes.clear()
    overrides = [
        *[o for o in TINY if o != "eval_before_after=false"],
        "eval_before_after=true",
        "data.synthetic.crops_per_photo=1",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=0",
        "export_dir=null",
        "+callbacks.probe={_target_: test_train.ModeProbe}",
    ]
    cfg = compose_train(overrides, tmp_path / "run", tmp_path / "cache")
    results = run(cfg)
    assert "before" in results and "after" in results
    assert ModeProbe.modes == [True, True]
    assert results["rl"] == {"steps": 2, "max_steps": 2, "cut_by_max_time": False}
    assert "| RL steps |" in (table := (tmp_path / "run" / "heldout_metrics.md").read_text())
    assert "| 2 of 2 |" in table and "cut by" not in table


class TrajectoryProbe(L.Callback):
    """Records the RL trajectory: the policy's trainable weights (a checksum) after every training batch."""

    sums: ClassVar[list[float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        params = [p.detach().double() for p in pl_module.policy.parameters() if p.requires_grad]
        TrajectoryProbe.sums.append(float(sum((p * p).sum() for p in params)))


def test_the_held_out_score_before_rl_does_not_change_rl(tmp_path):
    """Pins: RL's trajectory (the policy's weights after each of 2 updates, with sampled rollouts) is the same
    with and without `eval_before_after`: the seeded held-out scoring before RL leaves the random states RL
    starts from as they were (`prresq.row_sampling.global_rng_kept`)."""
    trajectories = []
    for flag in ("false", "true"):
        TrajectoryProbe.sums.clear()
        overrides = [
            *[o for o in TINY if o != "eval_before_after=false"],
            f"eval_before_after={flag}",
            "data.synthetic.crops_per_photo=1",
            "trainer.max_steps=2",
            "trainer.limit_val_batches=0",
            "export_dir=null",
            "+reward.length={name: test_char_count, weight: 1.0}",  # a reward a random model earns: updates move
            "+callbacks.probe={_target_: test_train.TrajectoryProbe}",
        ]
        results = run(compose_train(overrides, tmp_path / flag, tmp_path / "cache"))
        assert ("before" in results) == (flag == "true")
        trajectories.append(list(TrajectoryProbe.sums))
    assert len(trajectories[0]) == 2 and trajectories[0][0] != trajectories[0][1]  # the updates move the policy
    assert trajectories[0] == trajectories[1]


def test_a_run_cut_by_max_time_says_so_in_its_held_out_table(tmp_path):
    """Pins: `make train`'s table is the step count's; when the `trainer.max_time` safety net stops RL before
    `trainer.max_steps`, the table's RL-steps column says so (a loaded machine once printed another table with no
    word of the cut)."""
    overrides = [
        *[o for o in TINY if o not in ("eval_before_after=false", "trainer.max_time=null")],
        "eval_before_after=true",
        "data.synthetic.crops_per_photo=1",
        "trainer.max_steps=100000",
        "trainer.max_time=00:00:00:01",
        "trainer.limit_val_batches=0",
        "export_dir=null",
    ]
    results = run(compose_train(overrides, tmp_path / "run", tmp_path / "cache"))
    extent = results["rl"]
    assert extent["cut_by_max_time"] and 0 < extent["steps"] < 100000 and extent["max_steps"] == 100000
    table = (tmp_path / "run" / "heldout_metrics.md").read_text()
    assert f"| {extent['steps']} of 100000 (cut by trainer.max_time) |" in table
    assert json.loads((tmp_path / "run" / "heldout_metrics.json").read_text())["rl"] == extent


class JobReturnProbe(Callback):
    """A Hydra callback recording each job's return value, the value a Hydra sweeper optimises."""

    values: ClassVar[list[Any]] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **_: Any) -> None:
        JobReturnProbe.values.append(job_return.return_value)


def _hydra_multirun(monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> None:
    import sys

    from prresq.train import main

    GlobalHydra.instance().clear()
    # In-process, Hydra would look for `conf` as a Python package; `python -m prresq.train` finds it by path.
    monkeypatch.setattr(sys, "argv", ["prresq.train", f"--config-path={CONF}", "--multirun", *overrides])
    try:
        main()
    finally:
        GlobalHydra.instance().clear()


def test_hydra_main_returns_the_optimized_metric(tmp_path, cache_dir, monkeypatch):
    """Pins: `python -m prresq.train --multirun optimized_metric=after.<metric>` hands that held-out metric after
    RL (the value `run` writes to heldout_metrics.json) to Hydra as the job's return value, which is what a
    sweeper optimises; a metric this config cannot produce is refused before training. (The random tiny model
    parses few answers, so its SRCC may be NaN; the failure rate is always a number.)"""
    JobReturnProbe.values.clear()
    common = [
        *[o for o in TINY if o != "eval_before_after=false"],
        "data.synthetic.crops_per_photo=1",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=0",
        "export_dir=null",
        f"paths.root_dir={tmp_path}",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={cache_dir / 'data'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "hydra.sweep.subdir=job0",
        "+hydra.callbacks.job_return={_target_: test_train.JobReturnProbe}",
    ]
    _hydra_multirun(monkeypatch, [*common, "eval_before_after=true", "optimized_metric=after.fail_mean"])
    saved = json.loads((tmp_path / "multirun" / "job0" / "heldout_metrics.json").read_text())
    (value,) = JobReturnProbe.values
    assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert value == saved["after"]["fail_mean"]
    with pytest.raises(ValueError, match="optimized_metric='after.srcc_mean'.*eval_before_after"):
        run(compose_train([*TINY, "optimized_metric=after.srcc_mean"], tmp_path / "refused", cache_dir))
    assert not (tmp_path / "refused" / "checkpoints").exists()


@pytest.mark.slow
def test_plain_command_line_multirun_writes_one_job_per_value(tmp_path, cache_dir):
    """Pins: the README's `python -m prresq.train -m ... grpo.k=2,3`, typed in a folder with no PRRESQ_ROOT and no
    `hydra.sweep.dir`, launches both jobs under `<cwd>/multirun/train/<time>/`. The basic sweeper resolves
    `hydra.sweep.dir` before Hydra sets its runtime config, so a `paths.root_dir` falling back to
    `${hydra:runtime.cwd}` failed with "HydraConfig was not set" and ran nothing."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PRRESQ_ROOT"}
    env["PYTHONPATH"] = str(CONF.parent)
    cmd = [sys.executable, "-m", "prresq.train", "-m", *[o for o in TINY if not o.startswith("grpo.k=")]]
    cmd += ["trainer.fast_dev_run=true", "grpo.k=2,3"]
    cmd += ["data.synthetic.crops_per_photo=1", f"paths.cache_dir={cache_dir}", f"paths.data_dir={cache_dir / 'data'}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [j for j in jobs if "grpo.k=2" in j] and [j for j in jobs if "grpo.k=3" in j], jobs
    assert len(jobs) == 2


def test_no_checkpoint_callback_means_no_checkpoint_files(tmp_path, cache_dir):
    """Pins: `callbacks.checkpoint=null` (the ablation study's setting) writes no checkpoint at all. Lightning adds
    its own ModelCheckpoint when none is given, which wrote a 19 MB `.ckpt` per run into the log folder."""
    from prresq.train import build_trainer

    overrides = [*TINY, "trainer.max_steps=2", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    overrides += ["trainer.val_check_interval=1", "export_dir=null"]  # Lightning's default saves after validation
    run(compose_train([*overrides, "callbacks.checkpoint=null"], tmp_path / "none", cache_dir))
    assert not list((tmp_path / "none").rglob("*.ckpt"))
    assert build_trainer(compose_train(overrides, tmp_path / "default", cache_dir)).checkpoint_callbacks


class LrProbe(L.Callback):
    """Records the learning rate the optimiser steps with at every training batch."""

    lrs: ClassVar[list[float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        LrProbe.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_resume_with_a_changed_config_stops_or_applies_and_records_the_changes(tmp_path, cache_dir):
    """Pins (issue 25 item 2): `ckpt_path=last grpo.k=2 optim.lr=0.5` stopped nothing: K changed mid-run and the
    restored optimiser kept the old lr (1e-4) while the logs recorded 0.5. Now the resume stops listing both
    keys (before any training step), a changed step limit or validation cadence passes, and
    `resume_with_changes=true` trains the resumed step at the new lr (the lr a run started at 0.5 has at that
    step) and records the changes in the run directory."""
    from prresq.resume_config import RESUME_CHANGES, RUN_CONFIG, ResumeConfigError

    common = [*TINY, "+reward.length={name: test_char_count, weight: 1.0}", "trainer.val_check_interval=null"]
    common += ["trainer.limit_val_batches=0", "callbacks.checkpoint.every_n_train_steps=1", "export_dir=null"]
    common += [
        "lr_scheduler.decay=linear",
        "lr_scheduler.warmup_ratio=0.0",
        "+callbacks.probe={_target_: test_train.LrProbe}",
    ]
    run_dir = tmp_path / "run"
    run(compose_train([*common, "trainer.max_steps=2", "optim.lr=1e-4"], run_dir, cache_dir))
    assert (run_dir / RUN_CONFIG).is_file()
    last = run_dir / "checkpoints" / "last.ckpt"
    stamp = last.stat().st_mtime_ns

    changed = [*common, "trainer.max_steps=3", "ckpt_path=last", "grpo.k=2", "optim.lr=0.5"]
    LrProbe.lrs.clear()
    with pytest.raises(ResumeConfigError) as refused:
        run(compose_train(changed, run_dir, cache_dir))
    message = str(refused.value)
    assert "grpo.k: 3 -> 2" in message and "optim.lr: 0.0001 -> 0.5" in message, message
    assert "trainer.max_steps" not in message and "resume_with_changes=true" in message
    assert LrProbe.lrs == [] and last.stat().st_mtime_ns == stamp  # nothing trained, nothing written

    LrProbe.lrs.clear()
    run(compose_train([*common, "trainer.max_steps=3", "optim.lr=0.5"], tmp_path / "fresh", cache_dir))
    want = LrProbe.lrs[2]  # the lr of step 3 of a run started at lr 0.5 (linear decay over 3 steps)
    LrProbe.lrs.clear()
    run(compose_train([*changed, "resume_with_changes=true"], run_dir, cache_dir))
    assert LrProbe.lrs == [pytest.approx(want, rel=1e-9)] and want > 0.1
    (entry,) = yaml.safe_load((run_dir / RESUME_CHANGES).read_text())
    assert {c["key"]: (c["old"], c["new"]) for c in entry["changes"]} == {"grpo.k": (3, 2), "optim.lr": (1e-4, 0.5)}
    saved = yaml.safe_load((run_dir / RUN_CONFIG).read_text())
    assert saved["grpo"]["k"] == 2 and saved["optim"]["lr"] == 0.5
