"""PreResQ-R1 (PRPO) reward terms as released, vectorised over ``[B, K, D]`` / ``[B, K]``.

Notation: B images, K completions each, D aspect scores per completion (IQA: 5, VQA: 2);
``s[i,k,:]`` the aspects, ``q[i,k] = mean_d s[i,k,d]`` the prediction, ``g[i]`` the MOS in [1, 5].
Every term follows the authors' released training code (``DanceSkyCode/General-Visual-Quality-RL``,
``src/grpo_preres_r1.py`` / ``src/grpo_preres_VQA_r1.py``), read and re-derived, not copied:

- (a) :func:`response_penalty` ``P = scale * max(0, min_std - std_pop(s[i,k,:]))`` (subtracted).
- (b) :func:`triplet_response_balance` over all C(K,3) triplets of an image's completions and the first
  E aspects: stable sort of the three values; median +1, min / max +1 when within ``tolerance`` of the
  median; ``Bal = scale * gain / (C(K-1,2) * E)``.
- (c) :func:`pairwise_score_rank` rank r of image i against rank r of image z (fidelity-like form).
- (d) :func:`triplet_rank` ordering agreement on triplets (i, a, b) at the same completion index.
- (e) :func:`rank_reward` position of each prediction relative to the MOS within ``[q[i,:], g[i]]``.

:func:`preresq_reward` combines them: IQA ``(0.375 Pair - P + 0.5 Bal + 0.125 Trip + Rank) / 3``,
VQA ``0.375 Pair - P + 0.5 Bal + 0.125 Trip`` (the format reward is a separate term).

Details the design note leaves open, as we read the released code:

- (b) counts are per (triplet, aspect); a completion is in C(K-1,2) triplets, so the normaliser is the
  same for all k. K < 3: zeros (released: the whole reward returns early; we zero only this term).
  E defaults to ``min(D, 4)`` (IQA: 4 of 5 aspects, background ignored; VQA: 2 of 2).
- (c) sorting is stable (ties keep completion order), the value at rank r is mapped back to the completion
  that sits at rank r. The released ``m`` is 0/0 when the two MOS tie and both predictions are exact;
  we set ``m = 1`` there (then ``c = 1``): an exact prediction earns the term's maximum, 1, rather than NaN.
  No partner (B = 1 or alone in its dataset): 0, as released for B = 1. ``variant="corrected"`` replaces
  the released form, in which a wrong order can earn more than a right one, by ``(c + m) / 2`` over the
  partners with a different MOS (formula and proof in :func:`pairwise_score_rank`).
- (d) the triplet is ordered (i, a, b) with a < b, pairs (i,a), (a,b), (i,b), strict ``>`` on both
  sides (a predicted tie ``q_m == q_n`` agrees whenever ``g_m <= g_n``, as released). Fewer than two
  partners: 0 (released: the mean of nothing, NaN).
- (e) positions come from a stable ascending sort of ``[q[i,0..K-1], g[i]]`` (MOS last, so after equal
  predictions; the released ``argsort`` does not ask for stability, we do); a repeated prediction takes the position of its first occurrence, as the released lookup
  ``(temp == p).nonzero()[0]`` does. Closed form: ``pos(q) = #{x < q}``, ``pos(g) = #{k: q[i,k] <= g}``.
- (c) and (d) pair images only within a dataset when ``dataset_ids`` is given (the released sampler
  draws each per-device batch from one dataset).
- Tolerances (0.05 in (b), 0.02 in (e)) are strict and exact on the decimals the model wrote: a
  difference counts as within ``tolerance`` only when it is below it by more than ``TOLERANCE_SLACK``
  (1e-5, well above float32 rounding of values in [0, 10]). The model writes two decimals, so gaps of
  exactly 0.05 are common; the released code decides them by float64 rounding (3.05 - 3.00 counts,
  1.05 - 1.00 does not) and float32 would decide them differently again; here neither counts.
- Order comparisons (sorts, ``>``, ties) run on the float32 values, as released.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from prresq.rewards.fidelity import same_dataset_mask

__all__ = [
    "PAIRWISE_VARIANTS",
    "response_penalty",
    "triplet_response_balance",
    "pairwise_score_rank",
    "triplet_rank",
    "rank_reward",
    "preresq_reward",
    "preresq_terms",
    "PRERESQ_TASK_DIMS",
    "PRERESQ_WEIGHTS",
    "TOLERANCE_SLACK",
]

# Aspects used by the triplet-response balance per task (released num_element_dims).
PRERESQ_TASK_DIMS = {"iqa": 4, "vqa": 2}
PAIRWISE_VARIANTS = ("released", "corrected")  # pairwise score-and-rank: as released | the paper's corrected form
# Released combination: R = scale * sum(weight * term); IQA scale 1/3 (Rank included), VQA scale 1.
PRERESQ_WEIGHTS = {
    "iqa": {
        "pairwise_score_rank": 0.375,
        "response_penalty": -1.0,
        "response_balance": 0.5,
        "triplet_rank": 0.125,
        "rank": 1.0,
    },
    "vqa": {"pairwise_score_rank": 0.375, "response_penalty": -1.0, "response_balance": 0.5, "triplet_rank": 0.125},
}
_PRERESQ_SCALE = {"iqa": 1.0 / 3.0, "vqa": 1.0}
# A difference d is "within tol" when d < tol - TOLERANCE_SLACK (exact-decimal strict comparison).
TOLERANCE_SLACK = 1e-5


def _check_task(task: str) -> None:
    if task not in PRERESQ_TASK_DIMS:
        raise ValueError(f"task must be one of {sorted(PRERESQ_TASK_DIMS)}, got {task!r}")


def response_penalty(aspects: Tensor, min_std: float = 0.5, scale: float = 0.5) -> Tensor:
    """(a) ``P[i,k] = scale * max(0, min_std - std_pop(s[i,k,:]))``; ``[B, K, D] -> [B, K]`` (subtract it)."""
    std = aspects.std(-1, unbiased=False)
    return scale * (min_std - std).clamp_min(0)


@lru_cache(maxsize=32)
def _triplets(k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Triplets ``[C(K,3), 3]`` (rows j1 < j2 < j3) and their member incidence ``[3 * C(K,3), K]``."""
    trip = torch.combinations(torch.arange(k, device=device), r=3)
    incidence = torch.nn.functional.one_hot(trip.T.reshape(-1), k)  # row p * T + t: member p of triplet t
    return trip, incidence


