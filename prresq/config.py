"""Config plumbing: the one config-to-plain-data helper, and the typed `grpo` and `scoring` groups.

`to_plain` turns an OmegaConf node into plain dicts and lists (interpolations resolved) and leaves
anything else as it is; it is what the entry points hand to modules and what checkpoints store.

The dataclasses below are the one place of the `grpo` and `scoring` groups' fields, defaults and
documentation. `register_configs` (run by `import prresq`, so before any `@hydra.main` or `compose`)
stores them in Hydra's ConfigStore as `grpo/base` and `scoring/{base,offline_base,eval_base}`; the
yaml files of those groups (`conf/grpo/default.yaml`, `conf/scoring/*.yaml`) extend them with their
deltas only (`seed: ${seed}`). The composed groups are typed: an unknown key or a value of the
wrong type is refused at composition with the key's dotted name.

- `GRPOConfig`: the `grpo` group, the sampling parameters of the rollout
  (`prresq.sampling.SamplingConfig`, also the temperature its log-probs are scored at) plus the
  group size K and the update settings.
- `ScoringOptions`: the `scoring` group (in-training validation); `prresq.scoring.ScoringConfig`
  adds the prompt's number of aspect scores. `OfflineScoringOptions`: the `scoring` group of
  `prresq.infer` (batching, seeding, pixel caps); `EvalScoringOptions`: that of `prresq.eval` (and
  the logistic fit).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
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
    seed: int = 0  # seeds the MOS permutation of shuffle_mos (conf/grpo/default.yaml: the run's `seed`)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GRPOConfig:
        return dataclass_from_mapping(cls, values, "grpo")


@dataclass
class ScoringOptions(SamplingConfig):
    """Answer -> score (`prresq.scoring`): the `scoring` group. Greedy decoding ignores temperature, top_p and
    top_k; the sampling fields apply to sampled answers ("sample", "both")."""

    mode: str = "greedy"  # "greedy" | "sample" | "both" | "expected"
    n: int = 8  # answers per item for "sample" / "both"
    score_low: float = 1.0  # the answer's score range (parsing, expected-score candidates)
    score_high: float = 5.0
    shared_prefix: bool = True  # N samples on one vision encoding + prompt prefill per item (False: N plain prefills)
    # answer -> score (prresq.rewards.score_answers): released | answer_first | answer_first_or_text | answer_mean |
    # aspect_mean; an answer the rule cannot read is NaN and counted as failed. Default: the prompt's `answer_rule`
    # when it names one, else `released` (the paper's rule for the prompt's number of scores).
    answer_rule: str = "${oc.select:prompt.answer_rule,released}"


@dataclass
class OfflineScoringOptions(ScoringOptions):
    """Scoring of files outside training (`prresq.eval`, `prresq.infer`): batching, seeding, the processor's
    pixel caps."""

    seed: int = 0  # generators are seeded with it before each benchmark / run (conf/scoring/*.yaml: the run's `seed`)
    batch_size: int = 8
    min_pixels: int | None = None  # processor pixel caps (None: the processor's, or the checkpoint's)
    max_pixels: int | None = None
    # With max_pixels null, an image or video frame is still capped to this many pixels when the processor (or the
    # checkpoint) allows more: 512 vision tokens, the training recipes' data.max_pixels. null: no cap (an 8K
    # frame is ~40k vision tokens, past the model's context).
    max_pixels_cap: int | None = 401408


@dataclass
class EvalScoringOptions(OfflineScoringOptions):
    """The `scoring` group of `prresq.eval`: offline scoring and the correlations' logistic fit."""

    logistic: bool = True  # report PLCC after the 4-parameter logistic fit too


def register_configs() -> None:
    """Store the typed groups in Hydra's ConfigStore (the `base` configs the group yaml files extend)."""
    cs = ConfigStore.instance()
    cs.store(group="grpo", name="base", node=GRPOConfig)
    cs.store(group="scoring", name="base", node=ScoringOptions)
    cs.store(group="scoring", name="offline_base", node=OfflineScoringOptions)
    cs.store(group="scoring", name="eval_base", node=EvalScoringOptions)
    if not OmegaConf.has_resolver("prresq.cwd"):
        # `paths.root_dir`'s fallback. Unlike `${hydra:runtime.cwd}` it resolves before Hydra sets its runtime
        # config, which the basic sweeper needs for `hydra.sweep.dir` (a plain `-m` multirun failed without it).
        OmegaConf.register_new_resolver("prresq.cwd", os.getcwd)
    if not OmegaConf.has_resolver("prresq.workers"):
        OmegaConf.register_new_resolver("prresq.workers", loader_workers)
    if not OmegaConf.has_resolver("prresq.split_file"):
        OmegaConf.register_new_resolver("prresq.split_file", split_file)


def loader_workers(at_most: int) -> int:
    """DataLoader workers: `at_most`, but no more than the CPUs this process may use (`${prresq.workers:4}` in the
    recipes' data configs: 4 on a GPU node, 2 on a 2-core laptop, where PyTorch warns about more)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(int(at_most), cpus))


def split_file(split: str, num_folds: int | None = None, fold: int | None = None) -> str:
    """A synthetic set's split file, relative to the set: `<split>.jsonl`, or fold `fold`'s under `num_folds`
    folds (`prresq.data.synthetic_set.fold_dir`). The `synthetic_iqa` benchmark reads the test split of the
    fold its set names (`conf/benchmark/synthetic_iqa.yaml`)."""
    from prresq.data.synthetic_set import fold_dir

    if num_folds is None or fold is None:
        return f"{split}.jsonl"
    return f"{fold_dir(int(num_folds), int(fold))}/{split}.jsonl"
