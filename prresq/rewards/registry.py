"""Registry of reward terms by name, and the weighted mix built from the Hydra ``reward`` node.

A term is a class registered with ``@register_reward(name)``: its ``__init__`` takes the term's
constants (from the config), its ``__call__(inputs: RewardInputs)`` returns ``[B_local, K]``.
Group terms (fidelity, the PreResQ pair / triplet terms) compute on the GLOBAL tensors, pairing only
images of the same dataset, and return the rows ``inputs.local``; text terms read ``inputs.texts``
(this process's completions, row-major ``i * K + k``).

``build_reward_mix({"fidelity": {"weight": 1.0, "variant": "mean"}, "format": {"weight": 1.0}})`` gives a
:class:`RewardMix` whose call returns ``(total [B_local, K], {key: unweighted term})``. A key can reuse a
registered term under another name with ``name: <registered>``.

One key of the ``reward`` node is a setting, not a term: ``scope`` (:data:`REWARD_SCOPES`), which images
the group terms rank each image against (see :func:`prresq.rewards.distributed.compute_rewards`):

- ``local``: the images of this process's own batch, as both papers' released training code does
  (each device ranks its B images; VisualQuality-R1 Sec. 4.1: "a minibatch size of eight per GPU").
- ``global``: every image of the global step (all data-parallel processes gathered).

With one process both are the same. The config default is ``reward.scope`` in ``conf/train.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from prresq.rewards.fidelity import FIDELITY_VARIANTS, fidelity_reward
from prresq.rewards.format import format_reward, preresq_format_reward
from prresq.rewards.preresq import (
    PAIRWISE_VARIANTS,
    PRERESQ_TASK_DIMS,
    pairwise_score_rank,
    preresq_reward,
    rank_reward,
    response_penalty,
    triplet_rank,
    triplet_response_balance,
)

__all__ = [
    "RewardInputs",
    "RewardTerm",
    "REWARDS",
    "REWARD_SCOPES",
    "register_reward",
    "RewardMix",
    "build_reward_mix",
    "reward_term_keys",
]

# Which images the group terms rank against: this process's batch (released) or the global step.
REWARD_SCOPES = ("local", "global")
# Keys of the Hydra ``reward`` node that are settings of the mix, not reward terms.
_MIX_SETTINGS = ("scope",)

# PreResQ-R1's released parser never fails (fallback [3.0] * D); a NaN aspect (one-score prompt that did
# not parse) gets the same fallback so that it cannot poison the other images' group terms.
_PRERESQ_FALLBACK = 3.0


@dataclass
class RewardInputs:
    """What every reward term sees (prresq/CONTRACTS.md)."""

    texts: list[str]  # this process's completions, row-major: image i, sample k at i*K + k
    scores: Tensor  # [B, K] GLOBAL (all DDP ranks; this process's under scope=local); NaN = unparseable
    aspects: Tensor  # [B, K, D] GLOBAL; D = prompt.num_aspects
    mos: Tensor  # [B] GLOBAL, already mapped to [1, 5]
    dataset_ids: Tensor  # [B] GLOBAL, long
    local: slice  # rows of the global batch owned by this process

    @property
    def num_samples(self) -> int:
        """K, completions per image."""
        return int(self.scores.shape[1])


class RewardTerm(Protocol):
    def __call__(self, inputs: RewardInputs) -> Tensor: ...


REWARDS: dict[str, type] = {}


def check_choice(key: str, value: Any, accepted: Sequence[str]) -> None:
    """A ValueError naming `key`, its value and the accepted values when `value` is not one of them."""
    if value not in accepted:
        raise ValueError(f"{key}={value!r}: expected one of {', '.join(accepted)}")


def register_reward(name: str) -> Callable[[type], type]:
    """Class decorator: register a reward term under ``name`` (``__init__(**constants)``, ``__call__(inputs)``)."""

    def wrap(cls: type) -> type:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered ({REWARDS[name].__name__})")
        REWARDS[name] = cls
        cls.reward_name = name
        return cls

    return wrap


def _text_rows(values: Tensor, inputs: RewardInputs) -> Tensor:
    """``[N] -> [B_local, K]`` on the device of the scores."""
    return values.reshape(-1, inputs.num_samples).to(inputs.scores.device)


def _finite_aspects(inputs: RewardInputs) -> Tensor:
    a = inputs.aspects
    return torch.where(torch.isfinite(a), a, torch.full_like(a, _PRERESQ_FALLBACK))


@register_reward("fidelity")
class Fidelity:
    """VisualQuality-R1 fidelity reward (Eq. 1-3; variants of Table 4), see :func:`fidelity_reward`."""

    def __init__(self, variant: str = "mean", gamma: float = 1e-6, eps: float = 1e-6, nan_reward: float = 0.0):
        check_choice("variant", variant, FIDELITY_VARIANTS)
        self.variant, self.gamma, self.eps, self.nan_reward = variant, gamma, eps, nan_reward

    def __call__(self, inputs: RewardInputs) -> Tensor:
        r = fidelity_reward(
            inputs.scores,
            inputs.mos,
            variant=self.variant,
            gamma=self.gamma,
            eps=self.eps,
            dataset_ids=inputs.dataset_ids,
            nan_reward=self.nan_reward,
        )
        return r[inputs.local]


@register_reward("format")
class Format:
    """VisualQuality-R1 format reward: ``<think>...</think><answer>...</answer>`` full match."""

    def __call__(self, inputs: RewardInputs) -> Tensor:
        return _text_rows(format_reward(inputs.texts), inputs)


@register_reward("preresq_format")
class PreResQFormat:
    """PreResQ-R1 format reward (released regex for ``task`` iqa: 5 numbers, vqa: 2 numbers)."""

    def __init__(self, task: str = "iqa"):
        self.task = task

    def __call__(self, inputs: RewardInputs) -> Tensor:
        return _text_rows(preresq_format_reward(inputs.texts, self.task), inputs)


@register_reward("response_penalty")
class ResponsePenalty:
    """PreResQ-R1 (a) std penalty, positive: give it a negative weight (released: -1, IQA -1/3)."""

    def __init__(self, min_std: float = 0.5, scale: float = 0.5):
        self.min_std, self.scale = min_std, scale

    def __call__(self, inputs: RewardInputs) -> Tensor:
        return response_penalty(_finite_aspects(inputs)[inputs.local], min_std=self.min_std, scale=self.scale)


@register_reward("response_balance")
class ResponseBalance:
    """PreResQ-R1 (b) triplet-response balance over the first ``num_dims`` aspects (IQA 4, VQA 2)."""

    def __init__(self, num_dims: int | None = None, tolerance: float = 0.05, scale: float = 0.5):
        self.num_dims, self.tolerance, self.scale = num_dims, tolerance, scale

    def __call__(self, inputs: RewardInputs) -> Tensor:
        aspects = _finite_aspects(inputs)[inputs.local]
        return triplet_response_balance(aspects, num_dims=self.num_dims, tolerance=self.tolerance, scale=self.scale)


def _preresq_prediction(inputs: RewardInputs) -> Tensor:
    """Released prediction: mean of the D aspects (as parsed by `parse_answers`, clamped to the score range)."""
    return _finite_aspects(inputs).mean(-1)


@register_reward("pairwise_score_rank")
class PairwiseScoreRank:
    """PreResQ-R1 (c) pairwise score-and-rank (``variant`` released / corrected)."""

    def __init__(self, variant: str = "released"):
        check_choice("variant", variant, PAIRWISE_VARIANTS)
        self.variant = variant

    def __call__(self, inputs: RewardInputs) -> Tensor:
        q = _preresq_prediction(inputs)
        return pairwise_score_rank(q, inputs.mos, variant=self.variant, dataset_ids=inputs.dataset_ids)[inputs.local]


@register_reward("triplet_rank")
class TripletRank:
    """PreResQ-R1 (d) triplet ranking."""

    def __call__(self, inputs: RewardInputs) -> Tensor:
        q = _preresq_prediction(inputs)
        return triplet_rank(q, inputs.mos, dataset_ids=inputs.dataset_ids)[inputs.local]


@register_reward("rank")
class Rank:
    """PreResQ-R1 (e) rank reward (IQA)."""

    def __init__(self, tolerance: float = 0.02):
        self.tolerance = tolerance

    def __call__(self, inputs: RewardInputs) -> Tensor:
        q = _preresq_prediction(inputs)[inputs.local]
        return rank_reward(q, inputs.mos[inputs.local], tolerance=self.tolerance)


@register_reward("preresq")
class PreResQ:
    """The released PreResQ-R1 combination as one term (format excluded), see :func:`preresq_reward`."""

    def __init__(self, task: str = "iqa", variant: str = "released"):
        if task not in PRERESQ_TASK_DIMS:
            raise ValueError(f"task must be one of {sorted(PRERESQ_TASK_DIMS)}, got {task!r}")
        check_choice("variant", variant, PAIRWISE_VARIANTS)
        self.task, self.variant = task, variant

    def __call__(self, inputs: RewardInputs) -> Tensor:
        r = preresq_reward(
            _finite_aspects(inputs), inputs.mos, task=self.task, variant=self.variant, dataset_ids=inputs.dataset_ids
        )
        return r[inputs.local]


class RewardMix:
    """Weighted sum of reward terms: ``total = sum_key weight[key] * term[key](inputs)``."""

    def __init__(self, terms: Mapping[str, RewardTerm], weights: Mapping[str, float], scope: str = "local"):
        if set(terms) != set(weights):
            raise ValueError(f"terms {sorted(terms)} and weights {sorted(weights)} differ")
        if scope not in REWARD_SCOPES:
            raise ValueError(f"reward.scope must be one of {REWARD_SCOPES}, got {scope!r}")
        self.scope = scope
        self.terms = dict(terms)
        self.weights = {k: float(v) for k, v in weights.items()}

    def __call__(self, inputs: RewardInputs) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total [B_local, K], {key: unweighted [B_local, K]})``."""
        per_term = {key: term(inputs) for key, term in self.terms.items()}
        shape = (len(range(*inputs.local.indices(inputs.scores.shape[0]))), inputs.num_samples)
        total = torch.zeros(shape, dtype=torch.float32, device=inputs.scores.device)
        for key, value in per_term.items():
            if value.shape != total.shape:
                raise ValueError(f"reward {key!r} returned {tuple(value.shape)}, expected {shape}")
            total = total + self.weights[key] * value.to(total.dtype)
        return total, per_term

    def set_weight(self, key: str, weight: float) -> None:
        """Change one term's weight (e.g. the PreResQ stage schedule turns the std penalty off)."""
        if key not in self.weights:
            raise KeyError(f"reward {key!r} is not in this mix: {sorted(self.weights)}")
        self.weights[key] = float(weight)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={self.weights[k]:g}*{type(t).__name__}" for k, t in self.terms.items())
        return f"RewardMix({parts}; scope={self.scope})"


