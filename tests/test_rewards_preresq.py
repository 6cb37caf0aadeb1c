"""PreResQ-R1 reward terms: hand-derived small cases, edge cases and vectorised == loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from preresq_reference import (
    pairwise_score_rank_ref,
    preresq_reward_ref,
    rank_reward_ref,
    response_penalty_ref,
    triplet_rank_ref,
    triplet_response_balance_ref,
)

from prresq.rewards import preresq_reward
from prresq.rewards.preresq import (
    pairwise_score_rank,
    rank_reward,
    response_penalty,
    triplet_rank,
    triplet_response_balance,
)


def _t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _close(actual: torch.Tensor, expected: list | torch.Tensor, atol: float = 1e-6) -> None:
    exp = expected if isinstance(expected, torch.Tensor) else _t(expected)
    torch.testing.assert_close(actual, exp, atol=atol, rtol=0)


# ---------------------------------------------------------------- (a) response penalty


def test_response_penalty_by_hand() -> None:
    aspects = _t(
        [
            [
                [1, 1, 1, 1, 1],  # std 0 -> 0.5 * (0.5 - 0) = 0.25
                [1, 2, 3, 4, 5],  # population std sqrt(2) > 0.5 -> 0
                [3, 3, 3, 3.5, 2.5],  # mean 3, var_pop = (0.25 + 0.25) / 5 = 0.1 -> 0.5 * (0.5 - sqrt(0.1))
            ]
        ]
    )
    _close(response_penalty(aspects), [[0.25, 0.0, 0.5 * (0.5 - math.sqrt(0.1))]])
    # constants are arguments: min_std 2, scale 1 -> the second completion now pays 2 - sqrt(2)
    _close(response_penalty(aspects, min_std=2.0, scale=1.0)[0, 1:2], [2 - math.sqrt(2)])


# ---------------------------------------------------------------- (b) triplet-response balance


def test_triplet_response_balance_by_hand() -> None:
    # K = 3 -> one triplet; D = 5, E = 4 (the 5th aspect, background, is ignored).
    # aspect 0: (1, 2, 3)        -> median c1 +1; min/max 1 away -> nothing
    # aspect 1: (3, 3.02, 5)     -> median c1 +1; min c0 within 0.02 < 0.05 -> +1
    # aspect 2: (2, 2, 2)        -> ties, stable: c0 min, c1 median, c2 max; all within -> +1 each
    # aspect 3: (5, 1, 3)        -> sorted 1 (c1), 3 (c2), 5 (c0): median c2 +1
    # aspect 4: (9, 9, 9)        -> ignored (would give +1 each)
    # gain = [2, 3, 2]; normaliser C(K-1, 2) * E = 1 * 4 -> Bal = 0.5 * gain / 4
    aspects = _t([[[1, 3, 2, 5, 9], [2, 3.02, 2, 1, 9], [3, 5, 2, 3, 9]]])
    _close(triplet_response_balance(aspects), [[0.25, 0.375, 0.25]])
    # E = 5 explicitly: aspect 4 adds +1 to each -> gain [3, 4, 3] / (1 * 5)
    _close(triplet_response_balance(aspects, num_dims=5), [[0.3, 0.4, 0.3]])


def test_triplet_response_balance_exact_tolerance_is_not_within() -> None:
    # Gaps of exactly 0.05 between two-decimal numbers are NOT within 0.05 (strict), whatever the float
    # rounding (float64 would say 3.05 - 3.00 < 0.05 but 1.05 - 1.00 >= 0.05; float32 differs again).
    # aspect 0: (1.00, 1.05, 2.00) -> median c1 +1 only; aspect 1: (3.00, 3.05, 3.50) -> median c1 +1 only;
    # aspect 2: (3.00, 3.04, 3.09) -> median c1 +1, min (0.04) +1, max (0.05) nothing. E = 3.
    # gain = [1, 3, 0]; normaliser 1 * 3 -> 0.5 * gain / 3
    aspects = _t([[[1.00, 3.00, 3.00], [1.05, 3.05, 3.04], [2.00, 3.50, 3.09]]])
    _close(triplet_response_balance(aspects), [[0.5 / 3, 0.5, 0.0]])


def test_triplet_response_balance_zero_tolerance_median_only() -> None:
    # tolerance 0: only the median gains. Values (2, 2, 1): stable sort 1 (c2), 2 (c0), 2 (c1) -> median c0.
    aspects = _t([[[2.0], [2.0], [1.0]]])
    _close(triplet_response_balance(aspects, tolerance=0.0), [[0.5, 0.0, 0.0]])  # 0.5 * 1 / (1 * 1)


def test_triplet_response_balance_k4_normaliser() -> None:
    # K = 4, D = 2 (VQA, E = 2), every value equal: every triplet gives +1 to all three members on
    # both aspects; completion k is in C(3, 2) = 3 triplets -> gain 3 * 2 = 6 = the maximum -> 0.5.
    aspects = torch.full((2, 4, 2), 3.0)
    _close(triplet_response_balance(aspects), torch.full((2, 4), 0.5))


def test_triplet_response_balance_k_below_3_is_zero() -> None:
    for K in (1, 2):
        out = triplet_response_balance(torch.rand(3, K, 5))
        _close(out, torch.zeros(3, K))


# ---------------------------------------------------------------- (c) pairwise score-and-rank


def test_pairwise_score_rank_by_hand() -> None:
    # MOS [4, 2]. Image 0: q = [4.5, 1.5] -> sorted [1.5 (k1), 4.5 (k0)]; image 1: q = [2.5, 3.0] sorted.
    # rank 0: 1.5 vs 2.5: predicted <, MOS > -> c = 0; m = 2 / (2 + |1.5-4| + |2.5-2|) = 2 / 5 = 0.4
    #         released sqrt(0 * m) + sqrt(1 * 0.6) = sqrt(0.6); corrected m / 2 = 0.2. Goes to image 0's k1,
    #         image 1's k0.
    # rank 1: 4.5 vs 3.0: c = 1; m = 2 / (2 + 0.5 + 1.0) = 4/7 -> released sqrt(4/7), corrected (1 + 4/7) / 2 = 11/14.
    q, mos = _t([[4.5, 1.5], [2.5, 3.0]]), _t([4.0, 2.0])
    _close(pairwise_score_rank(q, mos), [[math.sqrt(4 / 7), math.sqrt(0.6)], [math.sqrt(0.6), math.sqrt(4 / 7)]])
    _close(pairwise_score_rank(q, mos, "corrected"), [[11 / 14, 0.2], [0.2, 11 / 14]])


def test_corrected_pairwise_never_pays_a_wrong_order_more_than_a_right_one() -> None:
    """Pins item 6: with MOS (4, 2) the released form pays the wrong order (1, 5) sqrt(1 - 2/8) = 0.866 and
    the right order (4.5, 1.5) sqrt(2/3) = 0.816; the corrected (c + m) / 2 pays 2/8 / 2 = 0.125 and
    (1 + 2/3) / 2 = 5/6 (m = |g_i - g_z| / (|g_i - g_z| + |q_i - g_i| + |q_z - g_z|), K = 1)."""
    mos = _t([4.0, 2.0])
    wrong, right = _t([[1.0], [5.0]]), _t([[4.5], [1.5]])
    _close(pairwise_score_rank(wrong, mos), torch.full((2, 1), math.sqrt(0.75)))
    _close(pairwise_score_rank(right, mos), torch.full((2, 1), math.sqrt(2 / 3)))
    _close(pairwise_score_rank(wrong, mos, "corrected"), torch.full((2, 1), 0.125))
    _close(pairwise_score_rank(right, mos, "corrected"), torch.full((2, 1), 5 / 6))
    # A predicted tie of different MOS is not the MOS order: (3, 3) -> c = 0, m = 2 / (2 + 1 + 1) -> 0.25.
    _close(pairwise_score_rank(_t([[3.0], [3.0]]), mos, "corrected"), torch.full((2, 1), 0.25))
    # Exact predictions earn the maximum, 1.
    _close(pairwise_score_rank(_t([[4.0], [2.0]]), mos, "corrected"), torch.ones(2, 1))


def test_corrected_pairwise_orders_every_pair_before_closeness() -> None:
    """Pins item 6 on every pair of a random batch: a pair in the MOS order earns >= 1/2, any other <= 1/4
    (its errors cover the MOS gap, so m <= 1/2), while the released form pays some wrong orders more
    than some right ones."""
    g = torch.Generator().manual_seed(0)
    q = 1 + 4 * torch.rand(400, 2, generator=g)
    mos = 1 + 4 * torch.rand(400, 2, generator=g)
    right = (q[:, 0] > q[:, 1]) == (mos[:, 0] > mos[:, 1])
    released, corrected = [], []
    for i in range(400):  # one image pair per case, K = 1
        released.append(pairwise_score_rank(q[i, :, None], mos[i], "released")[0, 0])
        corrected.append(pairwise_score_rank(q[i, :, None], mos[i], "corrected")[0, 0])
    released, corrected = torch.stack(released), torch.stack(corrected)
    assert corrected[right].min() >= 0.5 and corrected[~right].max() <= 0.25
    assert released[~right].max() > released[right].min()  # the released flaw, on the same pairs


def test_corrected_pairwise_leaves_tied_mos_out() -> None:
    """Pins item 6's tie rule: a partner with the same MOS is left out of the mean (it has no order and
    m = 0 whatever the predictions); alone with tied partners an image gets 0, where the released form
    pays 1 for any two different predictions."""
    # MOS (3, 3, 1), K = 1, q = (2, 4, 1.5). Image 0: partner 1 tied (out); partner 2: 2 > 1.5 and 3 > 1
    # -> c = 1, m = 2 / (2 + 1 + 0.5) = 4/7 -> (1 + 4/7) / 2 = 11/14.
    # Image 1: partner 2: 4 > 1.5, c = 1, m = 2 / (2 + 1 + 0.5) = 4/7 -> 11/14.
    # Image 2: partners 0 and 1, both right order: (11/14 + 11/14) / 2.
    out = pairwise_score_rank(_t([[2.0], [4.0], [1.5]]), _t([3.0, 3.0, 1.0]), "corrected")
    _close(out, [[11 / 14], [11 / 14], [11 / 14]])
    # Image 2 with a wrong order for partner 0 (q0 = 1.0 < 1.5): m = 2 / (2 + 2 + 0.5) = 4/9 -> 2/9.
    out = pairwise_score_rank(_t([[1.0], [4.0], [1.5]]), _t([3.0, 3.0, 1.0]), "corrected")
    _close(out, [[2 / 9], [11 / 14], [(2 / 9 + 11 / 14) / 2]])
    # Only tied partners: 0 (corrected) vs 1 (released).
    tied = _t([[3.5], [2.0]]), _t([3.0, 3.0])
    _close(pairwise_score_rank(*tied, "corrected"), torch.zeros(2, 1))
    _close(pairwise_score_rank(*tied, "released"), torch.ones(2, 1))


def test_pairwise_score_rank_mos_tie_and_zero_over_zero() -> None:
    # Tied MOS (3, 3): ord = 0.5. Image 0 q = [3, 3.5], image 1 q = [3, 3.5].
    # rank 0: 3 vs 3: ord 0.5 == 0.5 -> c = 1; gap 0, both predictions exact -> 0/0 -> m := 1 -> r = 1.
    # rank 1: 3.5 vs 3.5: c = 1; m = 0 / (0 + 0.5 + 0.5) = 0 -> released sqrt(0) + sqrt(0 * 1) = 0.
    q, mos = _t([[3.0, 3.5], [3.0, 3.5]]), _t([3.0, 3.0])
    out = pairwise_score_rank(q, mos)
    assert not torch.isnan(out).any()
    _close(out, [[1.0, 0.0], [1.0, 0.0]])
    # Tied MOS with differing predictions: c = 0, m = 0 -> sqrt(1 * 1) = 1 (the released oddity)
    _close(pairwise_score_rank(_t([[3.5, 3.5], [2.0, 2.0]]), mos), torch.ones(2, 2))


def test_pairwise_score_rank_identical_predictions_use_stable_order() -> None:
    # Image 0: q = [3, 3] (tie, stable: k0 is rank 0, k1 rank 1); image 1: q = [1, 5]. MOS [4, 2].
    # rank 0: 3 vs 1: c = 1, m = 2 / (2 + 1 + 1) = 0.5 -> sqrt(0.5) to image 0's k0
    # rank 1: 3 vs 5: c = 0, m = 2 / (2 + 1 + 3) = 1/3 -> sqrt(2/3) to image 0's k1
    out = pairwise_score_rank(_t([[3.0, 3.0], [1.0, 5.0]]), _t([4.0, 2.0]))
    _close(out[0], [math.sqrt(0.5), math.sqrt(2 / 3)])


def test_pairwise_score_rank_no_partner_is_zero() -> None:
    _close(pairwise_score_rank(_t([[3.0, 4.0, 2.0]]), _t([3.0])), torch.zeros(1, 3))
    # two images of different datasets: neither has a partner
    out = pairwise_score_rank(_t([[3.0], [4.0]]), _t([3.0, 1.0]), dataset_ids=torch.tensor([0, 1]))
    _close(out, torch.zeros(2, 1))


# ---------------------------------------------------------------- (d) triplet ranking


def test_triplet_rank_by_hand() -> None:
    # K = 1, MOS [3, 2, 1], q = [2, 2, 1] (a predicted tie where the MOS differ), strict ">" on both sides.
    # i = 0, pair (1, 2): P = (2, 2, 1), G = (3, 2, 1): (0,1) 2>2 F vs 3>2 T -> 0; (1,2) T,T -> 1;
    #                     (0,2) T,T -> 1 => 2/3
    # i = 1, pair (0, 2): P = (2, 2, 1), G = (2, 3, 1): (0,1) F vs F -> 1; (1,2) T,T -> 1; (0,2) T,T -> 1 => 1
    # i = 2, pair (0, 1): P = (1, 2, 2), G = (1, 3, 2): (0,1) F,F -> 1; (1,2) 2>2 F vs 3>2 T -> 0;
    #                     (0,2) F,F -> 1 => 2/3
    out = triplet_rank(_t([[2.0], [2.0], [1.0]]), _t([3.0, 2.0, 1.0]))
    _close(out, [[2 / 3], [1.0], [2 / 3]])


def test_triplet_rank_means_over_pairs() -> None:
    # B = 4, K = 1, MOS [4, 3, 2, 1], q = [4, 3, 1, 2] (images 2 and 3 swapped).
    # i = 0: pairs (1,2), (1,3), (2,3). Anchor pairs (0,a) always agree (4 is max in both) -> 2 hits each;
    #        (a,b): (1,2) agree, (1,3) agree, (2,3): 1>2 F vs 2>1 T -> 0. Total (3+3+2)/3 / 3 = 8/9.
    # i = 2: pairs (0,1), (0,3), (1,3). Anchor 2: (2,0): 1>4 F vs 2>4 F -> 1; (2,1): F vs F -> 1;
    #        (2,3): 1>2 F vs 2>1 T -> 0. Triplets: (2,0,1): 1 + 1 + [(0,1): 4>3 T,T -> 1] = 3;
    #        (2,0,3): 1 + 0 + [(0,3): T,T] = 2; (2,1,3): 1 + 0 + [(1,3): 3>2 T, 3>1 T] = 2 -> 7/9.
    out = triplet_rank(_t([[4.0], [3.0], [1.0], [2.0]]), _t([4.0, 3.0, 2.0, 1.0]))
    assert out[0, 0].item() == pytest.approx(8 / 9, abs=1e-6)
    assert out[2, 0].item() == pytest.approx(7 / 9, abs=1e-6)


def test_triplet_rank_fewer_than_two_partners_is_zero() -> None:
    # B = 2: no pair of other images (released: mean of nothing = NaN); ours: 0.
    out = triplet_rank(_t([[3.0, 4.0], [2.0, 1.0]]), _t([3.0, 2.0]))
    _close(out, torch.zeros(2, 2))
    _close(triplet_rank(_t([[3.0]]), _t([3.0])), torch.zeros(1, 1))


# ---------------------------------------------------------------- (e) rank reward


def test_rank_reward_by_hand() -> None:
    # MOS 3, q = [3.01, 2, 4]: k0 within 0.02 -> 1.
    # [3.01, 2, 4, 3(MOS)] sorted: 2, 3(MOS), 3.01, 4 -> pos(MOS) = 1; k1 at 0 -> exp(-1/4); k2 at 3 -> exp(-2/4)
    _close(rank_reward(_t([[3.01, 2.0, 4.0]]), _t([3.0])), [[1.0, math.exp(-1 / 4), math.exp(-2 / 4)]])


def test_rank_reward_exact_tolerance_is_not_within() -> None:
    # |3.02 - 3| = 0.02 exactly is not < 0.02; |3.0199 - 3| is. [3.02, 3.0199, 3(MOS)]: sorted 3(MOS),
    # 3.0199, 3.02 -> k0 at position 2, MOS at 0 -> exp(-2/3); k1 -> 1.
    _close(rank_reward(_t([[3.02, 3.0199]]), _t([3.0])), [[math.exp(-2 / 3), 1.0]])


def test_rank_reward_ties() -> None:
    # Repeated prediction: MOS 2, q = [4, 4, 1]: sorted 1, 2(MOS), 4, 4; both 4s take the FIRST occurrence's
    # position 2 -> exp(-1/4) each (not exp(-2/4) for the second). k2 at 0 -> exp(-1/4).
    _close(rank_reward(_t([[4.0, 4.0, 1.0]]), _t([2.0])), [[math.exp(-1 / 4)] * 3])
    # Prediction equal to the MOS: MOS 2, q = [2, 1, 5]. Stable sort puts the MOS (last index) after the
    # equal prediction: 1, 2(k0), 2(MOS), 5 -> pos(MOS) = 2. k0 exact -> 1; k1 at 0 -> exp(-2/4); k2 at 3 -> exp(-1/4)
    _close(rank_reward(_t([[2.0, 1.0, 5.0]]), _t([2.0])), [[1.0, math.exp(-2 / 4), math.exp(-1 / 4)]])


def test_rank_reward_k1() -> None:
    # K = 1: [q, MOS], normaliser K + 1 = 2. q = 4 above MOS 1 -> positions 1 vs 0 -> exp(-1/2)
    _close(rank_reward(_t([[4.0], [1.01]]), _t([1.0, 1.0])), [[math.exp(-0.5)], [1.0]])


# ---------------------------------------------------------------- the released combination


def test_preresq_reward_combination() -> None:
    g = torch.Generator().manual_seed(3)
    aspects = 1 + 4 * torch.rand(4, 6, 5, generator=g)
    mos = 1 + 4 * torch.rand(4, generator=g)
    q = aspects.mean(-1)
    pair, pen = pairwise_score_rank(q, mos), response_penalty(aspects)
    bal, trip, rank = triplet_response_balance(aspects, num_dims=4), triplet_rank(q, mos), rank_reward(q, mos)
    # IQA: (0.375 Pair - P + 0.5 Bal + 0.125 Trip + Rank) / 3
    _close(preresq_reward(aspects, mos, "iqa"), (0.375 * pair - pen + 0.5 * bal + 0.125 * trip + rank) / 3)
    # VQA (D = 2, E = 2): 0.375 Pair - P + 0.5 Bal + 0.125 Trip
    a2 = aspects[..., :2]
    q2 = a2.mean(-1)
    expected = (
        0.375 * pairwise_score_rank(q2, mos)
        - response_penalty(a2)
        + 0.5 * triplet_response_balance(a2, num_dims=2)
        + 0.125 * triplet_rank(q2, mos)
    )
    _close(preresq_reward(a2, mos, "vqa"), expected)
    with pytest.raises(ValueError, match="task"):
        preresq_reward(aspects, mos, "audio")


@pytest.mark.parametrize("shape", [(1, 1, 5), (1, 6, 5), (2, 2, 5), (3, 1, 2), (2, 3, 2)])
def test_small_and_degenerate_batches_are_finite(shape: tuple[int, int, int]) -> None:
    B, K, D = shape
    task = "iqa" if D == 5 else "vqa"
    for aspects, mos in [
        (torch.full(shape, 3.0), torch.full((B,), 3.0)),  # identical predictions, tied MOS, exact
        (1 + 4 * torch.rand(shape), 1 + 4 * torch.rand(B)),
    ]:
        for variant in ("released", "corrected"):
            out = preresq_reward(aspects, mos, task, variant)
            assert out.shape == (B, K) and torch.isfinite(out).all()


# ---------------------------------------------------------------- vectorised == loop reference


def _random_case(B: int, K: int, D: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    aspects = 1 + 4 * torch.rand(B, K, D, generator=g)
    if seed % 2:  # coarse values: ties inside triplets, between predictions and with the MOS
        aspects = (aspects * 20).round() / 20  # 0.05 grid: gaps of exactly the tolerance
        if K > 1:
            aspects[:, 1] = aspects[:, 0]  # identical completions
    mos = 1 + 4 * torch.rand(B, generator=g)
    if seed % 2:
        mos = mos.round()  # tied MOS
    return aspects, mos


CASES = [(1, 1, 5), (2, 2, 5), (3, 3, 5), (5, 6, 5), (8, 12, 5), (6, 6, 2), (9, 4, 2)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("case", CASES)
def test_vectorised_matches_reference(case: tuple[int, int, int], seed: int) -> None:
    B, K, D = case
    aspects, mos = _random_case(B, K, D, seed)
    ids = torch.randint(0, 2, (B,), generator=torch.Generator().manual_seed(seed)) if seed >= 2 else None
    q = aspects.mean(-1)
    preds, g = q.tolist(), mos.tolist()
    _close(response_penalty(aspects), response_penalty_ref(aspects))
    _close(triplet_response_balance(aspects), triplet_response_balance_ref(aspects))
    # tolerance 0: only the median gains (stable rank on ties)
    _close(triplet_response_balance(aspects, tolerance=0.0), triplet_response_balance_ref(aspects, tolerance=0.0))
    for variant in ("released", "corrected"):
        _close(pairwise_score_rank(q, mos, variant, ids), pairwise_score_rank_ref(preds, g, variant, ids))
    _close(triplet_rank(q, mos, ids), triplet_rank_ref(preds, g, ids))
    _close(rank_reward(q, mos), rank_reward_ref(preds, g))
    task = "iqa" if D == 5 else "vqa"
    _close(preresq_reward(aspects, mos, task, dataset_ids=ids), preresq_reward_ref(aspects, mos, task, dataset_ids=ids))


def test_dataset_ids_equal_separate_computation() -> None:
    aspects, mos = _random_case(7, 6, 5, seed=5)
    ids = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    joint = preresq_reward(aspects, mos, dataset_ids=ids)
    for d in (0, 1):
        rows = (ids == d).nonzero().squeeze(1)
        _close(joint[rows], preresq_reward(aspects[rows], mos[rows]))
    assert not torch.allclose(joint, preresq_reward(aspects, mos))
