"""The clipped GRPO objective with the k3 KL to a frozen reference (VisualQuality-R1 Eq. 5-6).

Per completion token t of completion o (advantage A, shared by all its tokens, Eq. 4):

    ratio = exp(logp - logp_old)
    obj   = min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) - beta * KL
    KL    = exp(logp_ref - logp) - (logp_ref - logp) - 1          (k3 estimator, >= 0)

and the loss is `-obj` aggregated over tokens by one of:
    "sequence": mean over each completion's tokens, then over completions (the papers' GRPO),
    "token":    sum over all tokens / number of tokens (DAPO),
    "constant": sum over all tokens / (num completions * max_tokens) (Dr. GRPO).

Masked positions (padding after EOS) are set to a log-ratio of 0 before `exp`, for the ratio and
for the KL, so whatever they hold (-1e4, -inf) the loss and its gradients stay finite.

Micro-batches: the denominators above are those of the whole rollout batch (`batch_mask`), so the
micro-batch losses add up to the full-batch loss for every aggregation, and the summed gradients
to its gradient (the micro-batch loop of `prresq.module.GRPOModule.update`). Weighting micro-batch means by their share of
completions would be wrong for "token", whose denominator counts tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

AGGREGATIONS = ("sequence", "token", "constant")


@dataclass
class LossStats:
    """Detached diagnostics of one loss evaluation."""

    kl: Tensor
    clip_ratio_low: Tensor
    clip_ratio_high: Tensor
    ratio_mean: Tensor


class GRPOLoss(nn.Module):
    """Clipped GRPO surrogate + beta * k3 KL (Eq. 5-6), with separate lower/upper clip bounds."""

    def __init__(
        self,
        *,
        beta: float,
        eps_low: float,
        eps_high: float,
        aggregation: str,
        max_tokens: int | None = None,
    ) -> None:
        """Settings of `conf/loss/grpo.yaml`, their one place (paper: beta 0.04, eps 0.2, "sequence");
        `max_tokens` is needed by "constant" only."""
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"loss.aggregation={aggregation!r}: expected one of {AGGREGATIONS}")
        if aggregation == "constant" and not max_tokens:
            raise ValueError("loss.aggregation='constant' needs loss.max_tokens (e.g. grpo.max_new_tokens)")
        self.beta, self.eps_low, self.eps_high = beta, eps_low, eps_high
        self.aggregation, self.max_tokens = aggregation, max_tokens

    def forward(
        self,
        logp: Tensor,  # [N, T] log-probs of the sampled tokens under the current policy (with grad)
        advantages: Tensor,  # [N]
        mask: Tensor,  # [N, T] 1 on completion tokens (up to and including EOS)
        old_logp: Tensor | None = None,  # [N, T] at sampling time; None = detached current policy (mu = 1)
        ref_logp: Tensor | None = None,  # [N, T] frozen reference; needed when beta > 0
        batch_mask: Tensor | None = None,  # [N_all, T] mask of the whole batch when this is a micro-batch
    ) -> tuple[Tensor, LossStats]:
        valid = mask > 0
        mask = mask.to(logp.dtype)
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        old = logp.detach() if old_logp is None else old_logp
        ratio = torch.exp(torch.where(valid, logp - old, zero))  # [N, T]; 1 at masked positions
        adv = advantages.to(logp.dtype).unsqueeze(1)  # [N, 1]
        clipped = torch.clamp(ratio, 1.0 - self.eps_low, 1.0 + self.eps_high)
        per_token = -torch.minimum(ratio * adv, clipped * adv)  # [N, T]
        if self.beta != 0.0:
            if ref_logp is None:
                raise ValueError("beta > 0 needs reference log-probs")
            delta = torch.where(valid, ref_logp - logp, zero)
            kl = torch.exp(delta) - delta - 1.0  # [N, T] k3; 0 at masked positions
            per_token = per_token + self.beta * kl
        else:
            kl = torch.zeros_like(logp)
        loss = self._aggregate(per_token, mask, mask if batch_mask is None else batch_mask.to(logp.dtype))
        with torch.no_grad():
            n_tok = mask.sum().clamp(min=1.0)
            low = ((ratio < 1.0 - self.eps_low) & (adv < 0)).to(mask.dtype)
            high = ((ratio > 1.0 + self.eps_high) & (adv > 0)).to(mask.dtype)
            stats = LossStats(
                kl=(kl * mask).sum() / n_tok,
                clip_ratio_low=(low * mask).sum() / n_tok,
                clip_ratio_high=(high * mask).sum() / n_tok,
                ratio_mean=(ratio * mask).sum() / n_tok,
            )
        return loss, stats

    def _aggregate(self, per_token: Tensor, mask: Tensor, batch_mask: Tensor) -> Tensor:
        """Sum of this (micro-)batch's share of the aggregate; the denominators count the whole batch."""
        if self.aggregation == "sequence":
            per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [N]
            return per_seq.sum() / batch_mask.shape[0]
        if self.aggregation == "token":
            return (per_token * mask).sum() / batch_mask.sum().clamp(min=1.0)
        return (per_token * mask).sum() / (batch_mask.shape[0] * self.max_tokens)
