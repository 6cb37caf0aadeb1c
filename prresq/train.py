"""Training entry point: `python -m prresq.train [experiment=...] [overrides...]` (Hydra).

    python -m prresq.train experiment=tiny_synthetic          # the embedded default (CPU, minutes)
    python -m prresq.train experiment=vq_r1_kadid             # VisualQuality-R1 on KADID-10K (GPU cluster)
    python -m prresq.train experiment=tiny_synthetic grpo.k=4 reward.fidelity.variant=prob_avg
    python -m prresq.train ... ckpt_path=last hydra.run.dir=outputs/my_run   # resume a killed run

Order of work: prepare data (synthetic sets are generated and cached) -> model directory (the tiny
model is written and cached) -> optional supervised warm-up (cached) -> held-out scores before ->
GRPO training (Lightning) -> held-out scores after -> `save_pretrained` export.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, open_dict

from prresq.builders import build_datamodule, scoring_config
from prresq.checkpointing import LocalCheckpointIO, resolve_ckpt
from prresq.config import to_plain
from prresq.config_checks import check_train_config
from prresq.export_dir import check_export_target
from prresq.heldout import evaluate, heldout_table, report, rl_extent
from prresq.models import ensure_model_dir
from prresq.module import GRPOModule
from prresq.optimized_metric import check_optimized_metric, optimized_metric
from prresq.preemption import resume_ckpt_path
from prresq.resume_config import RUN_CONFIG, ResumeChanges, check_resume_config, save_run_config
from prresq.run_dir import claim_run_dir, is_global_rank_zero, is_resume
from prresq.run_record import build_run_record
from prresq.warmup import run_warmup

log = logging.getLogger("prresq.train")


def build_strategy(cfg: DictConfig) -> Any:
    strategy = cfg.strategy
    return instantiate(strategy) if "_target_" in strategy else strategy.get("name", "auto")


def progress_bar_enabled(setting: bool | None) -> bool:
    """`trainer.enable_progress_bar`; null (the default) is on, except in a SLURM batch job without a terminal,
    whose log file would fill with carriage-return redraws."""
    if setting is None:
        return not (os.environ.get("SLURM_JOB_ID") and not sys.stderr.isatty())
    return bool(setting)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    progress = progress_bar_enabled(cfg.trainer.get("enable_progress_bar"))
    if not progress:  # `trainer.enable_progress_bar=false` alone switches the bar off (Lightning refuses both)
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    schedule = cfg.get("schedule")
    if schedule is not None and schedule.get("enabled", False):
        spec = to_plain(schedule)
        spec.pop("enabled")
        callbacks.append(instantiate(spec))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    strategy = build_strategy(cfg)
    # Checkpoint files are written beside their target and read with weights_only=True (prresq.checkpointing).
    plugins: list[Any] = [] if type(strategy).__name__.startswith("DeepSpeed") else [LocalCheckpointIO()]
    if SLURMEnvironment.detect():
        # prresq.preemption saves and requeues at the signal; Lightning's own requeue would save mid-step
        plugins.append(SLURMEnvironment(auto_requeue=False))
    extra: dict[str, Any] = {"enable_progress_bar": progress}
    if "enable_checkpointing" not in cfg.trainer:
        # Without this, `callbacks.checkpoint=null` would get Lightning's default ModelCheckpoint instead of none.
        extra["enable_checkpointing"] = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return instantiate(
        cfg.trainer, strategy=strategy, callbacks=callbacks, logger=loggers or False, plugins=plugins, **extra
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Everything `python -m prresq.train` does; returns the before/after held-out metrics.

    The config is checked first (`prresq.config_checks`), then the run directory is claimed
    (`prresq.run_dir`: one run per directory, resume or `overwrite_run_dir=true` into a used one), and a
    resume's config is compared with the run's (`prresq.resume_config`; a fresh run saves its config).
    """
    check_train_config(cfg)
    check_optimized_metric(cfg)
    ckpt_path = resume_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)  # a requeued SLURM job resumes itself
    if ckpt_path != cfg.get("ckpt_path"):
        with open_dict(cfg):
            cfg.ckpt_path = ckpt_path
    out_dir = Path(cfg.paths.output_dir)
    claim = None
    if is_global_rank_zero():
        claim = claim_run_dir(out_dir, is_resume(cfg.get("ckpt_path"), out_dir), bool(cfg.get("overwrite_run_dir")))
        export = cfg.get("export_dir")
        print(f"run directory: {out_dir}" + (f" (the policy is exported to {export})" if export else ""), flush=True)
    try:
        if claim is not None and cfg.get("export_dir"):  # before training: a refused export would lose the run
            check_export_target(cfg.export_dir, bool(cfg.get("export_replace", True)))
        ckpt = resolve_ckpt(cfg.get("ckpt_path"), out_dir)
        changes = check_resume_config(cfg, ckpt) if ckpt is not None else []
        if claim is not None and (ckpt is None or not (out_dir / RUN_CONFIG).is_file()):
            save_run_config(cfg, out_dir)  # a fresh run, or one started from another run's checkpoint
        results = _train(cfg, ckpt, [ResumeChanges(changes, cfg, out_dir, ckpt)] if changes else [])
        if is_global_rank_zero():
            print(where_it_went(out_dir, results), flush=True)
        return results
    finally:
        if claim is not None:
            claim.release()