def triplet_response_balance(
    aspects: Tensor, num_dims: int | None = None, tolerance: float = 0.05, scale: float = 0.5
) -> Tensor:
    """(b) Triplet-response balance ``[B, K, D] -> [B, K]``: ``scale * gain[k] / (C(K-1,2) * E)``.

    For each of the C(K,3) triplets of one image's completions and each of the first E aspects, the
    three values are sorted (stable): the median gains 1, the min and the max gain 1 each when within
    ``tolerance`` of the median (strict, exact on decimals: see ``TOLERANCE_SLACK``). K < 3: zeros.
    Computed without sorting: ``med = max(min(a, b), min(max(a, b), c))`` and a member gains 1 when
    ``|x - med| < tolerance`` (which the median itself always is); with a tolerance <= 0 only the median
    gains, found by its stable rank.
    """
    B, K, D = aspects.shape
    E = min(D, 4) if num_dims is None else int(num_dims)
    if not 1 <= E <= D:
        raise ValueError(f"num_dims must be in [1, {D}], got {num_dims}")
    dtype = torch.promote_types(aspects.dtype, torch.float32)
    if K < 3:
        return aspects.new_zeros((B, K), dtype=dtype)
    trip, incidence = _triplets(K, aspects.device)
    x = aspects[..., :E].to(dtype).transpose(1, 2)  # [B, E, K]
    a, b, c = x[..., trip[:, 0]], x[..., trip[:, 1]], x[..., trip[:, 2]]  # [B, E, T], members in index order
    med = torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))
    within = tolerance - TOLERANCE_SLACK
    if within > 0:
        members = [(v - med).abs() < within for v in (a, b, c)]
    else:  # only the median: stable rank 1 (ties broken by completion index)
        ranks = [
            (b < a).long() + (c < a),
            (a < b).long() + (c < b) + (a == b),
            (a < c).long() + (b < c) + (a == c) + (b == c),
        ]
        members = [r == 1 for r in ranks]
    gains = torch.cat([m.sum(1, dtype=dtype) for m in members], dim=1)  # [B, 3T]: gains summed over aspects
    gain = gains @ incidence.to(dtype)  # [B, K]
    return gain * (scale / (math.comb(K - 1, 2) * E))


