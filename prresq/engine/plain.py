"""The plain engine: every prompt repeated K times (K vision encodings and prompt prefills per image).

`generate_completions` samples K answers for every image of a batch (the family's vision special
tokens are suppressed: a sampled image placeholder would break the next forward's visual inputs).
`completion_logprobs` scores completions under any model sharing the policy's tokenizer (policy with
gradients, the old policy, the frozen reference), computing logits only for the completion positions
(`logits_to_keep`), which keeps the [N, T, V] tensor small for a 152k vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from prresq.engine.base import Engine, Rows
from prresq.engine.rows import completion_micro_batches, expand_inputs, slice_inputs
from prresq.models.families import family_of
from prresq.row_sampling import seeded_block
from prresq.sampling import GenerationTokens, SamplingConfig


def completion_mask(completion_ids: Tensor, eos_ids: list[int]) -> Tensor:
    """1 for tokens up to and including the first EOS of each row, 0 after it. [N, T] long."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).long()


@contextmanager
def gathered_parameters(model: nn.Module) -> Iterator[None]:
    """Under DeepSpeed ZeRO-3, gather the sharded parameters once for a whole rollout (not per token).

    A no-op for unsharded models (single device, DDP, ZeRO-1/2).
    """
    sharded = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not sharded:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(sharded, modifier_rank=None):
        yield


@contextmanager
def generation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode plus one ZeRO-3 parameter gather for a whole rollout; the train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with gathered_parameters(model):
            yield
    finally:
        model.train(was_training)


def split_completions(out: Tensor, prompt_width: int, eos_ids: list[int], pad_id: int) -> tuple[Tensor, Tensor]:
    """`generate` output -> (completion ids padded after the first EOS, mask), both [N, T]."""
    completion = out[:, prompt_width:]
    mask = completion_mask(completion, eos_ids)
    completion = torch.where(mask.bool(), completion, torch.full_like(completion, pad_id))
    return completion, mask


@torch.no_grad()
def generate_completions(
    model: nn.Module,
    inputs: dict[str, Tensor],
    k: int,
    tokens: GenerationTokens,
    sampling: SamplingConfig,
    do_sample: bool = True,
    generators: Sequence[torch.Generator] | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample k completions per prompt -> (completion_ids [B*k, T], mask [B*k, T]).

    `generators`: one per completion row (`prresq.row_sampling`), for draws that depend on the row only."""
    gen_inputs = {key: v for key, v in inputs.items() if key != "labels"}
    kwargs = sampling.generate_kwargs(tokens, do_sample, generators)
    with generation_mode(model), seeded_block(generators):
        out = model.generate(**gen_inputs, num_return_sequences=k, **kwargs)
    return split_completions(out, inputs["input_ids"].shape[1], tokens.eos_ids, tokens.pad_id)


def completion_logprobs(
    model: nn.Module,
    prompt_inputs: dict[str, Tensor],  # already expanded to one row per completion
    completion_ids: Tensor,  # [N, T]
    completion_mask_: Tensor,  # [N, T]
    temperature: float = 1.0,
) -> Tensor:
    """Per-token log-probs [N, T] of the completions given their prompts (Eq. 5's pi(o_t | q, o_<t))."""
    n, t = completion_ids.shape
    inputs = dict(prompt_inputs)
    inputs.pop("labels", None)
    inputs["input_ids"] = torch.cat([prompt_inputs["input_ids"], completion_ids], dim=1)
    inputs["attention_mask"] = torch.cat([prompt_inputs["attention_mask"], completion_mask_], dim=1)
    if "mm_token_type_ids" in prompt_inputs:
        zeros = torch.zeros((n, t), dtype=prompt_inputs["mm_token_type_ids"].dtype, device=completion_ids.device)
        inputs["mm_token_type_ids"] = torch.cat([prompt_inputs["mm_token_type_ids"], zeros], dim=1)
    positions = family_of(model).forward_positions(inputs)  # None: the model computes its own
    if positions is not None:
        inputs["position_ids"] = positions
    out = model(**inputs, use_cache=False, logits_to_keep=t + 1)
    logits = out.logits[:, :-1, :].float()  # [N, T, V]: position P-1+t predicts completion token t
    if temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)  # [N, T]


class PlainEngine(Engine):
    """Every prompt repeated K times: K vision encodings and prompt prefills per image."""

    @property
    def plain(self) -> PlainEngine:
        return self

    def generate(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        k: int | None = None,
        do_sample: bool = True,
        generators: Sequence[torch.Generator] | None = None,
    ) -> tuple[Tensor, Tensor]:
        k = self.cfg.k if k is None else k
        return generate_completions(model, inputs, k, self.tokens, self.cfg, do_sample, generators)

    def prompt_rows(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return expand_inputs(inputs, self.cfg.k, self.vision_ids)

    def micro_batches(self, n: int) -> list[Rows]:
        return completion_micro_batches(n, self.cfg.micro_batch_size)

    def logprobs(
        self, model: nn.Module, inputs: dict[str, Tensor], rows: Rows, completion: Tensor, mask: Tensor
    ) -> Tensor:
        prompts, completions = rows
        sub = slice_inputs(inputs, prompts, self.vision_ids)
        return completion_logprobs(model, sub, completion[completions], mask[completions], self.cfg.temperature)
