"""prresq: reinforcement learning for image and video quality assessment with Qwen2.5-VL.

Implements VisualQuality-R1's RL2R (Thurstone fidelity reward + GRPO) and PreResQ-R1's PRPO
(dual-branch response/preference rewards) in one Hydra-configured Lightning codebase.
"""

__version__ = "0.1.0"

from prresq.config import register_configs

register_configs()  # the typed `grpo` and `scoring` groups, before any Hydra composition (prresq.config)

from prresq.run_dir import register_resolvers  # noqa: E402

register_resolvers()  # ${prresq.run_dir_name:...}: multirun job folders (conf/hydra/default.yaml)