def pairwise_score_rank(
    scores: Tensor, mos: Tensor, variant: str = "released", dataset_ids: Tensor | None = None
) -> Tensor:
    """(c) Pairwise score-and-rank ``[B, K] -> [B, K]``.

    Sort each image's K predictions (stable); rank r of image i meets rank r of every other image z:
    ``c = 1[ord(qi_r, qz_r) == ord(g_i, g_z)]`` (ord: 1 for >, 0 for <, 0.5 for =),
    ``m = |g_i - g_z| / (|g_i - g_z| + |qi_r - g_i| + |qz_r - g_z|)``; mean over z, mapped back to the
    completion at rank r. No partner: 0.

    ``"released"`` (the authors' code): ``r = sqrt(c m) + sqrt((1-c)(1-m))`` over every partner z; 0/0
    (tied MOS, exact predictions) -> ``m = 1``. Its flaw: a wrong order earns ``sqrt(1 - m)``, which grows
    with the error. MOS (4, 2): predictions (1, 5) (wrong order) give ``m = 2/8``, ``r = sqrt(0.75) = 0.866``;
    predictions (4.5, 1.5) (right order) give ``m = 2/3``, ``r = sqrt(2/3) = 0.816``. On tied MOS ``m = 0``
    whatever the predictions, so any two different predictions earn the maximum, 1.

    ``"corrected"`` (ours): ``r = (c + m) / 2`` over the partners z whose MOS differs from g_i.

    - Order first: when ``qi_r`` and ``qz_r`` are not in the MOS order (including a predicted tie),
      ``(g_i - g_z)`` is covered by the two errors, so ``m <= 1/2`` and ``r = m/2 <= 1/4``; a right order
      earns ``r = (1 + m)/2 >= 1/2``. A wrong order never earns more than a right one.
    - Closeness second: within either case ``r`` grows as the errors shrink (``m = 1``, ``r = 1`` for exact
      predictions). MOS (4, 2): (1, 5) earns 0.125, (4.5, 1.5) earns 5/6.
    - Tied MOS: the pair has no order to get right, and ``m = 0`` whatever the predictions (0/0 when both
      are exact), so it carries no signal: it is left out of the mean. An image whose partners all tie
      with it gets 0.
    """
    if variant not in PAIRWISE_VARIANTS:
        raise ValueError(f"variant must be 'released' or 'corrected', got {variant!r}")
    dtype = torch.promote_types(scores.dtype, torch.float32)
    B = scores.shape[0]
    qs, order = torch.sort(scores.to(dtype), dim=1, stable=True)  # [B, K]
    g = mos.to(device=qs.device, dtype=dtype)
    dg = (g[:, None] - g[None, :])[:, :, None]  # [B(i), B(z), 1]
    c = torch.sign(qs[:, None, :] - qs[None, :, :]) == torch.sign(dg)  # ord(qi_r, qz_r) == ord(g_i, g_z)
    gap = dg.abs()
    err = (qs - g[:, None]).abs()  # [B, K]
    denom = gap + err[:, None, :] + err[None, :, :]  # [B, B, K]
    m = torch.where(denom > 0, gap / denom, torch.ones((), dtype=dtype, device=qs.device))
    eye = torch.eye(B, dtype=torch.bool, device=qs.device)
    partner = same_dataset_mask(dataset_ids, B, qs.device) & ~eye  # [B, B]
    if variant == "released":  # sqrt(c m) + sqrt((1-c)(1-m)) with c in {0, 1}
        r = torch.where(c, m, 1 - m).sqrt()
    else:
        r = (c.to(dtype) + m) / 2
        partner = partner & (dg[..., 0] != 0)  # tied MOS: no order, no closeness signal
    partner = partner.to(dtype)
    by_rank = torch.bmm(partner[:, None, :], r).squeeze(1) / partner.sum(1, keepdim=True).clamp_min(1)
    return torch.empty_like(by_rank).scatter_(1, order, by_rank)


