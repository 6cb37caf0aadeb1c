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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from prresq.checkpointing import LocalCheckpointIO
from prresq.config import to_plain
from prresq.config_checks import check_train_config
from prresq.models import ensure_model_dir, load_policy, load_processor
from prresq.module import GRPOModule
from prresq.run_dir import claim_run_dir, is_global_rank_zero, is_resume
from prresq.scoring import ScoringConfig, correlations, score_loader

log = logging.getLogger("prresq.train")


def build_datamodule(cfg: DictConfig, processor: Any) -> Any:
    """Instantiate the `data` group, generate its synthetic set when it declares one, attach processor + flow."""
    dm = instantiate(cfg.data, _recursive_=False)
    dm.prepare_data()
    flow = instantiate(cfg.dataflow)
    dm.attach(processor=processor, prompt=cfg.prompt, flow=flow)
    return dm


def build_strategy(cfg: DictConfig) -> Any:
    strategy = cfg.strategy
    return instantiate(strategy) if "_target_" in strategy else strategy.get("name", "auto")


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    schedule = cfg.get("schedule")
    if schedule is not None and schedule.get("enabled", False):
        spec = to_plain(schedule)
        spec.pop("enabled")
        callbacks.append(instantiate(spec))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    strategy = build_strategy(cfg)
    # Checkpoint files are written beside their target and read with weights_only=True (prresq.checkpointing).
    plugins = [] if type(strategy).__name__.startswith("DeepSpeed") else [LocalCheckpointIO()]
    return instantiate(cfg.trainer, strategy=strategy, callbacks=callbacks, logger=loggers or False, plugins=plugins)


def scoring_config(cfg: DictConfig) -> ScoringConfig:
    return ScoringConfig(**{**to_plain(cfg.scoring), "num_aspects": int(cfg.prompt.num_aspects)})


def run_warmup(cfg: DictConfig, model_dir: Path) -> Path:
    """Supervised prior-knowledge warm-up (cached by digest); returns the directory RL starts from."""
    from prresq.warmup import cached_warmup_dir, is_complete, pretrain_vision, save_warmup, supervised_warmup

    w = to_plain(cfg.warmup)
    spec = {
        "model": str(model_dir),
        "model_marker": (model_dir / "config.json").read_text(),
        "warmup": w,
        "prompt": to_plain(cfg.prompt),
        "data": to_plain(cfg.data),
        "seed": cfg.seed,
    }
    out = cached_warmup_dir(Path(cfg.paths.cache_dir) / "warmup", spec)
    if is_complete(out):
        log.info("warm-up: reusing %s", out)
        return out
    L.seed_everything(cfg.seed, workers=True)
    processor = load_processor(model_dir, cfg.data.get("min_pixels"), cfg.data.get("max_pixels"))
    model = load_policy(model_dir, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation)
    dm = build_datamodule(cfg, processor)
    template = str(w["answer_template"])
    vision_steps = int(w.get("vision_steps", 0) or 0)
    if vision_steps:
        loader = dm.prior_dataloader(batch_size=w.get("vision_batch_size"))
        pretrain_vision(model, loader, steps=vision_steps, lr=float(w.get("vision_lr") or w["lr"]))
    history = supervised_warmup(
        model,
        processor,
        dm.prior_dataloader(answer_fn=lambda rec: template.format(mos=rec.mos_mapped)),
        dm.val_dataloader(),
        scoring_config(cfg),
        lr=float(w["lr"]),
        max_steps=int(w["max_steps"]),
        target_srcc=float(w["target_srcc"]),
        eval_every=int(w["eval_every"]),
        min_steps=int(w.get("min_steps", 0)),
        vision_lr=w.get("vision_lr"),
    )
    save_warmup(model, processor, out, history, spec)
    return out


def evaluate(
    module: GRPOModule, loader: Any, scoring: ScoringConfig, desc: str, save_dir: Path | None = None
) -> dict[str, float]:
    """Held-out correlations; with `save_dir`, also `predictions_test.csv` + `results.csv` (CONTRACTS.md).

    The policy is scored in eval mode and handed back in the mode it came in: Lightning keeps the modes it
    finds at the start of fit, so a policy left in eval mode would train without dropout and without
    gradient checkpointing (transformers checkpoints only in train mode).
    """
    was_training = module.policy.training
    module.policy.eval()
    try:
        scored = score_loader(module.policy, module.processor, loader, scoring, progress=desc)
    finally:
        module.policy.train(was_training)
    metrics = correlations(scored)
    if save_dir is not None:
        import pandas as pd

        save_dir.mkdir(parents=True, exist_ok=True)
        cols = {
            k: scored[k].double().numpy() for k in ("mos", "pred", "greedy", "sample_mean") if scored[k] is not None
        }
        pd.DataFrame({"id": scored["ids"], "media": scored["media"], **cols, "text": scored["texts"]}).to_csv(
            save_dir / "predictions_test.csv", index=False
        )
        pd.DataFrame([{"benchmark": "test", "n": len(scored["ids"] or []), **metrics}]).to_csv(
            save_dir / "results.csv", index=False
        )
    return metrics


