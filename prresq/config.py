"""Config plumbing: the one config-to-plain-data helper, and the typed `grpo` group.

`to_plain` turns an OmegaConf node into plain dicts and lists (interpolations resolved) and leaves
anything else as it is; it is what the entry points hand to modules and what checkpoints store.

`GRPOConfig` holds the `grpo` group (`conf/grpo/default.yaml` mirrors its defaults,
`tests/test_configs.py::test_grpo_group_matches_dataclass`): the sampling parameters of the rollout
(`prresq.sampling.SamplingConfig`, also the temperature its log-probs are scored at) plus the group
size K and the update settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from prresq.sampling import SamplingConfig

T = TypeVar("T")


def to_plain(node: Any) -> Any:
    """An OmegaConf node as plain containers (interpolations resolved); any other value unchanged."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def dataclass_from_mapping(cls: type[T], values: Mapping[str, Any], key: str) -> T:
    """`cls(**values)`, with unknown keys named as `<key>.<name>` in a ValueError."""
    values = dict(to_plain(values))
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{', '.join(f'{key}.{u}' for u in unknown)}: unknown key(s); {key} has {sorted(names)}")
    return cls(**values)


@dataclass
class GRPOConfig(SamplingConfig):
    """GRPO rollout and update (VisualQuality-R1 Sec. 3): K sampled completions per image, mu optimiser steps."""

    k: int = 6  # completions per image (paper Table 3: K = 4, 5, 6)
    num_iterations: int = 1  # mu: optimiser steps per rollout batch (old log-probs recorded when > 1)
    micro_batch_size: int | None = None  # completions per forward/backward; None = all at once
    shared_prefix: bool = True  # one vision encoding + one prompt prefill per image, K completions on top
    max_grad_norm: float | None = 1.0  # global gradient-norm clip; 0 or None = no clipping
    shuffle_mos: bool = False  # control: permute MOS inside each batch before the reward
    log_completions_every: int = 25  # a table of completions every N batches (0 = never)
    seed: int = 0  # seeds the MOS permutation of shuffle_mos (the yaml takes the run's seed)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GRPOConfig:
        return dataclass_from_mapping(cls, values, "grpo")