def triplet_rank(scores: Tensor, mos: Tensor, dataset_ids: Tensor | None = None) -> Tensor:
    """(d) Triplet ranking ``[B, K] -> [B, K]``.

    For completion index k and each unordered pair {a < b} of other images (same dataset):
    ``t = (f(i,a) + f(a,b) + f(i,b)) / 3`` with ``f(m,n) = 1[(q[m,k] > q[n,k]) == (g_m > g_n)]``; mean
    over the pairs. Computed in O(B^2 K): with the n_i partners of image i,
    ``sum_pairs [f(i,a) + f(i,b)] = (n_i - 1) sum_a f(i,a)`` and ``sum_{a<b} f(a,b)`` is the dataset's
    total over ordered-by-index pairs minus the pairs that contain i.
    """
    dtype = torch.promote_types(scores.dtype, torch.float32)
    q = scores.to(dtype)
    B, K = q.shape
    g = mos.to(device=q.device, dtype=dtype)
    f = ((q[:, None, :] > q[None, :, :]) == (g[:, None] > g[None, :])[:, :, None]).to(dtype)  # [B(m), B(n), K]
    same = same_dataset_mask(dataset_ids, B, q.device)
    eye = torch.eye(B, dtype=torch.bool, device=q.device)
    partner = (same & ~eye).to(dtype)  # [B, B]
    n = partner.sum(1)  # [B]
    upper = (same & torch.ones(B, B, dtype=torch.bool, device=q.device).triu(1)).to(dtype)
    w = f * upper[:, :, None]  # f(a, b) for a < b in the same dataset
    row, col = w.sum(1), w.sum(0)  # [B, K]: pairs (a, .) and (., b)
    dataset_total = same.to(dtype) @ row  # [B, K]: all a < b in i's dataset
    pairs_ab = dataset_total - row - col  # drop the pairs that contain i
    anchor = (n - 1)[:, None] * torch.einsum("iak,ia->ik", f, partner)
    num_pairs = n * (n - 1) / 2
    t = (anchor + pairs_ab) / (3 * num_pairs.clamp_min(1))[:, None]
    return torch.where((num_pairs > 0)[:, None], t, torch.zeros_like(t))


def rank_reward(scores: Tensor, mos: Tensor, tolerance: float = 0.02) -> Tensor:
    """(e) Rank reward ``[B, K] -> [B, K]`` (IQA only).

    1 if ``|q[i,k] - g_i| < tolerance`` (strict, exact on decimals), else ``exp(-|pos(q[i,k]) - pos(g_i)| / (K + 1))`` with positions in
    the stable ascending sort of ``[q[i,:], g_i]``.
    """
    dtype = torch.promote_types(scores.dtype, torch.float32)
    q = scores.to(dtype)
    K = q.shape[1]
    g = mos.to(device=q.device, dtype=dtype)[:, None]  # [B, 1]
    pos_q = (q[:, None, :] < q[:, :, None]).sum(-1) + (g < q).to(torch.long)  # #{x < q} in [q, g]
    pos_g = (q <= g).sum(-1, keepdim=True)  # the MOS sorts after equal predictions
    far = torch.exp(-(pos_q - pos_g).abs().to(dtype) / (K + 1))
    return torch.where((q - g).abs() < tolerance - TOLERANCE_SLACK, torch.ones_like(far), far)


def preresq_terms(
    aspects: Tensor,
    mos: Tensor,
    task: str = "iqa",
    variant: str = "released",
    dataset_ids: Tensor | None = None,
) -> dict[str, Tensor]:
    """The released PreResQ-R1 terms ``{name: [B, K]}`` with released constants (Rank only for IQA)."""
    _check_task(task)
    q = aspects.mean(-1)  # released prediction: mean of the D numbers (unclamped)
    terms = {
        "pairwise_score_rank": pairwise_score_rank(q, mos, variant=variant, dataset_ids=dataset_ids),
        "response_penalty": response_penalty(aspects),
        "response_balance": triplet_response_balance(aspects, num_dims=min(PRERESQ_TASK_DIMS[task], aspects.shape[-1])),
        "triplet_rank": triplet_rank(q, mos, dataset_ids=dataset_ids),
    }
    if task == "iqa":
        terms["rank"] = rank_reward(q, mos)
    return terms


def preresq_reward(
    aspects: Tensor,
    mos: Tensor,
    task: str = "iqa",
    variant: str = "released",
    dataset_ids: Tensor | None = None,
) -> Tensor:
    """Released PreResQ-R1 reward ``[B, K]`` without the format term.

    IQA: ``(0.375 Pair - P + 0.5 Bal + 0.125 Trip + Rank) / 3``; VQA: ``0.375 Pair - P + 0.5 Bal + 0.125 Trip``.
    """
    terms = preresq_terms(aspects, mos, task=task, variant=variant, dataset_ids=dataset_ids)
    total = sum(PRERESQ_WEIGHTS[task][name] * value for name, value in terms.items())
    return total * _PRERESQ_SCALE[task]
