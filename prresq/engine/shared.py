"""The shared-prefix engine: one vision encoding and one prompt prefill per image, not K.

The plain path (`prresq.engine.plain`) repeats every prompt K times (`expand_inputs`) before it
generates or scores, so the vision encoder and the prompt prefill run K times per image, in
generation and again in every log-prob pass (policy, old policy, reference). The functions here
run them once per image and share the result between the K completions:

1. **Prefix.** One forward over the B prompts (pixels through the vision encoder, the left-padded
   prompt tokens through the decoder) records every decoder layer's keys/values ([B, H, P, D]).
   Positions are the model family's (`prresq.models`, `ModelFamily.prompt_positions`), computed
   from the same inputs the plain forward uses: 3D multimodal rotary positions for a family that
   has them (`get_rope_index`), 1D positions over the attention mask otherwise.
2. **Continuations.** The K completions of image i (rows i*k .. i*k+k-1, the layout of
   `expand_inputs`) run on top of those keys/values, repeated to B*k rows. Completion token t sits
   at text position `p_last + 1 + t` (p_last: the position of the last prompt token, a text token
   of every row under left padding), where the plain forward (`get_rope_index` over prompt +
   completion) and `generate` (positions grow by one per new token) put it. Not
   `max(prompt positions) + 1 + t`: after a video the temporal positions can exceed p_last.

`generate_completions_shared` prefills the prompts without their last column, repeats the cache
to B*k rows and hands it to Hugging Face `generate` (cache continuation), so the logits
processing (temperature, top-k, top-p, suppressed tokens, min_new_tokens, and any setting in the
model's generation config), the RNG calls and the stopping rule are those of the plain path.

`completion_logprobs_shared` keeps the autograd graph: the prefix's keys/values are not detached,
so the gradient of the prefix (vision tower included) is the sum over its K completions. Both
caches below are idempotent (a second `update` with the same input returns the same tensors), so
a non-reentrant gradient-checkpointing replay recomputes exactly what the first forward computed;
decoder layers are allowed to keep the cache under checkpointing only for the duration of a call.

Batches the family cannot share (`ModelFamily.shareable`, e.g. multimodal rotary positions without
the token types they need; a family with `shares_prefix = False` never), and a model
checkpointed with `use_reentrant=True` (its replay would drop the gradient flowing into the shared
prefix), go through the plain functions instead. Drop-in use, same signatures as `prresq.engine.plain`:

    completion, mask = generate_completions_shared(policy, inputs, k, tokens, SamplingConfig(max_new_tokens=128))
    logp = completion_logprobs_shared(policy, inputs, k, completion, mask)   # inputs NOT expanded
    for prompts, rows in micro_batches(b, k, micro_batch_size):              # whole groups of k
        logp = completion_logprobs_shared(policy, slice_inputs(inputs, prompts, ids), k,
                                          completion[rows], mask[rows])

Equality with the plain path (log-probs, loss, gradients, greedy and sampled generations) is
checked by `tests/test_prefix.py`; `experiments/bench/bench_grpo_step.py` measures the speed-up.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from prresq.config import GRPOConfig
from prresq.engine.base import Engine, Rows
from prresq.engine.plain import (
    PlainEngine,
    completion_logprobs,
    generate_completions,
    generation_mode,
    split_completions,
)
from prresq.engine.rows import TOKEN_KEYS, VisionIds, expand_inputs, micro_batches, slice_inputs
from prresq.models.families import family_of
from prresq.row_sampling import seeded_block
from prresq.sampling import GenerationTokens, SamplingConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- caches
class _RecordLayer(DynamicLayer):
    """Keeps the keys/values of the one forward it sees (a replay overwrites them with the same values)."""

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states, value_states
        return key_states, value_states


class _PrefixLayer(DynamicLayer):
    """Read-only prefix of B rows, served to B*repeats rows in front of each call's new keys/values."""

    def __init__(self, keys: Tensor, values: Tensor, repeats: int) -> None:
        super().__init__()
        self.keys, self.values, self.repeats = keys, values, repeats
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        keys = torch.cat([self.keys.repeat_interleave(self.repeats, dim=0), key_states], dim=-2)
        values = torch.cat([self.values.repeat_interleave(self.repeats, dim=0), value_states], dim=-2)
        return keys, values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]


