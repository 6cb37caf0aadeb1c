"""Plain Python-loop reference of the PreResQ-R1 terms: the test oracle of `prresq.rewards.preresq`.

Imported by tests/test_rewards_preresq.py and experiments/bench/bench_preresq_rewards.py; not part of the package.

Written independently of :mod:`prresq.rewards.preresq`, in the style of the released training code:
per image, per completion, per pair / triplet, on Python floats (the per-completion mean and std use
float32 tensors, as released). Same conventions as the vectorised module (see its docstring): stable
sorts, ``m = 1`` for the 0/0 case of (c), 0 for images without partners, pairs within a dataset,
tolerances strict on the written decimals (``d < tol - 1e-5``).
Slow by design; never call it in training.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

_SLACK = 1e-5  # same convention as prresq.rewards.preresq.TOLERANCE_SLACK

__all__ = [
    "response_penalty_ref",
    "triplet_response_balance_ref",
    "pairwise_score_rank_ref",
    "triplet_rank_ref",
    "rank_reward_ref",
    "preresq_reward_ref",
]


def _groups(dataset_ids: Tensor | None, batch: int) -> list[list[int]]:
    """For each image, the other images of its dataset (index order)."""
    ids = [0] * batch if dataset_ids is None else [int(x) for x in dataset_ids.tolist()]
    return [[z for z in range(batch) if z != i and ids[z] == ids[i]] for i in range(batch)]


def _out(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _predictions(aspects: Tensor) -> list[list[float]]:
    """Released prediction: per completion, float32 mean of its D numbers."""
    return [[float(row.mean().item()) for row in image] for image in aspects.float()]


def response_penalty_ref(aspects: Tensor, min_std: float = 0.5, scale: float = 0.5) -> Tensor:
    """(a) per completion: ``scale * (min_std - std_pop)`` when the population std is below ``min_std``."""
    rows = []
    for image in aspects.float():
        row = []
        for completion in image:
            std = float(torch.std(completion, unbiased=False).item())
            row.append(scale * (min_std - std) if std < min_std else 0.0)
        rows.append(row)
    return _out(rows)


def triplet_response_balance_ref(
    aspects: Tensor, num_dims: int | None = None, tolerance: float = 0.05, scale: float = 0.5
) -> Tensor:
    """(b) loop over triplets j1 < j2 < j3 and aspects; Python's stable ``sorted`` on the value."""
    values = aspects.tolist()
    D = aspects.shape[-1]
    E = min(D, 4) if num_dims is None else num_dims
    rows = []
    for image in values:
        K = len(image)
        if K < 3:
            rows.append([0.0] * K)
            continue
        gain = [0] * K
        seen = [0] * K
        for j1, j2, j3 in itertools.combinations(range(K), 3):
            for j in (j1, j2, j3):
                seen[j] += 1
            for d in range(E):
                ranked = sorted([(image[j1][d], j1), (image[j2][d], j2), (image[j3][d], j3)], key=lambda x: x[0])
                (lo, lo_j), (mid, mid_j), (hi, hi_j) = ranked
                gain[mid_j] += 1
                if abs(lo - mid) < tolerance - _SLACK:
                    gain[lo_j] += 1
                if abs(hi - mid) < tolerance - _SLACK:
                    gain[hi_j] += 1
        rows.append([scale * gain[k] / (seen[k] * E) if seen[k] else 0.0 for k in range(K)])
    return _out(rows)


def _ord(a: float, b: float) -> float:
    if a > b:
        return 1.0
    if a < b:
        return 0.0
    return 0.5


def pairwise_score_rank_ref(
    preds: list[list[float]], mos: list[float], variant: str = "released", dataset_ids: Tensor | None = None
) -> Tensor:
    """(c) loop over images i, ranks r, partners z of the same dataset (corrected: of a different MOS)."""
    B = len(preds)
    K = len(preds[0]) if B else 0
    partners = _groups(dataset_ids, B)
    ranked = [sorted(((v, k) for k, v in enumerate(row)), key=lambda x: x[0]) for row in preds]
    rows = []
    for i in range(B):
        out = [0.0] * K
        for r in range(K):
            qi, k_orig = ranked[i][r]
            total = 0.0
            used = 0
            for z in partners[i]:
                if variant != "released" and mos[i] == mos[z]:
                    continue  # corrected: tied MOS pairs are left out
                used += 1
                qz = ranked[z][r][0]
                c = 1.0 if _ord(qi, qz) == _ord(mos[i], mos[z]) else 0.0
                gap = abs(mos[i] - mos[z])
                denom = gap + abs(qi - mos[i]) + abs(qz - mos[z])
                m = gap / denom if denom > 0 else 1.0
                if variant == "released":
                    total += math.sqrt(c * m) + math.sqrt((1 - c) * (1 - m))
                elif c:  # right order
                    total += (1 + m) / 2
                else:  # wrong order (or a predicted tie of different MOS)
                    total += m / 2
            out[k_orig] = total / used if used else 0.0
        rows.append(out)
    return _out(rows)


def triplet_rank_ref(preds: list[list[float]], mos: list[float], dataset_ids: Tensor | None = None) -> Tensor:
    """(d) loop over images i, completion index k and unordered partner pairs (a, b), a < b."""
    B = len(preds)
    K = len(preds[0]) if B else 0
    partners = _groups(dataset_ids, B)
    rows = []
    for i in range(B):
        pairs = list(itertools.combinations(partners[i], 2))
        out = []
        for k in range(K):
            if not pairs:
                out.append(0.0)
                continue
            acc = 0.0
            for a, b in pairs:
                p = (preds[i][k], preds[a][k], preds[b][k])
                g = (mos[i], mos[a], mos[b])
                hits = sum(1.0 for m, n in ((0, 1), (1, 2), (0, 2)) if (p[m] > p[n]) == (g[m] > g[n]))
                acc += hits / 3.0
            out.append(acc / len(pairs))
        rows.append(out)
    return _out(rows)


def rank_reward_ref(preds: list[list[float]], mos: list[float], tolerance: float = 0.02) -> Tensor:
    """(e) stable argsort of ``preds + [mos]``; a repeated prediction takes its first occurrence's position."""
    rows = []
    for row, gt in zip(preds, mos):
        values = row + [gt]
        order = sorted(range(len(values)), key=lambda idx: values[idx])  # stable
        position = {idx: pos for pos, idx in enumerate(order)}
        gt_pos = position[len(row)]
        out = []
        for p in row:
            if abs(p - gt) < tolerance - _SLACK:
                out.append(1.0)
            else:
                first = values.index(p)
                out.append(math.exp(-abs(position[first] - gt_pos) / len(values)))
        rows.append(out)
    return _out(rows)


def preresq_reward_ref(
    aspects: Tensor,
    mos: Tensor,
    task: str = "iqa",
    variant: str = "released",
    dataset_ids: Tensor | None = None,
) -> Tensor:
    """Released combination from the loop terms (IQA divides by 3 and adds Rank)."""
    preds = _predictions(aspects)
    g = [float(x) for x in mos.float().tolist()]
    num_dims = min(4 if task == "iqa" else 2, aspects.shape[-1])
    total = (
        0.375 * pairwise_score_rank_ref(preds, g, variant, dataset_ids)
        - response_penalty_ref(aspects)
        + 0.5 * triplet_response_balance_ref(aspects, num_dims=num_dims)
        + 0.125 * triplet_rank_ref(preds, g, dataset_ids)
    )
    if task == "iqa":
        total = (total + rank_reward_ref(preds, g)) / 3.0
    return total
