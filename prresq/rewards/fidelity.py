"""VisualQuality-R1 RL2R fidelity reward (paper Eq. 1-3, 7 and the Table 4 variants), vectorised.

For B images with K sampled scores each, image i's sample k is compared with every other image j of
the same dataset through a Thurstone probability ``p[i,k,j]`` and scored against the MOS preference
``P[i,j]`` (Eq. 2) with the fidelity measure (Eq. 3), averaged over j.

Variants (``variant=``):

- ``"mean"`` (default, Eq. 1): ``p = Phi((q[i,k] - mu[j]) / sqrt(var[i] + var[j] + gamma))``.
- ``"prob_avg"`` (Eq. 7): ``p = mean_k' Phi((q[i,k] - q[j,k']) / sqrt(var[i] + var[j] + gamma))``.
- ``"fixed_var"`` (Thurstone Case V): Eq. 7 with both variances fixed to 1: denominator ``sqrt(2 + gamma)``.
- ``"binary"``: the paper gives no formula; our reading is the hard counterpart of Eq. 1 and 3:
  ``phat = 1[q[i,k] > mu[j]]`` (0.5 when equal) and ``r = mean_j 1[phat == P[i,j]]``.

Unparseable samples (NaN) are left out of every image's mean and variance (unbiased, over the parsed
samples; fewer than 2 parsed samples -> variance 0) and out of Eq. 7's average over k'; their own reward
is ``nan_reward`` (0). An image with no parsed sample cannot be a partner. An image without a valid
partner (B = 1, alone in its dataset) gets reward 0 and one warning per process, never NaN.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = ["fidelity_reward", "FIDELITY_VARIANTS", "mos_preference", "same_dataset_mask"]

FIDELITY_VARIANTS = ("mean", "prob_avg", "fixed_var", "binary")
_warned_no_partner = False


def mos_preference(mos: Tensor) -> Tensor:
    """Eq. 2: ``P[i,j] = 1`` if ``mos[i] > mos[j]``, 0.5 if equal, 0 otherwise; ``[B] -> [B, B]``."""
    return (torch.sign(mos[:, None] - mos[None, :]) + 1) / 2


def same_dataset_mask(dataset_ids: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """``[B, B]`` bool: True where images i and j come from the same dataset (all True when ids are None)."""
    if dataset_ids is None:
        return torch.ones(batch, batch, dtype=torch.bool, device=device)
    ids = dataset_ids.to(device)
    return ids[:, None] == ids[None, :]


def _warn_no_partner(count: int) -> None:
    global _warned_no_partner
    if not _warned_no_partner:
        _warned_no_partner = True
        warnings.warn(
            f"fidelity_reward: {count} image(s) have no partner of the same dataset (B = 1, alone in its "
            "dataset, or no other image of the dataset has a parsed answer); their reward is 0. "
            "This warning is shown once.",
            RuntimeWarning,
            stacklevel=3,
        )


def fidelity_reward(
    scores: Tensor,
    mos: Tensor,
    variant: str = "mean",
    gamma: float = 1e-6,
    eps: float = 1e-6,
    dataset_ids: Tensor | None = None,
    nan_reward: float = 0.0,
) -> Tensor:
    """RL2R reward ``[B, K]`` from sampled scores ``[B, K]`` (NaN = unparseable) and MOS ``[B]`` (Eq. 1-3, 7).

    ``gamma`` sits under the square root of the Thurstone denominator, ``eps`` inside both square roots
    of the fidelity measure (released code: both 1e-6). Pairs only within a dataset (``dataset_ids``).
    """
    if variant not in FIDELITY_VARIANTS:
        raise ValueError(f"variant must be one of {FIDELITY_VARIANTS}, got {variant!r}")
    if scores.dim() != 2 or mos.shape != scores.shape[:1]:
        raise ValueError(f"expected scores [B, K] and mos [B], got {tuple(scores.shape)} and {tuple(mos.shape)}")
    dtype = torch.promote_types(scores.dtype, torch.float32)
    q = scores.to(dtype)
    g = mos.to(device=q.device, dtype=dtype)
    B = q.shape[0]

    # Per-image NaN-aware statistics over the parsed samples.
    parsed = ~torch.isnan(q)  # [B, K]
    n = parsed.sum(-1)  # [B]
    q0 = torch.where(parsed, q, torch.zeros((), dtype=dtype, device=q.device))  # NaN -> 0, masked below
    mu = q0.sum(-1) / n.clamp_min(1)  # [B]
    dev = torch.where(parsed, q0 - mu[:, None], torch.zeros((), dtype=dtype, device=q.device))
    var = (dev * dev).sum(-1) / (n - 1).clamp_min(1)  # unbiased
    var = torch.where(n >= 2, var, torch.zeros_like(var))

    # Valid partners j of image i: same dataset, j != i, j has at least one parsed sample.
    eye = torch.eye(B, dtype=torch.bool, device=q.device)
    partner = same_dataset_mask(dataset_ids, B, q.device) & ~eye & (n > 0)[None, :]  # [B(i), B(j)]
    P = mos_preference(g)[:, None, :]  # [B(i), 1, B(j)]

    qi = q0[:, :, None]  # [B, K, 1]
    if variant == "mean":
        z = (qi - mu[None, None, :]) / torch.sqrt(var[:, None, None] + var[None, None, :] + gamma)
        p = torch.special.ndtr(z)  # [B, K, B]
    elif variant in ("prob_avg", "fixed_var"):
        if variant == "prob_avg":
            sd = torch.sqrt(var[:, None] + var[None, :] + gamma)[:, None, :, None]  # [B, 1, B, 1]
        else:
            sd = math.sqrt(2.0 + gamma)
        z = (qi[..., None] - q0[None, None, :, :]) / sd  # [B, K, B, K']
        w = parsed[None, None, :, :].to(dtype)  # average over the parsed k' of image j only
        p = (torch.special.ndtr(z) * w).sum(-1) / n.clamp_min(1)[None, None, :]  # [B, K, B]
    else:  # binary
        phat = (torch.sign(qi - mu[None, None, :]) + 1) / 2
        p = None
        f = (phat == P).to(dtype)
    if p is not None:
        f = torch.sqrt(P * p + eps) + torch.sqrt((1 - P) * (1 - p) + eps)  # Eq. 3 summand, [B, K, B]

    count = partner.sum(-1)  # [B]
    w = partner[:, None, :].to(dtype)
    r = (f * w).sum(-1) / count.clamp_min(1)[:, None].to(dtype)  # [B, K]; no partner -> 0
    if bool((count == 0).any()):
        _warn_no_partner(int((count == 0).sum()))
    return torch.where(parsed, r, torch.full_like(r, nan_reward))
