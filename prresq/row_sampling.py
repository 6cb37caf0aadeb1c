"""Seeded sampling per answer: each sampled answer draws from its own generator, seeded by its item.

Scoring with a seed (`prresq.eval`, `prresq.infer`, the held-out table of `prresq.train`) samples the N
answers of item `id` with N generators seeded by `item_seed(seed, id, j)`, j = 0..N-1. Each generation step
draws one uniform number per answer from that answer's generator and picks the token where it falls in the
cumulative distribution (inverse-CDF sampling of the same distribution `generate` samples). So an item's
answers depend on (seed, item id, sample index) only: not on the batch size, the other items of its batch,
their padding, the number of ranks, or what was scored before. The global torch RNG is neither read nor
moved (`generate`'s own draw runs under `torch.random.fork_rng`).

`RowSampler` is a logits processor: `generate` runs its usual processors (suppressed tokens, min_new_tokens,
repetition penalty of the model's generation config) before it; it applies the sampling config's
temperature, top-k and top-p (Hugging Face's warpers, in `generate`'s order), draws each row's token, and
hands `generate` a one-hot distribution, which `generate`'s own warpers and draw leave as it is. Rows are
laid out as everywhere else (`prresq.engine.rows`): answer j of prompt i is row i*N + j, the layout of
both engines, so the plain and the shared-prefix engines draw the same tokens from the same generators.

    gens = row_generators(seed, ids, n)               # B*n generators
    completion, mask = engine.generate(model, inputs, k=n, generators=gens)
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import LogitsProcessor
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


def item_seed(seed: int, item_id: str, sample: int) -> int:
    """The seed of sampled answer `sample` of item `item_id`: a hash of the run's seed, the id and the index (63 bits)."""
    digest = hashlib.sha256("\x1f".join([str(seed), str(item_id), str(sample)]).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def row_generators(seed: int, ids: Sequence[str], n: int) -> list[torch.Generator]:
    """One CPU generator per answer row (row i*n + j: answer j of item ids[i]), seeded by `item_seed`."""
    return [torch.Generator().manual_seed(item_seed(seed, item_id, j)) for item_id in ids for j in range(n)]


@contextlib.contextmanager
def global_rng_kept() -> Iterator[None]:
    """Run a block and then put the global random states back where they were: torch's (CPU and every CUDA
    device), NumPy's and Python's `random`. A block may reseed them (e.g. for its loader's workers)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def seeded_block(generators: Sequence[torch.Generator] | None) -> contextlib.AbstractContextManager:
    """`global_rng_kept()` for a seeded generation (`generators` given), else nothing."""
    return global_rng_kept() if generators is not None else contextlib.nullcontext()


class RowSampler(LogitsProcessor):
    """Samples each row's next token with that row's generator; returns scores that keep only that token.

    `temperature`, `top_k`, `top_p` as in `prresq.sampling.SamplingConfig` (and as `generate` applies them).
    """

    def __init__(
        self, generators: Sequence[torch.Generator], temperature: float, top_k: int | None, top_p: float
    ) -> None:
        self.generators = list(generators)
        self.warpers: list[Any] = []
        if temperature is not None and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k is not None and top_k != 0:
            self.warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        rows = scores.shape[0]
        if rows != len(self.generators):
            raise ValueError(f"seeded sampling: {rows} rows to sample but {len(self.generators)} generators")
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.double(), dim=-1)
        cdf = probs.cumsum(-1)
        uniforms = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        target = uniforms.to(cdf.device) * cdf[:, -1]
        picked = torch.searchsorted(cdf, target[:, None], right=True).squeeze(1)
        # Rounding can put the target past the last step of the CDF: take the last token with mass then.
        last = probs.shape[-1] - 1 - torch.argmax((probs > 0).flip(-1).to(torch.int8), dim=-1)
        picked = torch.minimum(picked, last)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, picked[:, None], 0.0)
        return out
