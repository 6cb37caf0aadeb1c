"""The one scoring path shared by in-training validation, `prresq.eval` and `prresq.infer`.

A model scores a batch of prompts by greedy decoding and/or by averaging N sampled answers.
Unparseable answers are counted and left out of the mean (never replaced by random numbers);
an item whose N answers all fail has a NaN score and is reported as failed.

Modes (`ScoringConfig.mode`):

- ``greedy``: one greedy answer, read by `answer_rule` (`prresq.rewards.score_answers`: the paper's rule for
  the prompt by default; an answer the rule cannot read is NaN and counted, never padded or 3.0).
- ``sample``: N answers at `temperature`, the mean of those that parse; `n_parsed` counts them.
  With `shared_prefix` (the default) the N answers continue one vision encoding and one prompt
  prefill per item (`prresq.engine.SharedPrefixEngine`, as in training); with
  ``shared_prefix=False`` the plain path encodes the media and prefills the prompt N times. Same
  seed, same sampled tokens (`tests/test_prefix.py::test_scoring_samples_identical`).
- ``both``: greedy and sample; the sample mean is the prediction. With `shared_prefix`, the greedy
  answer and the N samples continue one vision encoding and one prompt prefill per item
  (`prresq.one_prefill`; same tokens as a greedy pass followed by a sample pass).
- ``expected``: greedy decoding, then the expected score read from the answer-token
  probabilities (single-number answers only). The rule, exactly:

  1. Take the greedy completion up to its first end token. If its text contains ``<answer>``, keep
     the tokens up to and including the LAST ``<answer>`` (the block the parser reads); tokens
     that merge text across the tag's end are re-tokenised. If it holds no ``<answer>``, the
     tokens of ``<answer>`` are appended to the whole completion (a forced answer).
  2. One forward pass over prompt + that prefix gives the logits ``z`` of the next token.
  3. Candidates are the integers ``d`` in ``[score_low, score_high]`` whose decimal string is a
     single token (``'1'..'5'`` for [1, 5], in the tiny tokenizer and in Qwen's, which splits
     digits); ``p_d = softmax(z[candidates])`` (renormalised over the candidates only) and
     ``expected = sum_d p_d * d``. ``expected_mass`` is the candidates' probability under the
     full softmax (how much the model actually meant to write a leading digit there).

  The expected score is never NaN, so `n_parsed` reports whether the greedy answer parsed.

Used as:

    cfg = ScoringConfig(mode="both", n=8)
    scored = score_loader(model, processor, loader, cfg, progress="kadid10k")
    correlations(scored)   # SRCC/PLCC of greedy / mean (/ expected) answers
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prresq.config import ScoringOptions
from prresq.engine import Engine, SharedPrefixEngine, scoring_engine
from prresq.engine.rows import TOKEN_KEYS
from prresq.one_prefill import generate_greedy_and_samples
from prresq.rewards.parse import resolve_answer_rule, score_answers
from prresq.row_sampling import global_rng_kept, row_generators
from prresq.sampling import GenerationTokens

MODES = ("greedy", "sample", "both", "expected")
ANSWER_TAG = "<answer>"
# Model inputs that are per-token columns (dim 1 = sequence) of a left-padded batch.


@dataclass
class ScoringConfig(ScoringOptions):
    """How a model's answers become one score per item: the `scoring` group (`prresq.config.ScoringOptions`,
    sampling parameters `SamplingConfig`'s) plus the prompt's number of aspect scores."""

    num_aspects: int = 1  # scores per answer (the prompt group's num_aspects)
    answer_rule: str = "released"  # prresq.rewards.score_answers; NaN where the rule cannot read an answer

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides: Any) -> ScoringConfig:
        """Build from a config block, ignoring keys that are not fields (batch_size, seed, ...)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**dict(values), **overrides}.items() if k in names})


