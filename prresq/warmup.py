"""Supervised "prior knowledge" warm-up: teach a base model the answer format and some quality sense.

The papers start RL from Qwen2.5-VL-7B, whose vision tower was pretrained and which already rates
quality (zero-shot SRCC ~0.7). A tiny random model sees nothing, and the fidelity reward alone
cannot create vision features in CPU-minutes (it even rewards a blind model for a constant
score). So the embedded pipeline mirrors the papers' setting on a **separate** set of photos
(the `prior` split, never used by RL nor for testing), in two short phases:

(a) vision pretraining (`pretrain_vision`), the stand-in for a pretrained ViT: the vision tower
    plus a throw-away linear head regress MOS from mean-pooled image tokens (measured: through the
    language model alone, the random tower learned nothing in 3000 steps; this way it sees noise
    level after a few hundred);
(b) supervised answers (`supervised_warmup`): cross-entropy on `<think>..</think><answer>..
    </answer>`, teaching the format and mapping what the tower sees to a score; it stops once
    validation SRCC reaches a target (`warmup.target_srcc`: 0.5 in `conf/warmup/prior_sft.yaml`; 0.7 in
    `prior_sft_long`, `tiny_synthetic`'s, which left RL room to gain +0.140 over 3 folds x 2 seeds and ended
    higher than 0.5 did: experiments/results/ablations).

The result is exported with `save_pretrained` and cached by a digest of everything that determines it
(`run_warmup`, `<paths.cache_dir>/warmup/<digest>`). Phase (a) alone is cached too
(`<paths.cache_dir>/warmup_vision/<digest>/vision.pt`), by a digest of only what determines it: the
model directory, dtype and attention, the vision settings, the `prior` split's data (not the fold nor
the prompt) and the seed. It holds the vision tower's weights and the random generators' states at the
end of phase (a); a warm-up that finds it loads both, so its phase (b), and so its result, is the one
it would have computed (bit for bit). Warm-ups that differ only in fold or prompt (the ablation study's
12 = 3 folds x 2 seeds x 2 answer formats) train the vision tower once per seed.

Run by `python -m prresq.train` when `warmup.enabled=true` (the `tiny_synthetic` experiment).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from prresq.builders import build_datamodule, scoring_config
from prresq.checkpoint_loading import load_checkpoint_file
from prresq.config import to_plain
from prresq.file_lock import file_lock
from prresq.models import load_policy, load_processor
from prresq.models.families import family_of
from prresq.rng_states import capture_rng_states, restore_rng_states
from prresq.scoring import ScoringConfig, correlations, score_loader

log = logging.getLogger(__name__)


def warmup_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_vision(model: nn.Module, loader: Any, steps: int = 300, lr: float = 3e-4) -> list[float]:
    """Phase (a): vision tower + linear head regress MOS (MSE) from mean-pooled image tokens."""
    from tqdm.auto import tqdm

    family = family_of(model)
    visual = family.vision_module(model)
    head = nn.Linear(int(model.config.get_text_config().hidden_size), 1)
    opt = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=lr)
    losses: list[float] = []
    bar = tqdm(total=steps, desc="warm-up (vision)")
    while len(losses) < steps:
        for batch in loader:
            pooled = family.pooled_image_features(model, batch["model_inputs"])  # one row per image
            loss = torch.nn.functional.mse_loss(head(pooled).squeeze(-1), batch["mos"].float())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(mse=f"{losses[-1]:.3f}")
            if len(losses) >= steps:
                break
    bar.close()
    return losses


def supervised_warmup(
    model: nn.Module,
    processor: Any,
    train_loader: Any,
    val_loader: Any,
    scoring: ScoringConfig,
    lr: float = 1e-3,
    max_steps: int = 400,
    target_srcc: float = 0.5,
    eval_every: int = 25,
    min_steps: int = 0,
    max_grad_norm: float = 1.0,
    vision_lr: float | None = None,
) -> list[dict[str, float]]:
    """Cross-entropy on answer tokens until val SRCC (N-sample mean) >= target_srcc or max_steps."""
    from tqdm.auto import tqdm

    family = family_of(model)
    vision = [p for n, p in model.named_parameters() if p.requires_grad and family.is_vision_parameter(n)]
    ids = {id(p) for p in vision}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": rest, "lr": lr}, {"params": vision, "lr": vision_lr or lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]])
    history: list[dict[str, float]] = []
    step, start = 0, time.time()
    bar = tqdm(total=max_steps, desc="warm-up (supervised)")
    done = False
    while not done:
        for batch in train_loader:
            model.train()
            out = model(**batch["model_inputs"], use_cache=False)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            batch_size = len(batch["mos"])
            bar.update(1)
            bar.set_postfix(loss=f"{out.loss.item():.3f}")
            if step % eval_every == 0 or step >= max_steps:
                model.eval()
                corr = correlations(score_loader(model, processor, val_loader, scoring))
                record = {
                    "step": step,
                    "loss": float(out.loss.detach()),
                    "seconds": time.time() - start,
                    "batch_size": batch_size,
                    **corr,
                }
                history.append(record)
                bar.write(
                    f"warm-up step {step}: loss {record['loss']:.3f}  val SRCC mean-of-{scoring.n} "
                    f"{corr.get('srcc_mean', float('nan')):.3f}  greedy {corr.get('srcc_greedy', float('nan')):.3f}"
                )
                reached = corr.get("srcc_mean", corr.get("srcc_greedy", -1.0)) >= target_srcc
                if (reached and step >= min_steps) or step >= max_steps:
                    done = True
                    break
    bar.close()
    return history


ON_TARGET_MISSED = ("warn", "stop")


class WarmupTargetMissed(RuntimeError):
    """The supervised warm-up ended below `warmup.target_srcc` and `warmup.on_target_missed=stop`."""


def check_target(history: list[dict[str, float]], target: float, on_missed: str, where: Path) -> bool:
    """Whether the warm-up's last validation SRCC reached `target`; if not, a loud warning or (`stop`) an error.

    A prior that cannot rate images leaves RL a policy that scores at random (with `data.batch_size=4` the
    supervised phase once ran all its steps and ended at SRCC -0.007), so this is never silent.
    """
    last = history[-1] if history else {}
    srcc = last.get("srcc_mean", last.get("srcc_greedy", float("nan")))
    if srcc >= target:
        return True
    message = (
        f"warm-up did not reach its target: validation SRCC {srcc:.3f} < warmup.target_srcc={target} after "
        f"{last.get('step', 0)} steps (batch size {last.get('batch_size', '?')}; {where}). RL starts from a prior "
        "that barely rates images. Raise warmup.max_steps, set warmup.batch_size (its own, not data.batch_size) "
        "or warmup.lr, or lower warmup.target_srcc"
    )
    if on_missed == "stop":
        raise WarmupTargetMissed(message + "; warmup.on_target_missed=warn continues to RL anyway")
    log.warning("\n%s\n%s\n%s", "!" * 100, message + " (warmup.on_target_missed=stop stops here)", "!" * 100)
    return False


def cached_warmup_dir(cache_dir: str | Path, spec: dict[str, Any]) -> Path:
    """Where the warm-up for `spec` is (or will be) exported."""
    return Path(cache_dir) / warmup_digest(spec)


def is_complete(path: Path) -> bool:
    return (path / "warmup_history.json").exists() and (path / "config.json").exists()


def save_warmup(
    model: nn.Module, processor: Any, path: Path, history: list[dict], spec: dict, phases: dict | None = None
) -> None:
    """Export the warmed-up model; `warmup_history.json` holds the spec, the validation history and,
    when given, the phases' timings (and whether phase (a) came from its cache)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    record = {"spec": spec, "history": history, **({"phases": phases} if phases is not None else {})}
    (path / "warmup_history.json").write_text(json.dumps(record, indent=2, default=str))


