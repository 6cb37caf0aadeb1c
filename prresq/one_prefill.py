"""The greedy answer and N sampled answers of `scoring.mode=both` from one prompt prefill per item.

`prresq.scoring.score_batch` used to run two prefills per item for `both`: the greedy pass (the plain
engine: vision encoder + prompt) and the N-sample pass on the shared prefix
(`prresq.engine.shared.generate_completions_shared`: again vision encoder + prompt). Here the vision
encoder and the prompt (all but its last column, as in `generate_completions_shared`) run once; the greedy
answer continues from a copy of that cache and the N samples from the cache repeated N times. Greedy
decoding draws no random numbers, so the samples draw the same ones as on the two-pass path: same seed,
same tokens (`tests/test_one_prefill.py`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache

from prresq.engine.plain import generate_completions, generation_mode, split_completions
from prresq.engine.rows import TOKEN_KEYS
from prresq.engine.shared import _prefix_forward, generate_completions_shared
from prresq.models.families import family_of
from prresq.row_sampling import seeded_block
from prresq.sampling import GenerationTokens, SamplingConfig

Completions = tuple[Tensor, Tensor]  # (completion ids [rows, T], mask [rows, T])


@torch.no_grad()
def generate_greedy_and_samples(
    model: nn.Module,
    inputs: dict[str, Tensor],
    n: int,
    tokens: GenerationTokens,
    sampling: SamplingConfig,
    generators: Sequence[torch.Generator] | None = None,
) -> tuple[Completions, Completions]:
    """(greedy completions [B, T], N sampled completions [B*N, T']) from one prefill per prompt.

    `generators`: one per sampled row (`prresq.row_sampling`), as in `generate_completions_shared`."""
    gen_inputs = {key: v for key, v in inputs.items() if key != "labels"}
    family = family_of(model)
    if not family.shareable(gen_inputs):  # the two-pass path, as before
        greedy = generate_completions(model, gen_inputs, 1, tokens, sampling, do_sample=False)
        return greedy, generate_completions_shared(model, gen_inputs, n, tokens, sampling, generators=generators)
    width = gen_inputs["input_ids"].shape[1]
    with generation_mode(model), seeded_block(generators):
        positions = family.generate_positions(model, gen_inputs)
        cache = DynamicCache(config=model.config)
        _prefix_forward(model, gen_inputs, positions, cache, columns=width - 1)
        greedy_cache = copy.deepcopy(cache)
        rows = {key: gen_inputs[key] for key in TOKEN_KEYS if key in gen_inputs}
        greedy = model.generate(
            **rows,
            position_ids=positions,
            cache=greedy_cache,
            num_return_sequences=1,
            **sampling.generate_kwargs(tokens, False),
        )
        cache.batch_repeat_interleave(n)
        sampled = model.generate(
            **{key: v.repeat_interleave(n, dim=0) for key, v in rows.items()},
            position_ids=positions.repeat_interleave(n, dim=-2),
            cache=cache,
            num_return_sequences=1,
            **sampling.generate_kwargs(tokens, True, generators),
        )
    return (
        split_completions(greedy, width, tokens.eos_ids, tokens.pad_id),
        split_completions(sampled, width, tokens.eos_ids, tokens.pad_id),
    )
