"""`python -m prresq.train` with the GPU kit's plugins registered (`kit_plugins`); same Hydra overrides.

    python experiments/gpu/train_case.py experiment=tiny_synthetic warmup=none \
        '+reward.length={name: kit_char_count, weight: 1.0}' strategy=deepspeed_zero2 trainer.max_steps=20
"""

from __future__ import annotations

from pathlib import Path

import hydra
import kit_plugins  # noqa: F401  (registers the kit's reward term; KillAtStep for Hydra's _target_)
import torch
from omegaconf import DictConfig

from prresq.train import run

CONF = Path(__file__).resolve().parents[2] / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")
def main(cfg: DictConfig) -> None:
    """What `prresq.train.main` does, with the config folder given by path (this file is not in the package)."""
    torch.set_float32_matmul_precision("high")
    run(cfg)


if __name__ == "__main__":
    main()
