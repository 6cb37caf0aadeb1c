"""Fidelity reward (VisualQuality-R1 Eq. 1-3, 7, Table 4) and group advantages (Eq. 4).

Hand-derived cases use gamma = eps = 0 so that every expected value is a closed form in Phi, written out
with math.erf; a loop implementation of the formulas (below) checks random batches with NaNs and datasets.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import prresq.rewards.fidelity as fidelity_module
from prresq.rewards import fidelity_reward, group_advantages

VARIANTS = ("mean", "prob_avg", "fixed_var", "binary")


def Phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


@pytest.fixture(autouse=True)
def _reset_warning_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fidelity_module, "_warned_no_partner", False)


# B = 2, K = 2. Image 0: q = [3, 5] -> mu0 = 4, var0 = (1 + 1) / (2 - 1) = 2 (unbiased).
#               Image 1: q = [1, 3] -> mu1 = 2, var1 = 2.
# MOS = [4, 2] -> P01 = 1, P10 = 0. Thurstone sd = sqrt(var0 + var1) = 2 (gamma = 0).
SCORES = [[3.0, 5.0], [1.0, 3.0]]
MOS = [4.0, 2.0]


def test_mean_variant_by_hand() -> None:
    # Eq. 1: p[0,k] = Phi((q0k - mu1) / 2) = Phi(0.5), Phi(1.5); with P = 1 Eq. 3 gives sqrt(p).
    #        p[1,k] = Phi((q1k - mu0) / 2) = Phi(-1.5), Phi(-0.5); with P = 0 it gives sqrt(1 - p).
    expected = [
        [math.sqrt(Phi(0.5)), math.sqrt(Phi(1.5))],
        [math.sqrt(1 - Phi(-1.5)), math.sqrt(1 - Phi(-0.5))],
    ]
    out = fidelity_reward(_t(SCORES), _t(MOS), "mean", gamma=0.0, eps=0.0)
    torch.testing.assert_close(out, _t(expected), atol=1e-6, rtol=0)


def test_prob_avg_variant_by_hand() -> None:
    # Eq. 7: average over the partner's samples instead of its mean, same sd = 2.
    # p[0,0] = (Phi((3-1)/2) + Phi((3-3)/2)) / 2 = (Phi(1) + Phi(0)) / 2
    # p[0,1] = (Phi((5-1)/2) + Phi((5-3)/2)) / 2 = (Phi(2) + Phi(1)) / 2
    # p[1,0] = (Phi((1-3)/2) + Phi((1-5)/2)) / 2 = (Phi(-1) + Phi(-2)) / 2
    # p[1,1] = (Phi((3-3)/2) + Phi((3-5)/2)) / 2 = (Phi(0) + Phi(-1)) / 2
    p00, p01 = (Phi(1) + Phi(0)) / 2, (Phi(2) + Phi(1)) / 2
    p10, p11 = (Phi(-1) + Phi(-2)) / 2, (Phi(0) + Phi(-1)) / 2
    expected = [[math.sqrt(p00), math.sqrt(p01)], [math.sqrt(1 - p10), math.sqrt(1 - p11)]]
    out = fidelity_reward(_t(SCORES), _t(MOS), "prob_avg", gamma=0.0, eps=0.0)
    torch.testing.assert_close(out, _t(expected), atol=1e-6, rtol=0)


def test_fixed_var_variant_by_hand() -> None:
    # Thurstone Case V: Eq. 7 with both variances 1: sd = sqrt(2) whatever the samples.
    s = math.sqrt(2.0)
    p00, p01 = (Phi(2 / s) + Phi(0)) / 2, (Phi(4 / s) + Phi(2 / s)) / 2
    p10, p11 = (Phi(-2 / s) + Phi(-4 / s)) / 2, (Phi(0) + Phi(-2 / s)) / 2
    expected = [[math.sqrt(p00), math.sqrt(p01)], [math.sqrt(1 - p10), math.sqrt(1 - p11)]]
    out = fidelity_reward(_t(SCORES), _t(MOS), "fixed_var", gamma=0.0, eps=0.0)
    torch.testing.assert_close(out, _t(expected), atol=1e-6, rtol=0)


def test_binary_variant_by_hand() -> None:
    # Image 0: q = [3, 5], mu0 = 4. Image 1: q = [1, 5], mu1 = 3. MOS [4, 2]: P01 = 1, P10 = 0.
    # phat[0,0] = 1[3 > mu1 = 3] -> equal -> 0.5 != 1 -> 0;  phat[0,1] = 1[5 > 3] = 1 == 1 -> 1.
    # phat[1,0] = 1[1 > mu0 = 4] = 0 == 0 -> 1;             phat[1,1] = 1[5 > 4] = 1 != 0 -> 0.
    out = fidelity_reward(_t([[3.0, 5.0], [1.0, 5.0]]), _t(MOS), "binary")
    torch.testing.assert_close(out, _t([[0.0, 1.0], [1.0, 0.0]]))


def test_released_eps_inside_both_roots() -> None:
    # Defaults gamma = eps = 1e-6: r = sqrt(P p + eps) + sqrt((1-P)(1-p) + eps), sd = sqrt(4 + gamma).
    sd = math.sqrt(4 + 1e-6)
    p = Phi((3 - 2) / sd)
    expected = math.sqrt(p + 1e-6) + math.sqrt(1e-6)  # image 0, sample 0, P = 1
    out = fidelity_reward(_t(SCORES), _t(MOS))
    assert out[0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_mos_tie_uses_half() -> None:
    # Eq. 2 with equal MOS: P = 0.5 both ways; r = sqrt(0.5 p) + sqrt(0.5 (1 - p)).
    out = fidelity_reward(_t(SCORES), _t([3.0, 3.0]), "mean", gamma=0.0, eps=0.0)
    ps = [[Phi(0.5), Phi(1.5)], [Phi(-1.5), Phi(-0.5)]]
    expected = [[math.sqrt(0.5 * p) + math.sqrt(0.5 * (1 - p)) for p in row] for row in ps]
    torch.testing.assert_close(out, _t(expected), atol=1e-6, rtol=0)
    # binary with a tie: phat must also be 0.5, i.e. q == mu_j. Image 0 sample 0 (3) vs mu1 = 3 -> hit.
    out = fidelity_reward(_t([[3.0, 5.0], [1.0, 5.0]]), _t([3.0, 3.0]), "binary")
    torch.testing.assert_close(out[0], _t([1.0, 0.0]))


def test_nan_samples_are_excluded_and_get_zero() -> None:
    # K = 3 with one NaN per image: the parsed samples are exactly those of SCORES, so the statistics
    # (mu, unbiased var over the 2 parsed samples) and the rewards are those of the hand case above.
    scores = _t([[3.0, math.nan, 5.0], [1.0, 3.0, math.nan]])
    out = fidelity_reward(scores, _t(MOS), "mean", gamma=0.0, eps=0.0)
    expected = [
        [math.sqrt(Phi(0.5)), 0.0, math.sqrt(Phi(1.5))],
        [math.sqrt(1 - Phi(-1.5)), math.sqrt(1 - Phi(-0.5)), 0.0],
    ]
    torch.testing.assert_close(out, _t(expected), atol=1e-6, rtol=0)
    # prob_avg: the partner's NaN sample is left out of the average over k'
    out = fidelity_reward(scores, _t(MOS), "prob_avg", gamma=0.0, eps=0.0)
    assert out[0, 0].item() == pytest.approx(math.sqrt((Phi(1) + Phi(0)) / 2), abs=1e-6)
    # a configurable penalty for unparseable samples
    out = fidelity_reward(scores, _t(MOS), nan_reward=-1.0)
    assert out[0, 1].item() == -1.0 and out[1, 2].item() == -1.0


def test_all_nan_image_is_not_a_partner() -> None:
    scores = _t([[3.0, 5.0], [1.0, 3.0], [math.nan, math.nan]])
    for variant in VARIANTS:
        out = fidelity_reward(scores, _t([4.0, 2.0, 1.0]), variant)
        ref = fidelity_reward(_t(SCORES), _t(MOS), variant)
        assert not torch.isnan(out).any()
        torch.testing.assert_close(out[:2], ref)  # image 2 changes nothing for the others
        torch.testing.assert_close(out[2], torch.zeros(2))


def test_single_parsed_sample_has_zero_variance() -> None:
    # Image 1 has one parsed sample (2): mu1 = 2, var1 = 0; image 0: q = [3, 5], var0 = 2, sd = sqrt(2).
    scores = _t([[3.0, 5.0], [2.0, math.nan]])
    out = fidelity_reward(scores, _t(MOS), "mean", gamma=0.0, eps=0.0)
    s = math.sqrt(2.0)
    torch.testing.assert_close(out[0], _t([math.sqrt(Phi(1 / s)), math.sqrt(Phi(3 / s))]), atol=1e-6, rtol=0)


def test_batch_of_one_gives_zero_and_warns_once() -> None:
    with pytest.warns(RuntimeWarning, match="no partner"):
        out = fidelity_reward(_t([[3.0, 4.0, 5.0]]), _t([3.0]))
    torch.testing.assert_close(out, torch.zeros(1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        fidelity_reward(_t([[3.0, 4.0, 5.0]]), _t([3.0]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_k1_and_all_equal_scores_are_finite(variant: str) -> None:
    # K = 1: both variances are 0, the denominator is sqrt(gamma) (mean / prob_avg) -> no NaN.
    out = fidelity_reward(_t([[4.0], [2.0]]), _t(MOS), variant)
    assert torch.isfinite(out).all()
    if variant == "mean":
        # Phi(2 / 1e-3) = 1 and P01 = 1: sqrt(1 + eps) + sqrt(eps)
        assert out[0, 0].item() == pytest.approx(math.sqrt(1 + 1e-6) + math.sqrt(1e-6), abs=1e-6)
    # all-equal scores: q - mu = 0 -> Phi(0) = 0.5 (binary: phat = 0.5 != P -> 0)
    out = fidelity_reward(torch.full((3, 4), 3.0), _t([4.0, 2.0, 3.0]), variant)
    assert torch.isfinite(out).all()
    if variant != "binary":
        # image 0 vs images 1 (P = 1) and 2 (P = 1): sqrt(0.5 + eps) + sqrt(eps)
        assert out[0, 0].item() == pytest.approx(math.sqrt(0.5 + 1e-6) + math.sqrt(1e-6), abs=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_dataset_ids_mask_pairs(variant: str) -> None:
    # Two datasets interleaved in one batch = each dataset computed on its own.
    g = torch.Generator().manual_seed(0)
    scores = 1 + 4 * torch.rand(6, 4, generator=g)
    mos = 1 + 4 * torch.rand(6, generator=g)
    ids = torch.tensor([0, 1, 0, 1, 1, 0])
    joint = fidelity_reward(scores, mos, variant, dataset_ids=ids)
    for d in (0, 1):
        rows = (ids == d).nonzero().squeeze(1)
        alone = fidelity_reward(scores[rows], mos[rows], variant)
        torch.testing.assert_close(joint[rows], alone)
    # and the mask matters: without ids the rewards differ
    assert not torch.allclose(joint, fidelity_reward(scores, mos, variant))


def _fidelity_loop(
    scores: torch.Tensor, mos: torch.Tensor, variant: str, gamma: float, eps: float, ids
) -> torch.Tensor:
    """The formulas written as loops over images, samples and partners (Python floats)."""
    q, g = scores.tolist(), mos.tolist()
    B, K = len(q), len(q[0])
    parsed = [[x for x in row if not math.isnan(x)] for row in q]
    mu = [sum(p) / len(p) if p else math.nan for p in parsed]
    var = [sum((x - m) ** 2 for x in p) / (len(p) - 1) if len(p) > 1 else 0.0 for p, m in zip(parsed, mu)]
    out = [[0.0] * K for _ in range(B)]
    for i in range(B):
        partners = [j for j in range(B) if j != i and ids[j] == ids[i] and parsed[j]]
        for k in range(K):
            if math.isnan(q[i][k]) or not partners:
                continue
            total = 0.0
            for j in partners:
                P = 1.0 if g[i] > g[j] else (0.5 if g[i] == g[j] else 0.0)
                if variant == "mean":
                    p = Phi((q[i][k] - mu[j]) / math.sqrt(var[i] + var[j] + gamma))
                elif variant in ("prob_avg", "fixed_var"):
                    sd = math.sqrt(var[i] + var[j] + gamma) if variant == "prob_avg" else math.sqrt(2 + gamma)
                    p = sum(Phi((q[i][k] - x) / sd) for x in parsed[j]) / len(parsed[j])
                else:
                    phat = 1.0 if q[i][k] > mu[j] else (0.5 if q[i][k] == mu[j] else 0.0)
                    total += 1.0 if phat == P else 0.0
                    continue
                total += math.sqrt(P * p + eps) + math.sqrt((1 - P) * (1 - p) + eps)
            out[i][k] = total / len(partners)
    return torch.tensor(out)


@pytest.mark.filterwarnings("ignore:fidelity_reward")  # an image may be alone in its dataset
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_loop_on_random_batches(variant: str) -> None:
    g = torch.Generator().manual_seed(1)
    for B, K in [(2, 1), (5, 3), (8, 6)]:
        scores = (1 + 4 * torch.rand(B, K, generator=g)).round(decimals=1)  # rounding creates ties
        scores[torch.rand(B, K, generator=g) < 0.2] = math.nan
        mos = (1 + 4 * torch.rand(B, generator=g)).round(decimals=0)  # MOS ties
        ids = torch.randint(0, 2, (B,), generator=g)
        out = fidelity_reward(scores, mos, variant, dataset_ids=ids)
        ref = _fidelity_loop(scores, mos, variant, 1e-6, 1e-6, ids.tolist())
        assert not torch.isnan(out).any()
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="variant"):
        fidelity_reward(_t(SCORES), _t(MOS), "median")


# ---------------------------------------------------------------- group advantages (Eq. 4)


def test_group_advantages_by_hand() -> None:
    # row 0: mean 2, unbiased std sqrt(((-1)^2 + 0 + 1^2) / 2) = 1 -> (r - 2) / (1 + 1e-4)
    # row 1: constant rewards -> std 0 -> all zeros (no NaN)
    out = group_advantages(_t([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    d = 1 / (1 + 1e-4)
    torch.testing.assert_close(out, _t([[-d, 0.0, d], [0.0, 0.0, 0.0]]))
    # row with K = 2: [0, 2] -> mean 1, std sqrt(2) -> -+1 / (sqrt(2) + 1e-4)
    out = group_advantages(_t([[0.0, 2.0]]))
    e = 1 / (math.sqrt(2) + 1e-4)
    torch.testing.assert_close(out, _t([[-e, e]]))


def test_group_advantages_k1_is_zero() -> None:
    out = group_advantages(_t([[0.7], [0.1]]))
    torch.testing.assert_close(out, torch.zeros(2, 1))