def _train(cfg: DictConfig, ckpt: str | None, extra_callbacks: list[L.Callback]) -> dict[str, Any]:
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    L.seed_everything(cfg.seed, workers=True)
    model_dir = ensure_model_dir(cfg.model.name_or_path, to_plain(cfg.model.get("tiny")), cfg.model.get("family"))
    results: dict[str, Any] = {}
    if cfg.warmup.get("enabled", False):
        model_dir = run_warmup(cfg, model_dir)
        history = json.loads((model_dir / "warmup_history.json").read_text())["history"]
        results["warmup_final_val"] = history[-1] if history else {}
    L.seed_everything(cfg.seed, workers=True)
    model_cfg = {**to_plain(cfg.model), "name_or_path": str(model_dir), "tiny": None}
    module = GRPOModule(
        model=model_cfg,
        grpo=to_plain(cfg.grpo),
        loss=to_plain(cfg.loss),
        reward=to_plain(cfg.reward),
        optim=to_plain(cfg.optim),
        lr_scheduler=to_plain(cfg.lr_scheduler),
        scoring=to_plain(cfg.scoring),
        num_aspects=int(cfg.prompt.num_aspects),
        score_range=(float(cfg.scoring.score_low), float(cfg.scoring.score_high)),
        min_pixels=cfg.data.get("min_pixels"),
        max_pixels=cfg.data.get("max_pixels"),
        run_record=build_run_record(cfg),
    )
    dm = build_datamodule(cfg, module.processor)
    trainer = build_trainer(cfg)
    trainer.callbacks.extend(extra_callbacks)  # a resume's accepted changes (prresq.resume_config.ResumeChanges)
    scoring = scoring_config(cfg)
    do_eval = cfg.get("eval_before_after", False) and not cfg.trainer.get("fast_dev_run")
    if do_eval and ckpt is None and trainer.is_global_zero:
        dm.setup("test")
        out = Path(cfg.paths.output_dir) / "eval" / "before"
        results["before"] = evaluate(module, dm.test_dataloader(), scoring, "test split (before RL)", out, cfg.seed)
        print(heldout_table(results, ("before",)), flush=True)
    expect_frozen_reference(module)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    if not cfg.trainer.get("fast_dev_run"):
        results["rl"] = rl_extent(trainer)
        if results["rl"]["cut_by_max_time"]:
            log.warning(
                "trainer.max_time (%s) stopped RL at step %d of trainer.max_steps=%d: the held-out table after RL "
                "is not the step count's (it says so in its 'RL steps' column)",
                cfg.trainer.get("max_time"),
                results["rl"]["steps"],
                results["rl"]["max_steps"],
            )
    if do_eval and trainer.is_global_zero:
        dm.setup("test")
        out = Path(cfg.paths.output_dir) / "eval" / "after"
        results["after"] = evaluate(module, dm.test_dataloader(), scoring, "test split (after RL)", out, cfg.seed)
    export = cfg.get("export_dir")
    if export and trainer.is_global_zero and not cfg.trainer.get("fast_dev_run"):
        module.export(str(export), replace=bool(cfg.get("export_replace", True)))
        results["export_dir"] = str(export)
    if trainer.is_global_zero and results:
        report(results, Path(cfg.paths.output_dir))
    return results


def expect_frozen_reference(module: GRPOModule) -> None:
    """Say once that the frozen KL reference is in eval mode by design, and silence Lightning's warning about it.

    Lightning warns "Found N module(s) in eval mode at the start of training"; with beta > 0 those are the
    reference's modules (Eq. 6 needs it frozen). When any other module is in eval mode the warning stays.
    """
    reference = getattr(module, "reference", None)
    if reference is None:
        return
    in_eval = [m for m in module.modules() if not m.training]
    ref_modules = {id(m) for m in reference.modules()}
    if in_eval and all(id(m) in ref_modules for m in in_eval):
        log.info("the frozen KL reference (%d modules) is in eval mode by design", len(in_eval))
        warnings.filterwarnings("ignore", message=rf"Found {len(in_eval)} module\(s\) in eval mode at the start")


def where_it_went(out_dir: Path, results: dict[str, Any]) -> str:
    """The closing lines of a training: the run directory, the export and how to score with it."""
    lines = [f"run directory: {out_dir}"]
    if (out_dir / "heldout_metrics.md").exists():
        lines.append(f"  held-out table: {out_dir / 'heldout_metrics.md'}")
    if (out_dir / "checkpoints" / "last.ckpt").exists():
        lines.append(f"  last checkpoint: {out_dir / 'checkpoints' / 'last.ckpt'}")
    if results.get("export_dir"):
        export = results["export_dir"]
        lines.append(f"  export: {export}")
        lines.append(f"  evaluate it: python -m prresq.eval checkpoint={export}")
        lines.append(f"  score files: python -m prresq.infer checkpoint={export} input=<folder or image>")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; return the `optimized_metric` value (None when unset) so Hydra sweepers can optimise it."""
    torch.set_float32_matmul_precision("high")
    return optimized_metric(run(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
