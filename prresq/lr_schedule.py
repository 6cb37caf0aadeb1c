"""The learning-rate schedule of GRPO training: linear warm-up, then linear decay to 0 or constant."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

DECAYS = ("linear", "constant")


def warmup_decay(optimizer: Optimizer, total_steps: int, *, warmup_ratio: float, decay: str) -> LambdaLR:
    """LR factor `(step + 1) / warmup` for the first `warmup_ratio * total_steps` steps, then
    `(total - step) / (total - warmup)` (`decay="linear"`, the papers' schedule, 0 after the last step) or 1."""
    if decay not in DECAYS:
        raise ValueError(f"lr_scheduler.decay={decay!r}: expected one of {DECAYS}")
    warmup = int(float(warmup_ratio) * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if decay == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return LambdaLR(optimizer, factor)