def _record_cache(num_layers: int) -> Cache:
    return Cache(layers=[_RecordLayer() for _ in range(num_layers)])


def _prefix_cache(record: Cache, repeats: int) -> Cache:
    return Cache(layers=[_PrefixLayer(layer.keys, layer.values, repeats) for layer in record.layers])


# ----------------------------------------------------------------------------- model plumbing
def _num_layers(model: nn.Module) -> int:
    return int(model.config.get_text_config(decoder=True).num_hidden_layers)


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    lm = getattr(getattr(model, "model", None), "language_model", None)
    layers = getattr(lm, "layers", None)
    if layers is None:
        return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    return list(layers)


def _reentrant_checkpointing(model: nn.Module) -> bool:
    """True unless decoder layers are checkpointed with `use_reentrant=False` (or not at all).

    Without the keyword torch's default is reentrant; an unknown checkpoint function counts as reentrant too.
    """
    for layer in _decoder_layers(model):
        if not getattr(layer, "gradient_checkpointing", False):
            continue
        func = getattr(layer, "_gradient_checkpointing_func", None)
        if not isinstance(func, functools.partial):
            return True
        return bool(func.keywords.get("use_reentrant", True))
    return False


@contextlib.contextmanager
def _cache_under_checkpointing(model: nn.Module) -> Iterator[None]:
    """Let checkpointed decoder layers keep `past_key_values` (safe: both caches above are idempotent)."""
    layers = [m for m in _decoder_layers(model) if getattr(m, "gradient_checkpointing", False)]
    had = [("_can_checkpoint_with_cache" in vars(m), vars(m).get("_can_checkpoint_with_cache")) for m in layers]
    for m in layers:
        m._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for m, (present, value) in zip(layers, had):
            if present:
                m._can_checkpoint_with_cache = value
            else:
                del m._can_checkpoint_with_cache


def _prefix_forward(
    model: nn.Module, inputs: dict[str, Tensor], positions: Tensor, cache: Cache, columns: int | None = None
) -> Tensor:
    """Vision encoder + decoder over the prompts (first `columns` columns); fills `cache`, returns last logits [B, V]."""
    sl = slice(None, columns)
    kwargs: dict[str, Any] = {key: inputs[key][:, sl] for key in TOKEN_KEYS if inputs.get(key) is not None}
    # Every other input (pixels, patch grids, ...) is consumed once, by this forward.
    kwargs.update({key: v for key, v in inputs.items() if key not in TOKEN_KEYS and key != "labels" and v is not None})
    with _cache_under_checkpointing(model):
        out = model(**kwargs, position_ids=positions[..., sl], cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1, :]