def reward_term_keys(cfg: Mapping[str, Any]) -> list[str]:
    """The keys of a ``reward`` node that name reward terms (its settings, e.g. ``scope``, left out)."""
    return [str(key) for key in cfg if key not in _MIX_SETTINGS]


def build_reward_mix(cfg: Mapping[str, Any]) -> RewardMix:
    """Build a :class:`RewardMix` from ``{key: {weight, [name], <constants>...}, [scope]}`` (the Hydra ``reward`` node).

    ``scope`` (``local`` | ``global``) is taken from the node when given (``conf/train.yaml`` sets it).
    """
    terms: dict[str, RewardTerm] = {}
    weights: dict[str, float] = {}
    for key in reward_term_keys(cfg):
        node = cfg[key]
        params = dict(node or {})
        name = str(params.pop("name", key))
        weight = float(params.pop("weight", 1.0))
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r} (key {key!r}); registered rewards: {sorted(REWARDS)}")
        try:
            terms[str(key)] = REWARDS[name](**params)
        except TypeError as err:
            raise ValueError(f"bad constants for reward {name!r} (key {key!r}): {err}") from err
        weights[str(key)] = weight
    if not terms:
        raise ValueError("the reward node has no reward term: nothing to train on")
    scope = cfg.get("scope")
    return RewardMix(terms, weights) if scope is None else RewardMix(terms, weights, scope=str(scope))
