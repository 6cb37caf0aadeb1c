"""The sampling parameters of every generation path, and the token ids generation needs.

`SamplingConfig` is the one place of the sampling parameters and their defaults: the GRPO rollout
(`prresq.config.GRPOConfig`, which also scores log-probs at its `temperature`) and the scoring path
(`prresq.scoring.ScoringConfig`) extend it, so `grpo.temperature` and `scoring.temperature` are the
same field of the same type. `generate_kwargs` turns it into Hugging Face `generate` arguments, the
same logits processing on the plain and the shared-prefix paths (`prresq.rollout`, `prresq.prefix`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GenerationTokens:
    """Stop, padding and suppressed token ids of a tokenizer (vision special tokens are never sampled)."""

    eos_ids: list[int]
    pad_id: int
    suppress_ids: list[int]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> GenerationTokens:
        """The stop and never-sampled tokens of the tokenizer's model family (`prresq.models`)."""
        from prresq.models.families import family_of_tokenizer  # torch; `prresq.config` imports this module

        family = family_of_tokenizer(tokenizer)
        eos = family.stop_ids(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[-1]
        return cls(eos, pad, family.never_sample_ids(tokenizer))


@dataclass
class SamplingConfig:
    """How answers are sampled: logits / temperature, then top-k and top-p filtering; length bounds."""

    temperature: float = 1.0  # logits are divided by it (grpo: also the temperature log-probs are scored at)
    top_p: float = 1.0  # nucleus filtering; 1.0 = off
    top_k: int | None = None  # keep the k most likely tokens; None = off
    max_new_tokens: int = 256  # completion length cap (paper: 256)
    min_new_tokens: int | None = None  # EOS suppressed before this many tokens; None = off

    @property
    def sampling(self) -> SamplingConfig:
        """The sampling fields alone (of this config or of a config that extends it)."""
        return SamplingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SamplingConfig)})

    def generate_kwargs(
        self, tokens: GenerationTokens, do_sample: bool = True, generators: Sequence[Any] | None = None
    ) -> dict[str, Any]:
        """The `generate` arguments every rollout path shares (`do_sample=False`: greedy, no filtering).

        With `generators` (one `torch.Generator` per output row), each row samples from its own generator
        (`prresq.row_sampling.RowSampler`); run `generate` under `prresq.row_sampling.seeded_block` so that
        the global RNG is not moved."""
        extra: dict[str, Any] = {}
        if generators is not None and do_sample:
            from transformers import LogitsProcessorList  # torch; `prresq.config` imports this module

            from prresq.row_sampling import RowSampler

            sampler = RowSampler(generators, self.temperature, self.top_k, self.top_p)
            extra["logits_processor"] = LogitsProcessorList([sampler])
        return dict(
            do_sample=do_sample,
            temperature=self.temperature if do_sample else None,
            top_p=self.top_p if do_sample else None,
            top_k=self.top_k if do_sample else None,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            suppress_tokens=tokens.suppress_ids,
            eos_token_id=tokens.eos_ids,
            pad_token_id=tokens.pad_id,
            use_cache=True,
            **extra,
        )
