"""GRPOLoss (Eq. 5-6) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from prresq.loss import GRPOLoss
from prresq.module import GRPOModule


def test_ratio_one_no_kl_gives_minus_mean_advantage():
    # logp == old => ratio 1, min(A, clip(1)A) = A; loss = -mean_seq(A) = -(2 - 1)/2 = -0.5.
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]])
    mask = torch.ones(2, 2)
    loss, stats = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="sequence")(
        logp, torch.tensor([2.0, -1.0]), mask
    )
    assert loss.item() == pytest.approx(-0.5)
    assert stats.clip_ratio_low.item() == 0 and stats.clip_ratio_high.item() == 0


def test_clipping_on_both_sides():
    # Token 1: ratio e^{0.5}=1.6487 > 1.2 with A=+1 -> min(1.6487, 1.2) = 1.2 (high clip).
    # Token 2: ratio e^{-0.5}=0.6065 < 0.8 with A=-1 -> min(-0.6065, -0.8) = -0.8 (low clip).
    logp = torch.tensor([[0.0], [0.0]])
    old = torch.tensor([[-0.5], [0.5]])
    loss, stats = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="sequence")(
        logp, torch.tensor([1.0, -1.0]), torch.ones(2, 1), old_logp=old
    )
    assert loss.item() == pytest.approx(-(1.2 + -0.8) / 2)
    assert stats.clip_ratio_high.item() == pytest.approx(0.5)
    assert stats.clip_ratio_low.item() == pytest.approx(0.5)


def test_asymmetric_eps_high():
    logp, old = torch.tensor([[0.0]]), torch.tensor([[-0.5]])
    loss, _ = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.28, aggregation="sequence")(
        logp, torch.tensor([1.0]), torch.ones(1, 1), old
    )
    assert loss.item() == pytest.approx(-1.28)


def test_k3_kl_hand_value_and_zero_when_equal():
    logp = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[-1.0, -1.5]])
    loss_fn = GRPOLoss(beta=0.5, eps_low=0.2, eps_high=0.2, aggregation="sequence")
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
    seq, _ = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="sequence")(logp, adv, mask)
    tok, _ = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="token")(logp, adv, mask)
    const, _ = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="constant", max_tokens=4)(logp, adv, mask)
    assert seq.item() == pytest.approx(-(1 + 3) / 2)
    assert tok.item() == pytest.approx(-(1 + 9) / 4)
    assert const.item() == pytest.approx(-(1 + 9) / (2 * 4))


def test_gradient_raises_logprob_of_positive_advantage():
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]], requires_grad=True)
    loss, _ = GRPOLoss(beta=0.04, eps_low=0.2, eps_high=0.2, aggregation="sequence")(
        logp, torch.tensor([1.0, -1.0]), torch.ones(2, 2), ref_logp=logp.detach()
    )
    loss.backward()
    # gradient descent moves logp by -grad: positive-advantage row goes up, negative goes down
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()


def test_masked_tokens_do_not_contribute():
    logp = torch.tensor([[-1.0, 5.0]], requires_grad=True)
    loss, _ = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="sequence")(
        logp, torch.tensor([1.0]), torch.tensor([[1.0, 0.0]])
    )
    loss.backward()
    assert logp.grad[0, 1].item() == 0.0


def test_bad_aggregation_is_a_clear_error():
    with pytest.raises(ValueError, match="loss.aggregation"):
        GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="nope")


def _ragged_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Six completions of lengths 1..6 (so micro-batches hold very different token counts)."""
    g = torch.Generator().manual_seed(seed)
    n, t = 6, 6
    lengths = torch.tensor([1, 6, 2, 5, 3, 4])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    return dict(
        logp=(-torch.rand(n, t, generator=g) * 2).requires_grad_(),
        advantages=torch.randn(n, generator=g),
        mask=mask,
        old_logp=-torch.rand(n, t, generator=g) * 2,
        ref_logp=-torch.rand(n, t, generator=g) * 2,
    )


def _backward(loss_fn: GRPOLoss, batch: dict, slices: list[tuple[slice, slice]]) -> tuple[float, torch.Tensor]:
    logp = batch["logp"]
    logp.grad = None
    stats = GRPOModule.micro_batched_backward(
        loss_fn,
        slices,
        lambda ps, cs: logp[cs] * 1.0,
        batch["advantages"],
        batch["mask"],
        old_logp=batch["old_logp"],
        ref_logp=batch["ref_logp"],
    )
    return stats["loss"], logp.grad.clone()


@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_micro_batched_loss_and_gradients_equal_the_full_batch(aggregation):
    """Pins: for every aggregation, micro-batches of unequal token counts give the full batch's loss and gradients."""
    batch = _ragged_batch()
    loss_fn = GRPOLoss(beta=0.04, eps_low=0.2, eps_high=0.2, aggregation=aggregation, max_tokens=6)
    full_loss, full_grad = _backward(loss_fn, batch, [(slice(0, 6), slice(0, 6))])
    direct, _ = loss_fn(batch["logp"], batch["advantages"], batch["mask"], batch["old_logp"], batch["ref_logp"])
    assert full_loss == pytest.approx(direct.item(), rel=1e-6)
    for sizes in ([2, 2, 2], [1, 5], [3, 1, 2]):
        bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
        slices = [(slice(a, b), slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
        loss, grad = _backward(loss_fn, batch, slices)
        assert loss == pytest.approx(full_loss, rel=1e-6), sizes
        torch.testing.assert_close(grad, full_grad, rtol=1e-6, atol=1e-8)


def test_token_aggregation_of_two_micro_batches_by_hand():
    """Pins DAPO token aggregation over micro-batches: sum over all tokens / all tokens, not a mean of means.

    Rows with 1 and 3 tokens, ratio 1, no KL, advantages 1 and 3: token loss = -(1 + 3 * 3) / 4 = -2.5.
    Weighting the two micro-batch means by their share of completions would give -(1 + 3) / 2 = -2.
    """
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    stats = GRPOModule.micro_batched_backward(
        GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="token"),
        [(slice(0, 1), slice(0, 1)), (slice(1, 2), slice(1, 2))],
        lambda ps, cs: logp[cs] * 1.0,
        torch.tensor([1.0, 3.0]),
        mask,
    )
    assert stats["loss"] == pytest.approx(-2.5)
    # d loss / d logp = -A / 4 on every valid token (ratio 1, unclipped), 0 on padding.
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, 0, 0], [-0.75, -0.75, -0.75]]))


@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_loss_and_gradients_finite_whatever_masked_positions_hold(aggregation):
    """Pins: padded positions holding -1e4 or -inf (policy, old or reference) leave loss and gradients finite and unchanged."""
    batch = _ragged_batch(1)
    loss_fn = GRPOLoss(beta=0.04, eps_low=0.2, eps_high=0.2, aggregation=aggregation, max_tokens=6)
    pad = batch["mask"] == 0
    clean, clean_grad = _backward(loss_fn, batch, [(slice(0, 6), slice(0, 6))])
    for fill in (-1e4, float("-inf")):
        for key in ("logp", "old_logp", "ref_logp"):
            dirty = dict(batch)
            values = batch[key].detach().masked_fill(pad, fill)
            dirty[key] = values.requires_grad_() if key == "logp" else values
            loss, grad = _backward(loss_fn, dirty, [(slice(0, 6), slice(0, 6))])
            assert math.isfinite(loss) and torch.isfinite(grad).all(), (fill, key)
            assert loss == pytest.approx(clean, rel=1e-6), (fill, key)
            torch.testing.assert_close(grad, clean_grad)