# ----------------------------------------------------------------------------- orchestration and caches


def warmup_spec(cfg: DictConfig, model_dir: Path) -> dict[str, Any]:
    """Everything that determines the whole warm-up (its cache key)."""
    return {
        "model": str(model_dir),
        "model_marker": (model_dir / "config.json").read_text(),
        "warmup": {k: v for k, v in to_plain(cfg.warmup).items() if k != "on_target_missed"},  # not the result
        "prompt": to_plain(cfg.prompt),
        "data": to_plain(cfg.data),
        "seed": cfg.seed,
    }


# Data keys that phase (a) never reads: the fold splits (it trains on `prior` only) and the fold choice.
FOLD_SPLITS = ("train", "val", "test")
FOLD_OPTIONS = ("fold", "num_folds")


def vision_spec(cfg: DictConfig, model_dir: Path) -> dict[str, Any]:
    """Everything that determines phase (a) (`pretrain_vision`), and nothing else: the fold and the prompt
    are left out, so warm-ups that differ only in them share one vision phase."""
    w = cfg.warmup
    data = to_plain(cfg.data)
    assert isinstance(data, dict)
    for split in FOLD_SPLITS:
        data.pop(split, None)
    if isinstance(data.get("synthetic"), dict):
        data["synthetic"] = {k: v for k, v in data["synthetic"].items() if k not in FOLD_OPTIONS}
    marker = model_dir / "prresq_tiny.json"  # the tiny model's sizes and seed (not all in config.json)
    return {
        "model": str(model_dir),
        "model_marker": (model_dir / "config.json").read_text(),
        "tiny_marker": marker.read_text() if marker.exists() else None,
        "dtype": cfg.model.get("dtype", "float32"),
        "attn_implementation": cfg.model.get("attn_implementation", "sdpa"),
        "vision_steps": int(w.get("vision_steps", 0) or 0),
        "vision_batch_size": w.get("vision_batch_size"),
        "vision_lr": float(w.get("vision_lr") or w["lr"]),
        "data": data,
        "seed": cfg.seed,
    }


