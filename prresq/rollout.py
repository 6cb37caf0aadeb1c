"""Rollouts: K sampled completions per prompt, and per-token log-probs of completions.

`generate_completions` samples K answers for every image of a batch (the family's vision special
tokens are suppressed: a sampled image placeholder would break the next forward's visual inputs).
`completion_logprobs` scores completions under any model sharing the policy's tokenizer
(policy with gradients, the old policy, the frozen reference), computing logits only for the
completion positions (`logits_to_keep`), which keeps the [N, T, V] tensor small for a 152k vocabulary.

`Rollout` is the record of one rollout batch that the GRPO update and the step's logs read
(`prresq.module.GRPOModule.rollout`).

Prompts are left-padded and completions right-padded, so for a prompt of width P the
completion token t sits at column P + t of the concatenated sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from prresq.models.families import family_of
from prresq.models.family import MediaGroup
from prresq.sampling import GenerationTokens, SamplingConfig

# Model inputs that are per-sample rows (dim 0 = batch) and per-token columns (dim 1 = sequence).
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


@dataclass
class Rollout:
    """One rollout batch of B prompts x K completions: what the policy update and the step's logs read.

    Completion rows i*K .. i*K+K-1 belong to prompt i. `inputs` holds the prompt rows the log-prob passes
    score: B rows on the shared-prefix path, B*K (each prompt repeated K times) on the plain path.
    """

    inputs: dict[str, Tensor]  # processor batch of the prompts (B or B*K rows, see above)
    completion: Tensor  # [B*K, T] sampled token ids, padding after the first EOS
    mask: Tensor  # [B*K, T] 1 on completion tokens up to and including the first EOS
    texts: list[str]  # [B*K] decoded completions
    scores: Tensor  # [B, K] parsed scores, NaN where an answer does not parse
    mos: Tensor  # [B] the MOS the rewards compared with (permuted under grpo.shuffle_mos)
    total: Tensor  # [B, K] weighted reward sum (VisualQuality-R1 Eq. 1-3, the reward mix)
    terms: dict[str, Tensor]  # {term: [B, K]} each reward term before weighting
    advantages: Tensor  # [B*K] group-standardised rewards (Eq. 4)
    old_logp: Tensor | None  # [B*K, T] policy log-probs at sampling time; None when num_iterations = 1
    ref_logp: Tensor | None  # [B*K, T] reference log-probs; None when beta = 0


@dataclass(frozen=True)
class VisionIds:
    """How a model's processor batches hold their visual inputs (its family's `MediaGroup`s), to split them per sample."""

    groups: tuple[MediaGroup, ...]
    family: str = ""  # the model family's name, for messages
    shares_prefix: bool = True  # False: the family cannot share a prompt prefix exactly (plain engine)

    @classmethod
    def from_config(cls, config: Any) -> VisionIds:
        family = family_of(config)
        return cls(tuple(family.media_groups(config)), family.title, family.shares_prefix)


def _repeat_chunks(values: Tensor, sizes: Tensor, k: int) -> Tensor:
    """Repeat consecutive row-chunks of `values` (chunk lengths `sizes`) k times each, in order."""
    chunks = torch.split(values, sizes.tolist())
    return torch.cat([c for c in chunks for _ in range(k)]) if chunks else values


def _as_tensor(value: Any) -> Tensor:
    return value if isinstance(value, Tensor) else torch.tensor(value)


def expand_inputs(inputs: dict[str, Tensor], k: int, ids: VisionIds) -> dict[str, Tensor]:
    """Repeat every sample of a processor batch k times (sample i -> rows i*k .. i*k+k-1)."""
    if k == 1:
        return dict(inputs)
    out: dict[str, Tensor] = {}
    for key, value in inputs.items():
        if key in TOKEN_KEYS or key == "labels":
            out[key] = value.repeat_interleave(k, dim=0)
    for group in ids.groups:
        if not group.present(inputs):
            continue
        media, rows = group.spans(inputs)  # [B] media and pixel rows of each sample
        if group.grid_key is not None:
            out[group.grid_key] = _repeat_chunks(inputs[group.grid_key], media, k)
        out[group.pixel_key] = _repeat_chunks(inputs[group.pixel_key], rows, k)
        for key in group.per_media_keys:
            if key in inputs:
                out[key] = _repeat_chunks(_as_tensor(inputs[key]), media, k)
    for key, value in inputs.items():
        out.setdefault(key, value)
    return out


def slice_inputs(inputs: dict[str, Tensor], sl: slice, ids: VisionIds) -> dict[str, Tensor]:
    """Rows `sl` of an expanded batch, with the matching rows of the visual inputs."""
    n = inputs["input_ids"].shape[0]
    if sl.start == 0 and sl.stop == n:
        return inputs
    out = {k: inputs[k][sl] for k in (*TOKEN_KEYS, "labels") if k in inputs}
    for group in ids.groups:
        if not group.present(inputs):
            continue
        media, rows = group.spans(inputs)
        media_start, media_stop = int(media[: sl.start].sum()), int(media[: sl.stop].sum())
        row_start, row_stop = int(rows[: sl.start].sum()), int(rows[: sl.stop].sum())
        if row_stop == row_start:
            continue  # no medium of this kind in these rows: the slice has none (an empty tensor would not encode)
        if group.grid_key is not None:
            out[group.grid_key] = inputs[group.grid_key][media_start:media_stop]
        out[group.pixel_key] = inputs[group.pixel_key][row_start:row_stop]
        for key in group.per_media_keys:
            if key in inputs:
                out[key] = inputs[key][media_start:media_stop]
    return out


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
) -> tuple[Tensor, Tensor]:
    """Sample k completions per prompt -> (completion_ids [B*k, T], mask [B*k, T])."""
    gen_inputs = {key: v for key, v in inputs.items() if key != "labels"}
    with generation_mode(model):
        out = model.generate(**gen_inputs, num_return_sequences=k, **sampling.generate_kwargs(tokens, do_sample))
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
