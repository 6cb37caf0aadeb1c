"""Rewards for GRPO quality assessment: the answer parser, VisualQuality-R1's fidelity reward,
PreResQ-R1's PRPO terms, format rewards, group advantages and the registry / weighted mix that the
training module builds from the Hydra ``reward`` node (``build_reward_mix(cfg.reward)``).
"""

from prresq.rewards.advantages import group_advantages
from prresq.rewards.distributed import compute_rewards, gather_rows
from prresq.rewards.fidelity import fidelity_reward
from prresq.rewards.format import format_reward, preresq_format_reward
from prresq.rewards.parse import parse_answers, parse_aspects, parse_scores
from prresq.rewards.preresq import preresq_reward
from prresq.rewards.registry import REWARDS, RewardInputs, RewardMix, build_reward_mix, register_reward

__all__ = [
    "parse_scores",
    "parse_aspects",
    "parse_answers",
    "format_reward",
    "preresq_format_reward",
    "fidelity_reward",
    "preresq_reward",
    "group_advantages",
    "compute_rewards",
    "gather_rows",
    "RewardInputs",
    "RewardMix",
    "build_reward_mix",
    "register_reward",
    "REWARDS",
]