def cached_vision_phase(
    model: nn.Module, loader_fn: Callable[[], Any], spec: dict[str, Any], cache_dir: str | Path
) -> dict[str, Any]:
    """Phase (a) on `model`, from the cache when `spec` was trained before, else trained and cached.

    `loader_fn()` builds the prior loader (only on a miss). On a hit the vision tower's weights and the
    random generators' states are those the training left; returns `{digest, reused, seconds}`.
    """
    digest = warmup_digest(spec)
    root = Path(cache_dir)
    path = root / digest / "vision.pt"
    start = time.perf_counter()
    with file_lock(root / f".lock-{digest}"):  # parallel warm-ups of one seed train it once
        if path.exists():
            state = load_checkpoint_file(path)
            family_of(model).vision_module(model).load_state_dict(state["visual"])
            restore_rng_states(state["rng"])
            log.info("warm-up (vision): reusing %s", path)
            return {"digest": digest, "reused": True, "seconds": time.perf_counter() - start}
        losses = pretrain_vision(model, loader_fn(), steps=spec["vision_steps"], lr=spec["vision_lr"])
        state = {
            "visual": {k: v.detach().clone() for k, v in family_of(model).vision_module(model).state_dict().items()},
            "rng": capture_rng_states(),
            "losses": losses,
            "spec": json.dumps(spec, sort_keys=True, default=str),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, path)  # a killed write leaves no vision.pt behind
    return {"digest": digest, "reused": False, "seconds": time.perf_counter() - start}


def run_warmup(cfg: DictConfig, model_dir: Path) -> Path:
    """Supervised prior-knowledge warm-up (cached by digest); returns the directory RL starts from."""
    w = cfg.warmup
    spec = warmup_spec(cfg, model_dir)
    out = cached_warmup_dir(Path(cfg.paths.cache_dir) / "warmup", spec)
    target, on_missed = float(w["target_srcc"]), str(w.get("on_target_missed", "warn"))
    if is_complete(out):
        log.info("warm-up: reusing %s", out)
        check_target(json.loads((out / "warmup_history.json").read_text())["history"], target, on_missed, out)
        return out
    L.seed_everything(cfg.seed, workers=True)
    processor = load_processor(model_dir, cfg.data.get("min_pixels"), cfg.data.get("max_pixels"))
    model = load_policy(
        model_dir,
        dtype=cfg.model.dtype,
        attn_implementation=cfg.model.attn_implementation,
        family=cfg.model.get("family"),
    )
    dm = build_datamodule(cfg, processor)
    template = str(w["answer_template"])
    phases: dict[str, Any] = {}
    if int(w.get("vision_steps", 0) or 0):
        phases["vision"] = cached_vision_phase(
            model,
            lambda: dm.prior_dataloader(batch_size=w.get("vision_batch_size")),
            vision_spec(cfg, model_dir),
            Path(cfg.paths.cache_dir) / "warmup_vision",
        )
    start = time.perf_counter()
    history = supervised_warmup(
        model,
        processor,
        dm.prior_dataloader(answer_fn=lambda rec: template.format(mos=rec.mos_mapped), batch_size=w.get("batch_size")),
        dm.val_dataloader(),
        scoring_config(cfg),
        lr=float(w["lr"]),
        max_steps=int(w["max_steps"]),
        target_srcc=target,
        eval_every=int(w["eval_every"]),
        min_steps=int(w.get("min_steps", 0)),
        vision_lr=w.get("vision_lr"),
    )
    phases["supervised"] = {"seconds": time.perf_counter() - start, "steps": history[-1]["step"] if history else 0}
    log.info("warm-up phases: %s", phases)
    save_warmup(model, processor, out, history, spec, phases)
    check_target(history, target, on_missed, out)
    return out
