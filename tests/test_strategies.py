"""DeepSpeed strategies built from the composed config carry grpo.max_grad_norm as DeepSpeed's gradient clipping.

The run itself needs CUDA; on CPU this checks the config dict DeepSpeed would receive: the one
Lightning's `DeepSpeedStrategy` formats (`_format_config`, called by `setup` before
`deepspeed.initialize`) once a manually optimised module is attached to a real Trainer.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config

from prresq.strategies import deepspeed_strategy
from prresq.train import build_strategy

pytest.importorskip("deepspeed", reason="deepspeed is not installed (GPU extra: pip install -e .[gpu])")

CONF = Path(__file__).resolve().parents[1] / "conf"
STRATEGIES = sorted(p.stem for p in (CONF / "strategy").glob("deepspeed*.yaml"))


class ManualModule(L.LightningModule):
    """The optimisation mode of GRPOModule: manual (Lightning then forbids Trainer(gradient_clip_val))."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(2, 2)


def _formatted_config(strategy) -> dict:
    trainer = L.Trainer(strategy=strategy, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    module = ManualModule()
    module.trainer = trainer
    strategy.connect(module)
    strategy._format_config()
    return strategy.config


@pytest.mark.parametrize("name", STRATEGIES)
def test_deepspeed_config_clips_at_grpo_max_grad_norm(name):
    """Pins: DeepSpeed's `gradient_clipping` is grpo.max_grad_norm (Lightning alone would put 0.0: no clipping)."""
    cfg = compose_config(
        "train", [f"strategy={name}", "grpo.max_grad_norm=0.5", "+strategy.logging_batch_size_per_gpu=2"]
    )
    config = _formatted_config(build_strategy(cfg))
    assert config["gradient_clipping"] == 0.5
    assert config["zero_optimization"]["stage"] == int(cfg.strategy.stage)


def test_null_max_grad_norm_means_no_clipping_and_conflicts_are_errors():
    """Pins: grpo.max_grad_norm null gives DeepSpeed 0 (no clipping); a config clipping elsewhere is a clear error."""
    assert deepspeed_strategy(None, stage=2).config["gradient_clipping"] == 0.0
    with pytest.raises(ValueError, match="gradient_clipping=2.0 and grpo.max_grad_norm=1.0"):
        deepspeed_strategy(1.0, config={"gradient_clipping": 2.0, "zero_optimization": {"stage": 2}})
    with pytest.raises(ValueError, match="grpo.max_grad_norm=-1"):
        deepspeed_strategy(-1)