# ----------------------------------------------------------------------------- public API
@torch.no_grad()
def generate_completions_shared(
    model: nn.Module,
    inputs: dict[str, Tensor],
    k: int,
    tokens: GenerationTokens,
    sampling: SamplingConfig,
    do_sample: bool = True,
    generators: Sequence[torch.Generator] | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample k completions per prompt from one prefill per prompt -> (completion_ids [B*k, T], mask [B*k, T]).

    Same arguments, output layout and sampling distribution as `prresq.engine.plain.generate_completions`
    (with the same `generators`, the same tokens).
    """
    gen_inputs = {key: v for key, v in inputs.items() if key != "labels"}
    input_ids = gen_inputs["input_ids"]
    family = family_of(model)
    if not family.shareable(gen_inputs):
        return generate_completions(model, gen_inputs, k, tokens, sampling, do_sample, generators)
    kwargs = sampling.generate_kwargs(tokens, do_sample, generators)
    with generation_mode(model), seeded_block(generators):
        # `generate`'s positions [..., B, P] grow by one per new token, so the completion continues from the
        # last prompt token as in the plain forward.
        positions = family.generate_positions(model, gen_inputs)
        # Prefill all but the last prompt column (left padding: it is a real token of every row), so that
        # `generate` has one uncached token per row and continues from the shared cache.
        cache = DynamicCache(config=model.config)
        _prefix_forward(model, gen_inputs, positions, cache, columns=input_ids.shape[1] - 1)
        cache.batch_repeat_interleave(k)
        rows = {key: gen_inputs[key].repeat_interleave(k, dim=0) for key in TOKEN_KEYS if key in gen_inputs}
        out = model.generate(
            **rows,
            position_ids=positions.repeat_interleave(k, dim=-2),
            cache=cache,
            num_return_sequences=1,
            **kwargs,
        )
    return split_completions(out, input_ids.shape[1], tokens.eos_ids, tokens.pad_id)


def completion_logprobs_shared(
    model: nn.Module,
    prompt_inputs: dict[str, Tensor],  # NOT expanded: one row per prompt (B rows)
    k: int,
    completion_ids: Tensor,  # [B*k, T], rows i*k .. i*k+k-1 continue prompt i
    completion_mask: Tensor,  # [B*k, T]
    temperature: float = 1.0,
) -> Tensor:
    """Per-token log-probs [B*k, T] of the completions, with one prefix forward per prompt.

    Equal to `completion_logprobs(model, expand_inputs(prompt_inputs, k, ids), ...)`, gradients included.
    """
    inputs = {key: v for key, v in prompt_inputs.items() if key != "labels"}
    b, t = inputs["input_ids"].shape[0], completion_ids.shape[1]
    if completion_ids.shape[0] != b * k:
        raise ValueError(f"{completion_ids.shape[0]} completions for {b} prompts x k={k}")
    reentrant = torch.is_grad_enabled() and model.training and _reentrant_checkpointing(model)
    family = family_of(model)
    if not family.shareable(inputs) or reentrant:
        if reentrant:
            log.warning("shared prefix: use_reentrant=True checkpointing drops the prefix gradient; plain path used")
        expanded = expand_inputs(inputs, k, VisionIds.from_config(model.config))
        return completion_logprobs(model, expanded, completion_ids, completion_mask, temperature)

    positions = family.prompt_positions(model, inputs)  # [..., B, P]
    # The last prompt column is a text token of every row (left padding); the plain forward numbers the
    # completion on from it (e.g. `get_rope_index` over prompt + completion).
    start = positions[..., -1] + 1  # [..., B]
    record = _record_cache(_num_layers(model))
    last = _prefix_forward(model, inputs, positions, record)  # [B, V]: predicts completion token 0
    logits = last.repeat_interleave(k, dim=0).unsqueeze(1)  # [B*k, 1, V]
    if t > 1:
        # Completion tokens 0 .. T-2 predict tokens 1 .. T-1; the last token is never an input.
        steps = torch.arange(t - 1, device=completion_ids.device)
        pos = start.repeat_interleave(k, dim=-1)[..., None] + steps  # [..., B*k, T-1]
        mask = torch.cat(
            [
                inputs["attention_mask"].repeat_interleave(k, dim=0),
                completion_mask[:, : t - 1].to(inputs["attention_mask"]),
            ],
            dim=1,
        )
        with _cache_under_checkpointing(model):
            out = model(
                input_ids=completion_ids[:, : t - 1],
                attention_mask=mask,
                position_ids=pos,
                cache=_prefix_cache(record, k),
                use_cache=True,
            )
        logits = torch.cat([logits, out.logits], dim=1)  # [B*k, T, V]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    # log_softmax + gather without a second [N, T, V] tensor.
    picked = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


class SharedPrefixEngine(Engine):
    """One vision encoding and prompt prefill per image, shared by its K completions.

    Holds a plain engine of the same configuration for what it cannot share (batches its model family
    cannot share exactly, reentrant gradient checkpointing: see the module docstring).
    """

    def __init__(self, cfg: GRPOConfig, tokens: GenerationTokens, vision_ids: VisionIds) -> None:
        super().__init__(cfg, tokens, vision_ids)
        self._plain = PlainEngine(cfg, tokens, vision_ids)

    @property
    def plain(self) -> PlainEngine:
        return self._plain

    def generate(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        k: int | None = None,
        do_sample: bool = True,
        generators: Sequence[torch.Generator] | None = None,
    ) -> tuple[Tensor, Tensor]:
        k = self.cfg.k if k is None else k
        return generate_completions_shared(model, inputs, k, self.tokens, self.cfg, do_sample, generators)

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