@dataclass
class Scores:
    """Scores of one batch; every tensor is [B]."""

    greedy: Tensor | None = None
    sample_mean: Tensor | None = None
    n_parsed: Tensor | None = None  # parsed answers among the N samples (greedy: 1 or 0)
    aspects: Tensor | None = None  # [B, D] aspect scores of the greedy answer (or sample mean)
    texts: list[str] = field(default_factory=list)  # one representative answer per item
    expected: Tensor | None = None  # expected score from the answer-token probabilities
    expected_mass: Tensor | None = None  # probability mass of the candidate digits

    @property
    def primary(self) -> Tensor:
        """The prediction: the sample mean when available, else the expected score, else greedy."""
        for value in (self.sample_mean, self.expected, self.greedy):
            if value is not None:
                return value
        raise ValueError("no scores")


def decode(processor: Any, completion_ids: Tensor) -> list[str]:
    """Completion token ids -> text (special tokens dropped)."""
    return processor.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)


# ----------------------------------------------------------------------------- expected score


def digit_candidates(tokenizer: Any, low: float = 1.0, high: float = 5.0) -> tuple[list[int], list[float]]:
    """(token ids, values) of the integers in [low, high] whose decimal string is one token."""
    import math

    ids, values = [], []
    for d in range(math.ceil(low), math.floor(high) + 1):
        tokens = tokenizer.encode(str(d), add_special_tokens=False)
        if len(tokens) == 1:
            ids.append(int(tokens[0]))
            values.append(float(d))
    if not ids:
        raise ValueError(f"expected scoring: no integer in [{low}, {high}] is a single token")
    return ids, values


