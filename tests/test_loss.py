"""GRPOLoss (Eq. 5-6) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from prresq.loss import GRPOLoss


def test_ratio_one_no_kl_gives_minus_mean_advantage():
    # logp == old => ratio 1, min(A, clip(1)A) = A; loss = -mean_seq(A) = -(2 - 1)/2 = -0.5.
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]])
    mask = torch.ones(2, 2)
    loss, stats = GRPOLoss(beta=0.0)(logp, torch.tensor([2.0, -1.0]), mask)
    assert loss.item() == pytest.approx(-0.5)
    assert stats.clip_ratio_low.item() == 0 and stats.clip_ratio_high.item() == 0


def test_clipping_on_both_sides():
    # Token 1: ratio e^{0.5}=1.6487 > 1.2 with A=+1 -> min(1.6487, 1.2) = 1.2 (high clip).
    # Token 2: ratio e^{-0.5}=0.6065 < 0.8 with A=-1 -> min(-0.6065, -0.8) = -0.8 (low clip).
    logp = torch.tensor([[0.0], [0.0]])
    old = torch.tensor([[-0.5], [0.5]])
    loss, stats = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2)(
        logp, torch.tensor([1.0, -1.0]), torch.ones(2, 1), old_logp=old
    )
    assert loss.item() == pytest.approx(-(1.2 + -0.8) / 2)
    assert stats.clip_ratio_high.item() == pytest.approx(0.5)
    assert stats.clip_ratio_low.item() == pytest.approx(0.5)


def test_asymmetric_eps_high():
    logp, old = torch.tensor([[0.0]]), torch.tensor([[-0.5]])
    loss, _ = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.28)(logp, torch.tensor([1.0]), torch.ones(1, 1), old)
    assert loss.item() == pytest.approx(-1.28)


def test_k3_kl_hand_value_and_zero_when_equal():
    logp = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[-1.0, -1.5]])
    loss_fn = GRPOLoss(beta=0.5)
    # token 2: d = ref - logp = -0.5 -> KL = e^{-0.5} + 0.5 - 1 = 0.10653
    kl2 = math.exp(-0.5) + 0.5 - 1.0
    loss, stats = loss_fn(logp, torch.tensor([0.0]), torch.ones(1, 2), ref_logp=ref)
    assert stats.kl.item() == pytest.approx(kl2 / 2, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * kl2 / 2, rel=1e-5)
    _, stats0 = loss_fn(logp, torch.tensor([0.0]), torch.ones(1, 2), ref_logp=logp.clone())
    assert stats0.kl.item() == 0.0


def test_sequence_vs_token_vs_constant_aggregation():
    # Seq 1 has 1 token (value -A1 = -1), seq 2 has 3 tokens (each -A2 = -3); masks differ.
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, 3.0])
    seq, _ = GRPOLoss(beta=0.0, aggregation="sequence")(logp, adv, mask)
    tok, _ = GRPOLoss(beta=0.0, aggregation="token")(logp, adv, mask)
    const, _ = GRPOLoss(beta=0.0, aggregation="constant", max_tokens=4)(logp, adv, mask)
    assert seq.item() == pytest.approx(-(1 + 3) / 2)
    assert tok.item() == pytest.approx(-(1 + 9) / 4)
    assert const.item() == pytest.approx(-(1 + 9) / (2 * 4))


def test_gradient_raises_logprob_of_positive_advantage():
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]], requires_grad=True)
    loss, _ = GRPOLoss(beta=0.04)(logp, torch.tensor([1.0, -1.0]), torch.ones(2, 2), ref_logp=logp.detach())
    loss.backward()
    # gradient descent moves logp by -grad: positive-advantage row goes up, negative goes down
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()


def test_masked_tokens_do_not_contribute():
    logp = torch.tensor([[-1.0, 5.0]], requires_grad=True)
    loss, _ = GRPOLoss(beta=0.0)(logp, torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert logp.grad[0, 1].item() == 0.0


def test_bad_aggregation_is_a_clear_error():
    with pytest.raises(ValueError, match="loss.aggregation"):
        GRPOLoss(aggregation="nope")
