"""Group-relative advantages (GRPO; VisualQuality-R1 Eq. 4)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["group_advantages"]


def group_advantages(rewards: Tensor, eps: float = 1e-4) -> Tensor:
    """Eq. 4: ``a[i,k] = (r[i,k] - mean_k r[i]) / (std_k r[i] + eps)``, unbiased std; ``[B, K] -> [B, K]``.

    With K = 1 there is no group to compare with: all zeros.
    """
    if rewards.shape[-1] < 2:
        return rewards.new_zeros(rewards.shape)
    mean = rewards.mean(-1, keepdim=True)
    std = rewards.std(-1, keepdim=True)  # unbiased (torch default)
    return (rewards - mean) / (std + eps)
