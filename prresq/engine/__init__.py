"""The engine package: how a GRPO step (and scoring) generates completions and scores their log-probs.

- `rows.py`: batch rows: a batch's prompts repeated K times or sliced into micro-batches, the visual
  inputs following their prompts (`VisionIds`, from the model family).
- `plain.py`: `PlainEngine`: each prompt repeated K times (`expand_inputs`), so the vision encoder and
  the prompt prefill run K times per image; micro-batches are any `micro_batch_size` completions.
- `shared.py`: `SharedPrefixEngine`: one vision encoding and one prompt prefill per image, the K
  completions on top; micro-batches hold whole groups of K. It holds a plain engine for what it cannot share.

`build_engine` chooses one from `grpo.shared_prefix` (and the model family); `scoring_engine` builds the
one scoring uses. Their log-probs, losses and gradients are equal (`tests/test_prefix.py`).
"""

from __future__ import annotations

import logging
from typing import Any

from prresq.config import GRPOConfig
from prresq.engine.base import Engine, Rows
from prresq.engine.plain import PlainEngine
from prresq.engine.rows import VisionIds
from prresq.engine.shared import SharedPrefixEngine
from prresq.sampling import GenerationTokens, SamplingConfig

log = logging.getLogger(__name__)

__all__ = ["Engine", "PlainEngine", "Rows", "SharedPrefixEngine", "VisionIds", "build_engine", "scoring_engine"]


def build_engine(cfg: GRPOConfig, tokens: GenerationTokens, vision_ids: VisionIds) -> Engine:
    """`SharedPrefixEngine` when `grpo.shared_prefix` and the model family can share a prefix, else `PlainEngine`."""
    if cfg.shared_prefix and not vision_ids.shares_prefix:
        log.warning(
            "grpo.shared_prefix=true, but the %s model family cannot share the prompt prefix exactly "
            "(see the README's model-family table); the plain engine is used",
            vision_ids.family,
        )
        return PlainEngine(cfg, tokens, vision_ids)
    return (SharedPrefixEngine if cfg.shared_prefix else PlainEngine)(cfg, tokens, vision_ids)


def scoring_engine(model: Any, tokenizer: Any, sampling: SamplingConfig, n: int, shared_prefix: bool) -> Engine:
    """The engine of N-sample scoring: `n` answers per item with `sampling`, on the shared prefix or not."""
    fields = {f: getattr(sampling, f) for f in ("temperature", "top_p", "top_k", "max_new_tokens", "min_new_tokens")}
    cfg = GRPOConfig(k=int(n), shared_prefix=bool(shared_prefix), **fields)
    tokens = GenerationTokens.from_tokenizer(tokenizer)
    vision_ids = VisionIds.from_config(model.config)
    return (SharedPrefixEngine if shared_prefix else PlainEngine)(cfg, tokens, vision_ids)