def resolve_ckpt(cfg: DictConfig) -> str | None:
    """`ckpt_path=last`: the newest `last*.ckpt` of this run directory (`last-vN.ckpt` of older layouts too)."""
    ckpt = cfg.get("ckpt_path")
    if ckpt == "last":
        folder = Path(cfg.paths.output_dir) / "checkpoints"
        candidates = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if not candidates:
            log.warning("ckpt_path=last: no %s yet, starting from scratch", folder / "last.ckpt")
            return None
        if len(candidates) > 1:
            log.warning("ckpt_path=last: %s; resuming the newest, %s", [p.name for p in candidates], candidates[-1])
        return str(candidates[-1])
    return ckpt


def run(cfg: DictConfig) -> dict[str, Any]:
    """Everything `python -m prresq.train` does; returns the before/after held-out metrics.

    The config is checked first (`prresq.config_checks`), then the run directory is claimed
    (`prresq.run_dir`: one run per directory, resume or `overwrite_run_dir=true` into a used one).
    """
    check_train_config(cfg)
    check_optimized_metric(cfg)
    out_dir = Path(cfg.paths.output_dir)
    claim = None
    if is_global_rank_zero():
        claim = claim_run_dir(out_dir, is_resume(cfg.get("ckpt_path"), out_dir), bool(cfg.get("overwrite_run_dir")))
    try:
        return _train(cfg)
    finally:
        if claim is not None:
            claim.release()


def _train(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    L.seed_everything(cfg.seed, workers=True)
    model_dir = ensure_model_dir(cfg.model.name_or_path, to_plain(cfg.model.get("tiny")))
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
    )
    dm = build_datamodule(cfg, module.processor)
    trainer = build_trainer(cfg)
    scoring = scoring_config(cfg)
    ckpt = resolve_ckpt(cfg)
    do_eval = cfg.get("eval_before_after", False) and not cfg.trainer.get("fast_dev_run")
    if do_eval and ckpt is None and trainer.is_global_zero:
        dm.setup("test")
        out = Path(cfg.paths.output_dir) / "eval" / "before"
        results["before"] = evaluate(module, dm.test_dataloader(), scoring, "test split (before RL)", out)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    if do_eval and trainer.is_global_zero:
        dm.setup("test")
        out = Path(cfg.paths.output_dir) / "eval" / "after"
        results["after"] = evaluate(module, dm.test_dataloader(), scoring, "test split (after RL)", out)
    export = cfg.get("export_dir")
    if export and trainer.is_global_zero and not cfg.trainer.get("fast_dev_run"):
        module.export(str(export))
        results["export_dir"] = str(export)
    if trainer.is_global_zero and results:
        _report(results, Path(cfg.paths.output_dir))
    return results


def _report(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "heldout_metrics.json").write_text(json.dumps(results, indent=2))
    if "before" in results and "after" in results:
        keys = [k for k in results["after"] if k.startswith(("srcc", "plcc"))]
        lines = ["| held-out test | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for when in ("before", "after"):
            lines.append(
                f"| {when} RL | " + " | ".join(f"{results[when].get(k, float('nan')):.3f}" for k in keys) + " |"
            )
        table = "\n".join(lines)
        print(table, flush=True)
        (out_dir / "heldout_metrics.md").write_text(table + "\n")


def _metric_sources(cfg: DictConfig) -> dict[str, str | None]:
    """Result keys of `run` that can hold `optimized_metric`: None when this config fills it, else why not."""
    scored = cfg.get("eval_before_after", False) and not cfg.trainer.get("fast_dev_run")
    held_out = None if scored else "needs eval_before_after=true and no trainer.fast_dev_run"
    before = held_out or (None if cfg.get("ckpt_path") is None else "is not scored on resume (ckpt_path is set)")
    warmup = None if cfg.warmup.get("enabled", False) else "needs the warm-up (warmup.enabled)"
    return {"before": before, "after": held_out, "warmup_final_val": warmup}


def check_optimized_metric(cfg: DictConfig) -> None:
    """Refuse, before training, an `optimized_metric` this run will not produce."""
    name = cfg.get("optimized_metric")
    if name is None:
        return
    root = str(name).split(".")[0]
    sources = _metric_sources(cfg)
    if root not in sources or "." not in str(name):
        raise ValueError(
            f"optimized_metric={name!r}: expected <result>.<metric> with <result> one of {sorted(sources)}, "
            "e.g. after.srcc_mean"
        )
    if sources[root] is not None:
        raise ValueError(f"optimized_metric={name!r}: the {root!r} result {sources[root]}")


def optimized_metric(results: Mapping[str, Any], name: str | None) -> float | None:
    """The value named by `optimized_metric` (a dotted path into `run`'s results, e.g. `after.srcc_mean`).

    None when `name` is None, or on a process that computed no results (not global rank zero).
    """
    if name is None or (not results and not is_global_rank_zero()):
        return None
    node: Any = results
    for part in str(name).split("."):
        if not isinstance(node, Mapping) or part not in node:
            known = sorted(node) if isinstance(node, Mapping) else []
            raise KeyError(f"optimized_metric={name!r}: no {part!r} in this run's results (there: {known})")
        node = node[part]
    return float(node)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; return the `optimized_metric` value (None when unset) so Hydra sweepers can optimise it."""
    torch.set_float32_matmul_precision("high")
    return optimized_metric(run(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
