"""The learning-rate schedule of GRPO training: linear warm-up, then linear decay to 0 or constant."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

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


def apply_at_current_step(scheduler: LRScheduler) -> None:
    """Set every parameter group's LR to `scheduler`'s factor at its current step.

    A resumed run restores the optimiser's LR as it was saved, computed with the old run's schedule length.
    When `trainer.max_steps` changed on resume, `warmup_decay` has a new length, and without this the first
    resumed step would use the old value (0 at the end of a linearly decayed run). A no-op for a fresh run
    and for schedulers other than `LambdaLR`, whose LR cannot be recomputed from the step alone.
    """
    if not isinstance(scheduler, LambdaLR):
        return
    step = scheduler.last_epoch
    groups = scheduler.optimizer.param_groups
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in groups]
