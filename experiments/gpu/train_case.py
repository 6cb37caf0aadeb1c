"""`python -m prresq.train` with the GPU kit's plugins registered (`kit_plugins`); same Hydra overrides.

    python experiments/gpu/train_case.py experiment=tiny_synthetic warmup=none \
        '+reward.length={name: kit_char_count, weight: 1.0}' strategy=deepspeed_zero2 trainer.max_steps=20
"""

from __future__ import annotations

import kit_plugins  # noqa: F401  (registers the kit's reward term; KillAtStep for Hydra's _target_)

from prresq.train import main

if __name__ == "__main__":
    main()
