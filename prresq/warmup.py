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
    validation SRCC reaches a target (default 0.5) so that RL has room to show its own effect.

The result is exported with `save_pretrained` and cached by a digest of everything that determines it.

Run by `python -m prresq.train` when `warmup.enabled=true` (the `tiny_synthetic` experiment).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prresq.scoring import ScoringConfig, correlations, score_loader

log = logging.getLogger(__name__)


def warmup_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_vision(model: nn.Module, loader: Any, steps: int = 300, lr: float = 3e-4) -> list[float]:
    """Phase (a): vision tower + linear head regress MOS (MSE) from mean-pooled image tokens."""
    from tqdm.auto import tqdm

    visual = model.model.visual
    merge = int(getattr(visual, "spatial_merge_size", 2))
    head = nn.Linear(int(model.config.text_config.hidden_size), 1)
    opt = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=lr)
    losses: list[float] = []
    bar = tqdm(total=steps, desc="warm-up (vision)")
    while len(losses) < steps:
        for batch in loader:
            inputs = batch["model_inputs"]
            grid = inputs["image_grid_thw"]
            out = visual(inputs["pixel_values"], grid_thw=grid)
            tokens = out.pooler_output if hasattr(out, "pooler_output") else out
            counts = (grid.prod(-1) // merge**2).tolist()
            pooled = torch.stack([t.mean(0) for t in torch.split(tokens, counts)])  # one row per image
            loss = torch.nn.functional.mse_loss(head(pooled).squeeze(-1), batch["mos"].float())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
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

    vision = [p for n, p in model.named_parameters() if p.requires_grad and ".visual." in f".{n}"]
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
            bar.update(1)
            bar.set_postfix(loss=f"{out.loss.item():.3f}")
            if step % eval_every == 0 or step >= max_steps:
                model.eval()
                corr = correlations(score_loader(model, processor, val_loader, scoring))
                record = {"step": step, "loss": float(out.loss), "seconds": time.time() - start, **corr}
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


def cached_warmup_dir(cache_dir: str | Path, spec: dict[str, Any]) -> Path:
    """Where the warm-up for `spec` is (or will be) exported."""
    return Path(cache_dir) / warmup_digest(spec)


def is_complete(path: Path) -> bool:
    return (path / "warmup_history.json").exists() and (path / "config.json").exists()


def save_warmup(model: nn.Module, processor: Any, path: Path, history: list[dict], spec: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    (path / "warmup_history.json").write_text(json.dumps({"spec": spec, "history": history}, indent=2, default=str))
