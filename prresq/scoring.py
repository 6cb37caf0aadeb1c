"""The one scoring path shared by in-training validation, `prresq.eval` and `prresq.infer`.

A model scores a batch of prompts by greedy decoding and/or by averaging N sampled answers.
Unparseable answers are counted and left out of the mean (never replaced by random numbers);
an item whose N answers all fail has a NaN score and is reported as failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prresq.models import vision_token_ids
from prresq.rewards import parse_answers
from prresq.rollout import generate_completions


@dataclass
class ScoringConfig:
    """How a model's answers become one score per item."""

    mode: str = "greedy"  # "greedy" | "sample" | "both"
    n: int = 8  # samples per item in "sample" mode
    temperature: float = 1.0
    max_new_tokens: int = 64
    num_aspects: int = 1
    score_low: float = 1.0
    score_high: float = 5.0


@dataclass
class Scores:
    """Scores of one batch; every tensor is [B]."""

    greedy: Tensor | None = None
    sample_mean: Tensor | None = None
    n_parsed: Tensor | None = None  # parsed answers among the N samples
    aspects: Tensor | None = None  # [B, D] aspect scores of the greedy answer (or sample mean)
    texts: list[str] = field(default_factory=list)  # one representative answer per item

    @property
    def primary(self) -> Tensor:
        """The score reported as the prediction: the sample mean when available, else greedy."""
        return self.sample_mean if self.sample_mean is not None else self.greedy


def _token_ids(processor: Any) -> tuple[list[int], int, list[int]]:
    tok = processor.tokenizer
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[-1]
    return eos, pad, vision_token_ids(tok)


def decode(processor: Any, completion_ids: Tensor) -> list[str]:
    """Completion token ids -> text (special tokens dropped)."""
    return processor.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)


@torch.no_grad()
def score_batch(model: nn.Module, processor: Any, inputs: dict[str, Tensor], cfg: ScoringConfig) -> Scores:
    """Score every item of a collated batch with greedy decoding and/or the mean of N samples."""
    eos, pad, suppress = _token_ids(processor)
    b = inputs["input_ids"].shape[0]
    out = Scores()
    gen = dict(eos_ids=eos, pad_id=pad, suppress_ids=suppress, max_new_tokens=cfg.max_new_tokens)
    rng = (cfg.score_low, cfg.score_high)
    if cfg.mode in ("greedy", "both"):
        ids, _ = generate_completions(model, inputs, 1, do_sample=False, **gen)
        texts = decode(processor, ids)
        scores, aspects = parse_answers(texts, cfg.num_aspects, *rng)
        out.greedy, out.aspects, out.texts = scores, aspects, texts
    if cfg.mode in ("sample", "both"):
        ids, _ = generate_completions(model, inputs, cfg.n, temperature=cfg.temperature, **gen)
        texts = decode(processor, ids)
        scores, aspects = parse_answers(texts, cfg.num_aspects, *rng)
        scores = scores.view(b, cfg.n)
        parsed = ~torch.isnan(scores)
        out.n_parsed = parsed.sum(1)
        out.sample_mean = torch.nanmean(scores, dim=1)  # NaN when all N failed
        if out.aspects is None:
            out.aspects = torch.nanmean(aspects.view(b, cfg.n, -1), dim=1)
            out.texts = texts[:: cfg.n]
    if cfg.mode not in ("greedy", "sample", "both"):
        raise ValueError(f"scoring.mode={cfg.mode!r}: expected greedy, sample or both")
    return out


@torch.no_grad()
def score_loader(
    model: nn.Module, processor: Any, loader: Any, cfg: ScoringConfig, progress: str | None = None
) -> dict[str, Any]:
    """Score every batch of a loader -> {"mos", "greedy", "sample_mean", "n_parsed": [N] tensors, "texts", "ids"}."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    acc: dict[str, list] = {"mos": [], "greedy": [], "sample_mean": [], "n_parsed": [], "texts": [], "ids": []}
    for batch in tqdm(loader, desc=progress, disable=progress is None, leave=False):
        inputs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch["model_inputs"].items()}
        out = score_batch(model, processor, inputs, cfg)
        acc["mos"].append(batch["mos"].float().cpu())
        for key in ("greedy", "sample_mean", "n_parsed"):
            value = getattr(out, key)
            if value is not None:
                acc[key].append(value.cpu())
        acc["texts"].extend(out.texts)
        acc["ids"].extend(batch.get("ids", []))
    return {k: torch.cat(v) if v and isinstance(v[0], Tensor) else (v or None) for k, v in acc.items()}


def correlations(scored: dict[str, Any]) -> dict[str, float]:
    """SRCC/PLCC of the greedy answer and of the N-sample mean against MOS, with parse-failure rates."""
    from prresq.metrics import plcc, srcc

    out: dict[str, float] = {}
    for key, name in (("greedy", "greedy"), ("sample_mean", "mean")):
        pred = scored.get(key)
        if pred is None:
            continue
        out[f"srcc_{name}"] = float(srcc(pred, scored["mos"]))
        out[f"plcc_{name}"] = float(plcc(pred, scored["mos"]))
        out[f"fail_{name}"] = float(torch.isnan(pred).float().mean())
    return out
