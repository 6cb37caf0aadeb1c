"""The engine interface: generate K completions per prompt, score completions micro-batch by micro-batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from prresq.config import GRPOConfig
from prresq.sampling import GenerationTokens

if TYPE_CHECKING:
    from prresq.engine.plain import PlainEngine
    from prresq.engine.rows import VisionIds

Rows = tuple[slice, slice]  # (prompt rows of `Engine.prompt_rows`, completion rows of the [B*K, ...] tensors)


class Engine(ABC):
    """Generate K completions per prompt, and score completions micro-batch by micro-batch.

    Reads `k`, `micro_batch_size` and the sampling parameters from the `GRPOConfig` it holds when called,
    so a change of K between steps (the two-stage schedule) takes effect at the next rollout.
    """

    def __init__(self, cfg: GRPOConfig, tokens: GenerationTokens, vision_ids: VisionIds) -> None:
        self.cfg, self.tokens, self.vision_ids = cfg, tokens, vision_ids

    @property
    @abstractmethod
    def plain(self) -> PlainEngine:
        """The plain engine of the same configuration (what a shared-prefix engine hands what it cannot share)."""

    @abstractmethod
    def generate(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        k: int | None = None,
        do_sample: bool = True,
        generators: Sequence[torch.Generator] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """B prompts -> (completion ids [B*k, T], mask [B*k, T]); k defaults to the config's K.

        `generators` (B*k, `prresq.row_sampling`): row r samples from generators[r] and the global RNG is kept."""

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
