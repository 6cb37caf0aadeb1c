"""Rewards under data parallelism: rank against this process's batch or the global step (``reward.scope``).

`compute_rewards` is what the training module calls after parsing a rollout. The mix's ``scope`` says
which images the pair terms (fidelity Eq. 1-3, PreResQ preference branch) compare each image with:

- ``local`` (released behaviour of both papers): the B images of this process's own batch; nothing is
  gathered, so with 8 devices x 8 images each image has 7 partners.
- ``global``: under DDP (or DeepSpeed) the parsed scores, MOS and dataset ids of every process are
  all-gathered, so each image has 63 partners; each process keeps its own rows.

The caller standardises the local rows' totals into Eq. 4 advantages (`group_advantages`). With one
process both scopes are a plain call.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from prresq.rewards.registry import RewardInputs


def gather_rows(t: Tensor) -> tuple[Tensor, slice]:
    """All-gather equal-sized per-process tensors along dim 0 -> (global tensor, this process's rows)."""
    b = t.shape[0]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t, slice(0, b)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    rank = dist.get_rank()
    return torch.cat(parts), slice(rank * b, (rank + 1) * b)


def compute_rewards(
    reward_mix: Any, texts: list[str], scores: Tensor, aspects: Tensor, mos: Tensor, dataset_ids: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Rewards of this process's rows, ranked within ``reward_mix.scope`` (the caller standardises them, Eq. 4).

    ``global``: under DDP the parsed scores, MOS and dataset ids of all processes are gathered first, so
    the fidelity/PreResQ pair terms see the whole global batch; each process keeps its own rows.
    ``local``: the terms see this process's batch only (the released code's per-device ranking).
    Returns (total [B, K], per-term {name: [B, K]}); non-finite totals are set to 0 with a warning.
    """
    if reward_mix.scope == "global":
        g_scores, local = gather_rows(scores)
        g_aspects, _ = gather_rows(aspects)
        g_mos, _ = gather_rows(mos)
        g_ids, _ = gather_rows(dataset_ids)
    else:
        g_scores, g_aspects, g_mos, g_ids, local = scores, aspects, mos, dataset_ids, slice(0, scores.shape[0])
    inputs = RewardInputs(texts=texts, scores=g_scores, aspects=g_aspects, mos=g_mos, dataset_ids=g_ids, local=local)
    total, terms = reward_mix(inputs)
    if not torch.isfinite(total).all():  # one bad reward must not turn the whole update into NaN
        bad = [name for name, term in terms.items() if not torch.isfinite(term).all()]
        warnings.warn(f"non-finite rewards from {bad}; set to 0 for this step", RuntimeWarning, stacklevel=2)
        total = torch.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0)
    return total, terms