def expected_from_logits(
    logits: Tensor, candidate_ids: Sequence[int], values: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """Next-token logits [B, V] -> (expected score [B], candidate probability mass [B]).

    `expected = sum_d softmax(logits[candidates])_d * value_d`; the mass is the candidates' share
    of the full softmax.
    """
    logits = logits.float()
    idx = torch.as_tensor(list(candidate_ids), device=logits.device)
    vals = torch.as_tensor(list(values), dtype=logits.dtype, device=logits.device)
    sub = logits[:, idx]
    expected = torch.softmax(sub, dim=-1) @ vals
    mass = torch.exp(torch.logsumexp(sub, dim=-1) - torch.logsumexp(logits, dim=-1))
    return expected, mass


def _valid_length(row: Tensor, stop_ids: Sequence[int]) -> int:
    stops = torch.isin(row, torch.as_tensor(list(stop_ids), device=row.device)).nonzero()
    return int(stops[0]) if len(stops) else int(row.shape[0])


def answer_prefix(tokenizer: Any, completion: Sequence[int]) -> tuple[list[int], bool]:
    """Tokens of a completion up to and including its last `<answer>` -> (ids, forced).

    Without an `<answer>` in the completion, the tag's tokens are appended (forced = True).
    A token that crosses the tag's end is dropped and the missing text re-tokenised.
    """
    ids = [int(i) for i in completion]

    def text(n: int) -> str:
        return tokenizer.decode(ids[:n], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    full = text(len(ids))
    start = full.rfind(ANSWER_TAG)
    if start < 0:
        return ids + tokenizer.encode(ANSWER_TAG, add_special_tokens=False), True
    target = full[: start + len(ANSWER_TAG)]
    lo, hi = 0, len(ids)  # largest n whose decoded text is a prefix of `target`
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if target.startswith(text(mid)):
            lo = mid
        else:
            hi = mid - 1
    rest = target[len(text(lo)) :]
    return ids[:lo] + (tokenizer.encode(rest, add_special_tokens=False) if rest else []), False


def _append_left_padded(inputs: Mapping[str, Any], suffixes: Sequence[Sequence[int]], pad_id: int) -> dict[str, Any]:
    """Append per-row token suffixes to a left-padded batch, re-padding on the left."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    rows = []
    for i, suffix in enumerate(suffixes):
        keep = mask[i].bool()
        extra = torch.as_tensor(list(suffix), dtype=ids.dtype, device=ids.device)
        rows.append({k: inputs[k][i][keep] for k in TOKEN_KEYS if k in inputs} | {"_extra": extra})
    width = max(len(r["input_ids"]) + len(r["_extra"]) for r in rows)
    out = {k: v for k, v in inputs.items() if k not in TOKEN_KEYS and k != "labels"}
    for key in (k for k in TOKEN_KEYS if k in inputs):
        src = inputs[key]
        fill = pad_id if key == "input_ids" else 0
        new = torch.full((len(rows), width), fill, dtype=src.dtype, device=src.device)
        for i, r in enumerate(rows):
            tail = {"input_ids": r["_extra"], "attention_mask": torch.ones_like(r["_extra"])}.get(
                key, torch.zeros_like(r["_extra"])
            )
            row = torch.cat([r[key], tail.to(src.dtype)])
            new[i, width - len(row) :] = row
        out[key] = new
    return out


@torch.no_grad()
def expected_scores(
    model: nn.Module,
    processor: Any,
    inputs: dict[str, Tensor],
    completion_ids: Tensor,
    cfg: ScoringConfig,
) -> tuple[Tensor, Tensor, Tensor]:
    """The `expected` rule of the module docstring -> (expected [B], mass [B], forced [B] bool)."""
    if cfg.num_aspects != 1:
        raise ValueError("scoring.mode=expected needs a single-number answer (prompt.num_aspects = 1)")
    tok = processor.tokenizer
    tokens = GenerationTokens.from_tokenizer(tok)
    cand_ids, values = digit_candidates(tok, cfg.score_low, cfg.score_high)
    prefixes, forced = [], []
    for row in completion_ids:
        prefix, was_forced = answer_prefix(tok, row[: _valid_length(row, [*tokens.eos_ids, tokens.pad_id])].tolist())
        prefixes.append(prefix)
        forced.append(was_forced)
    batch = _append_left_padded(inputs, prefixes, tokens.pad_id)
    was_training = model.training
    model.eval()
    try:
        logits = model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
    finally:
        model.train(was_training)
    expected, mass = expected_from_logits(logits, cand_ids, values)
    return expected.cpu(), mass.cpu(), torch.tensor(forced)


# ----------------------------------------------------------------------------- scoring


def engine_for(model: nn.Module, processor: Any, cfg: ScoringConfig) -> Engine:
    """The engine scoring runs on: N samples per item on the shared prefix (`cfg.shared_prefix`) or the plain path."""
    return scoring_engine(model, processor.tokenizer, cfg.sampling, cfg.n, cfg.shared_prefix)


@torch.no_grad()
def score_batch(
    model: nn.Module,
    processor: Any,
    inputs: dict[str, Tensor],
    cfg: ScoringConfig,
    engine: Engine | None = None,
    seed: int | None = None,
    ids: Sequence[str] | None = None,
) -> Scores:
    """Score every item of a collated batch (see the module docstring for the modes) on `engine` (`engine_for`).

    With `seed` (and the batch's item `ids`), sampled answer j of item `id` draws from its own generator
    seeded by (seed, id, j) (`prresq.row_sampling`): the same answers in any batch, and the global RNG is
    not moved. Without, sampling draws from the global RNG."""
    if cfg.mode not in MODES:
        raise ValueError(f"scoring.mode={cfg.mode!r}: expected one of {', '.join(MODES)}")
    generators = None
    if seed is not None and cfg.mode in ("sample", "both"):
        if ids is None or len(ids) != inputs["input_ids"].shape[0]:
            raise ValueError(f"seeded scoring needs one item id per batch row (got {ids!r})")
        generators = row_generators(seed, ids, cfg.n)
    rule = resolve_answer_rule(cfg.answer_rule, cfg.num_aspects)
    engine = engine if engine is not None else engine_for(model, processor, cfg)
    b = inputs["input_ids"].shape[0]
    out = Scores()
    rng = (cfg.score_low, cfg.score_high)
    sampled = None
    if cfg.mode == "both" and isinstance(engine, SharedPrefixEngine):  # one prefill (prresq.one_prefill)
        tokens = GenerationTokens.from_tokenizer(processor.tokenizer)
        (ids, _), sampled = generate_greedy_and_samples(model, inputs, cfg.n, tokens, cfg.sampling, generators)
    elif cfg.mode in ("greedy", "both", "expected"):
        ids, _ = engine.plain.generate(model, inputs, k=1, do_sample=False)
    if cfg.mode in ("greedy", "both", "expected"):
        texts = decode(processor, ids)
        scores, aspects = score_answers(texts, rule, cfg.num_aspects, *rng)
        out.greedy, out.aspects, out.texts = scores, aspects, texts
        out.n_parsed = (~torch.isnan(scores)).long()
        if cfg.mode == "expected":
            out.expected, out.expected_mass, _ = expected_scores(model, processor, inputs, ids, cfg)
    if cfg.mode in ("sample", "both"):
        ids, _ = sampled if sampled is not None else engine.generate(model, inputs, k=cfg.n, generators=generators)
        texts = decode(processor, ids)
        scores, aspects = score_answers(texts, rule, cfg.num_aspects, *rng)
        scores = scores.view(b, cfg.n)
        parsed = ~torch.isnan(scores)
        out.n_parsed = parsed.sum(1)
        out.sample_mean = torch.nanmean(scores, dim=1)  # NaN when all N failed
        if out.aspects is None:
            out.aspects = _masked_mean(aspects.view(b, cfg.n, -1), parsed)
            out.texts = texts[:: cfg.n]
    return out


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean over dim 1 of [B, N, D] values where keep [B, N] is true (NaN when none is kept)."""
    values = values.masked_fill(~keep[..., None], float("nan"))
    return torch.nanmean(values, dim=1)


_STACKED = ("greedy", "sample_mean", "n_parsed", "expected", "expected_mass", "aspects")


@torch.no_grad()
def score_loader(
    model: nn.Module,
    processor: Any,
    loader: Any,
    cfg: ScoringConfig,
    progress: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Score every batch of a loader.

    With `seed`, each sampled answer draws from its own generator, seeded by the seed, its item id and its
    index (`score_batch`, `prresq.row_sampling`): an item's answers depend on the item only, not on the batch
    size, the batches before it or the rank, so a sharded or resumed `prresq.eval` and the held-out table give
    the same predictions; and the global RNG (torch's; the loader's iteration draws from it too) is left
    where it was, so scoring in the middle of a run does not change what the run draws next.

    Returns {"mos", "greedy", "sample_mean", "n_parsed", "expected", "expected_mass", "pred": [N]
    tensors (None when the mode does not produce them), "aspects": [N, D], "texts", "ids", "media"}.
    `pred` is the primary prediction (`Scores.primary`). Batches that collate to None are skipped.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    engine = engine_for(model, processor, cfg)
    acc: dict[str, list] = {k: [] for k in ("mos", "pred", *_STACKED, "texts", "ids", "media")}
    with global_rng_kept() if seed is not None else contextlib.nullcontext():
        for batch in tqdm(loader, desc=progress, disable=progress is None, leave=False):
            if batch is None:
                continue
            inputs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch["model_inputs"].items()}
            out = score_batch(model, processor, inputs, cfg, engine, seed=seed, ids=batch.get("ids"))
            acc["mos"].append(batch["mos"].float().cpu())
            acc["pred"].append(out.primary.cpu())
            for key in _STACKED:
                value = getattr(out, key)
                if value is not None:
                    acc[key].append(value.cpu())
            acc["texts"].extend(out.texts)
            acc["ids"].extend(batch.get("ids", []))
            acc["media"].extend(batch.get("media", []))
    return {k: torch.cat(v) if v and isinstance(v[0], Tensor) else (v or None) for k, v in acc.items()}


def correlations(scored: dict[str, Any]) -> dict[str, float]:
    """SRCC/PLCC of the greedy, N-sample mean and expected scores against MOS, with failure rates."""
    from prresq.metrics import plcc, srcc

    out: dict[str, float] = {}
    for key, name in (("greedy", "greedy"), ("sample_mean", "mean"), ("expected", "expected")):
        pred = scored.get(key)
        if pred is None:
            continue
        out[f"srcc_{name}"] = float(srcc(pred, scored["mos"]))
        out[f"plcc_{name}"] = float(plcc(pred, scored["mos"]))
        out[f"fail_{name}"] = float(torch.isnan(pred).float().mean())
    return out
