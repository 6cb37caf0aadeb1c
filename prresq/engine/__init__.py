"""Rollout engines: how a GRPO step generates completions and scores their log-probs.

Two engines behind one interface, chosen once from `grpo.shared_prefix` (`build_engine`):

- `PlainEngine` (`prresq.rollout`): each prompt is repeated K times (`expand_inputs`), so the vision
  encoder and the prompt prefill run K times per image; micro-batches are any `micro_batch_size`
  completions.
- `SharedPrefixEngine` (`prresq.prefix`): one vision encoding and one prompt prefill per image, the
  K completions on top; micro-batches hold whole groups of K completions.

Both read `k`, `micro_batch_size` and the sampling parameters from the `GRPOConfig` they hold when
called, so a change of K between steps (the two-stage schedule) takes effect at the next rollout.
Their log-probs, losses and gradients are equal (`tests/test_prefix.py`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from prresq.config import GRPOConfig
from prresq.prefix import completion_logprobs_shared, generate_completions_shared, micro_batches
from prresq.rollout import VisionIds, completion_logprobs, expand_inputs, generate_completions, slice_inputs
from prresq.sampling import GenerationTokens

log = logging.getLogger(__name__)

Rows = tuple[slice, slice]  # (prompt rows of `Engine.prompt_rows`, completion rows of the [B*K, ...] tensors)


class Engine(ABC):
    """Generate K completions per prompt, and score completions micro-batch by micro-batch."""

    def __init__(self, cfg: GRPOConfig, tokens: GenerationTokens, vision_ids: VisionIds) -> None:
        self.cfg, self.tokens, self.vision_ids = cfg, tokens, vision_ids

    @abstractmethod
    def generate(self, model: nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """B prompts -> (completion ids [B*K, T], mask [B*K, T]), sampled with the config's parameters."""

    @abstractmethod
    def prompt_rows(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The prompt rows the log-prob passes read (what `Rollout.inputs` holds)."""

    @abstractmethod
    def micro_batches(self, n: int) -> list[Rows]:
        """The micro-batches of a rollout of `n` completions."""

    @abstractmethod
    def logprobs(
        self, model: nn.Module, inputs: dict[str, Tensor], rows: Rows, completion: Tensor, mask: Tensor
    ) -> Tensor:
        """Per-token log-probs [n, T] of completion rows `rows[1]` (prompt rows `rows[0]` of `inputs`)."""

    @torch.no_grad()
    def all_logprobs(self, model: nn.Module, inputs: dict[str, Tensor], completion: Tensor, mask: Tensor) -> Tensor:
        """Log-probs [B*K, T] of every completion, in micro-batches, without gradients (old policy, reference)."""
        rows = self.micro_batches(completion.shape[0])
        return torch.cat([self.logprobs(model, inputs, r, completion, mask) for r in rows])


class PlainEngine(Engine):
    """Every prompt repeated K times: K vision encodings and prompt prefills per image."""

    def generate(self, model: nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return generate_completions(model, inputs, self.cfg.k, self.tokens, self.cfg)

    def prompt_rows(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return expand_inputs(inputs, self.cfg.k, self.vision_ids)

    def micro_batches(self, n: int) -> list[Rows]:
        size = int(self.cfg.micro_batch_size or n)
        return [(sl, sl) for sl in (slice(i, min(i + size, n)) for i in range(0, n, size))]

    def logprobs(
        self, model: nn.Module, inputs: dict[str, Tensor], rows: Rows, completion: Tensor, mask: Tensor
    ) -> Tensor:
        prompts, completions = rows
        sub = slice_inputs(inputs, prompts, self.vision_ids)
        return completion_logprobs(model, sub, completion[completions], mask[completions], self.cfg.temperature)


class SharedPrefixEngine(Engine):
    """One vision encoding and prompt prefill per image, shared by its K completions."""

    def generate(self, model: nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return generate_completions_shared(model, inputs, self.cfg.k, self.tokens, self.cfg)

    def prompt_rows(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return inputs

    def micro_batches(self, n: int) -> list[Rows]:
        return micro_batches(n // self.cfg.k, self.cfg.k, self.cfg.micro_batch_size)

    def logprobs(
        self, model: nn.Module, inputs: dict[str, Tensor], rows: Rows, completion: Tensor, mask: Tensor
    ) -> Tensor:
        prompts, completions = rows
        sub = slice_inputs(inputs, prompts, self.vision_ids)
        k, temperature = self.cfg.k, self.cfg.temperature
        return completion_logprobs_shared(model, sub, k, completion[completions], mask[completions], temperature)


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
