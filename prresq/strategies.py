"""The DeepSpeed strategy of `conf/strategy/deepspeed*.yaml`, with the GRPO gradient clipping in its config.

Under ZeRO the parameters' `.grad` is None, so clipping them by hand clips nothing. DeepSpeed clips
inside `engine.step()` by its config's `gradient_clipping`, which Lightning fills from
`Trainer(gradient_clip_val)` only when the key is absent, and manual optimisation (GRPOModule)
forbids that argument. This factory puts `grpo.max_grad_norm` there (0 or null: no clipping);
`GRPOModule` then logs the engine's own global gradient norm as `train/grad_norm`.

    strategy = deepspeed_strategy(gradient_clipping=1.0, stage=3)   # strategy.config["gradient_clipping"] == 1.0
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DeepSpeedStrategy


def deepspeed_strategy(gradient_clipping: float | None = None, **kwargs: Any) -> DeepSpeedStrategy:
    """`DeepSpeedStrategy(**kwargs)` whose DeepSpeed config clips the global gradient norm at `gradient_clipping`."""
    clip = float(gradient_clipping or 0.0)
    if clip < 0:
        raise ValueError(f"grpo.max_grad_norm={gradient_clipping}: expected >= 0 (0 or null: no clipping)")
    strategy = DeepSpeedStrategy(**kwargs)
    config = strategy.config
    if "gradient_clipping" in config and float(config["gradient_clipping"]) != clip:
        raise ValueError(
            f"strategy.config sets gradient_clipping={config['gradient_clipping']} and grpo.max_grad_norm={clip}: "
            "set grpo.max_grad_norm only"
        )
    config["gradient_clipping"] = clip
    return strategy
