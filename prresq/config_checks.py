"""Start-up checks of a training config: settings that would train nothing, or fail deep inside a step.

`check_train_config(cfg)` runs before any data or model is built (`prresq.train.run`) and raises
one `ConfigError` listing every problem, each as `<config key>=<value>: <reason>`. What it catches:

- `grpo.k` < 2: the group advantage (VisualQuality-R1 Eq. 4, (r_k - mean) / std over the K
  completions of an image) is 0 for a single completion, so the loss and gradient are 0 at every step
  (K = 0 fails later in a reshape). The same for every `schedule.stage*.k` of an enabled schedule.
- An all-zero reward mix (every `reward.<term>.weight` is 0, or no term): the total reward, hence every
  advantage, is 0.
- `grpo.micro_batch_size` below B*K that does not divide B*K (B = `data.batch_size`, completions per step and
  process), or, on the shared-prefix path, is not a whole number of groups of K (it would be rounded).
- `grpo.num_iterations` < 1, `grpo.max_new_tokens` < 1, `grpo.temperature` <= 0, `grpo.top_p` outside
  (0, 1], `data.batch_size` < 1, `optim.lr` <= 0, `loss.beta` < 0, `loss.eps_low` / `loss.eps_high` < 0,
  `loss` / `optim` / `lr_scheduler` without a `_target_`, an unknown `lr_scheduler.decay`,
  `scoring.score_low` >= `scoring.score_high`, `scoring.n` < 1 when sampling, `trainer.max_steps` = 0,
  `data.val_subset` below 1 (an empty validation subset: validation silently off; null = the whole split).
- `data.mos_map_to` that is not an increasing [low, high] inside the answer scale
  [`scoring.score_low`, `scoring.score_high`] (default [1, 5], the range answers are clamped to): [5, 1]
  inverts quality, [0, 100] maps MOS where no answer can reach.
- `model.name_or_path` unset (`experiment=preresq_vqa_lsvq` reads it from `PRERESQ_IQA_CHECKPOINT`, the
  IQA run it starts from; without it a tiny random model would be written in its place).
- `strategy=single` with `trainer.devices` other than 1 (the paper recipes ask for 8 devices; on a
  CPU, Lightning would start 8 processes that hang at the rendezvous).
- Every enum-like option, named with its accepted values (`_check_choices`): each reward term's name
  (the registry) and constants (`reward.fidelity.variant`, `reward.pairwise_score_rank.variant`, ...: the term
  is built once, as training builds it), `reward.scope`, `loss.aggregation`, `scoring.mode` (and any other
  field the scoring group validates), `data.on_bad_sample`, `warmup.on_target_missed`, `model.attn_implementation`, and on a machine
  without CUDA a DeepSpeed strategy, a GPU accelerator or 16-bit mixed precision. Without this they fail at
  the first training step, after data preparation, model loading and the warm-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from prresq.config import GRPOConfig, ScoringOptions, to_plain
from prresq.lr_schedule import DECAYS
from prresq.rewards.parse import resolve_answer_rule


class ConfigError(ValueError):
    """A training config that cannot train; the message lists every offending key and why."""


def _section(cfg: DictConfig | Mapping[str, Any], key: str) -> dict[str, Any]:
    """One top-level group as plain data (only this part is resolved: paths may need a Hydra run)."""
    node = cfg.get(key)
    return dict(to_plain(node) or {}) if node is not None else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_int(value: Any) -> bool:
    number = _number(value)
    return number is not None and math.isfinite(number) and number == int(number)


def _check_k(key: str, k: Any, problems: list[str]) -> int | None:
    if not _is_int(k):
        problems.append(f"{key}={k!r}: must be an integer >= 2 (completions per image)")
        return None
    if int(k) < 2:
        problems.append(
            f"{key}={k}: K < 2 completions per image; the group-standardised advantage (r - mean) / std needs "
            f"at least 2 completions of an image, so with K = {k} every advantage, loss and gradient would be 0 "
            "(or the rollout fails). Use K >= 2"
        )
        return None
    return int(k)


def _reward_weights(reward: Mapping[str, Any]) -> dict[str, float]:
    """`{term: weight}` of the reward mix (mapping entries only: other keys are not reward terms)."""
    weights = {}
    for key, node in reward.items():
        if isinstance(node, Mapping):
            number = _number(node.get("weight", 1.0))
            weights[str(key)] = float("nan") if number is None else number
    return weights


def _check_micro_batch(grpo: Mapping[str, Any], batch_size: int | None, k: int, problems: list[str]) -> None:
    micro = grpo.get("micro_batch_size")
    if micro is None:
        return
    if not _is_int(micro) or int(micro) < 1:
        problems.append(f"grpo.micro_batch_size={micro!r}: must be a positive integer (completions) or null")
        return
    micro = int(micro)
    if batch_size is not None and micro >= batch_size * k:
        return  # one micro-batch holds the whole batch (a recipe's setting at smaller sizes)
    if batch_size is not None and (batch_size * k) % micro:
        problems.append(
            f"grpo.micro_batch_size={micro}: must divide B*K = data.batch_size*grpo.k = {batch_size}*{k} = "
            f"{batch_size * k} (completions per step and process)"
        )
    elif grpo["shared_prefix"] and micro % k:
        problems.append(
            f"grpo.micro_batch_size={micro}: with grpo.shared_prefix=true a micro-batch holds whole groups of "
            f"grpo.k={k} completions; use a multiple of {k}"
        )


def _check_mos_map_to(value: Any, low: float, high: float, problems: list[str]) -> None:
    """`data.mos_map_to` (the [lo, hi] every dataset's MOS is min-max mapped to) must be increasing and lie
    inside the answer scale [low, high] that parsed answers are clamped to (prresq.rewards.parse)."""
    if value is None:
        return
    pair = to_plain(value)
    numbers = [_number(x) for x in pair] if isinstance(pair, list | tuple) else []
    if len(numbers) != 2 or any(x is None or not math.isfinite(x) for x in numbers):
        problems.append(f"data.mos_map_to={pair!r}: must be [low, high], two finite numbers")
        return
    a, b = numbers
    if not a < b:
        problems.append(
            f"data.mos_map_to={pair}: must be increasing ([low, high] with low < high); "
            f"{pair} would {'invert quality (the best image gets the lowest target)' if a > b else 'map every MOS to one value'}"
        )
    elif a < low or b > high:
        problems.append(
            f"data.mos_map_to={pair}: must lie inside the answer scale [scoring.score_low, scoring.score_high] = "
            f"[{low:g}, {high:g}] that answers are clamped to; targets outside it can never be answered"
        )


ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")
ON_BAD_SAMPLE = ("raise", "skip")


def _choice(key: str, value: Any, accepted: tuple[str, ...], problems: list[str]) -> None:
    if value is not None and value not in accepted:
        problems.append(f"{key}={value!r}: expected one of {', '.join(accepted)}")


def _check_reward_terms(reward: Mapping[str, Any], problems: list[str]) -> None:
    """Build every reward term once, as `prresq.rewards.build_reward_mix` does: unknown names and bad constants."""
    from prresq.rewards.registry import REWARD_SCOPES, REWARDS, reward_term_keys

    _choice("reward.scope", reward.get("scope"), REWARD_SCOPES, problems)
    for key in reward_term_keys(reward):
        params = dict(reward[key] or {})
        name = str(params.pop("name", key))
        params.pop("weight", None)
        if name not in REWARDS:
            where = f"reward.{key}.name={name!r}" if name != key else f"reward.{key}"
            problems.append(f"{where}: no such reward; registered rewards: {', '.join(sorted(REWARDS))}")
            continue
        try:
            REWARDS[name](**params)
        except (TypeError, ValueError) as err:
            message = str(err)
            first = message.split("=", 1)[0]
            if first.isidentifier() and first in params:
                problems.append(f"reward.{key}.{message}")
            else:
                problems.append(f"reward.{key} (reward {name!r}): {message}")


def _check_choices(cfg: DictConfig | Mapping[str, Any], problems: list[str]) -> None:
    """Enum-like options: each must be one of its accepted values (see the module docstring)."""
    from prresq.loss import AGGREGATIONS
    from prresq.scoring import MODES, ScoringConfig

    _check_reward_terms(_section(cfg, "reward"), problems)
    loss = _section(cfg, "loss")
    _choice("loss.aggregation", loss.get("aggregation"), AGGREGATIONS, problems)
    scoring = _section(cfg, "scoring")
    if scoring.get("mode") not in MODES:
        _choice("scoring.mode", scoring.get("mode"), MODES, problems)
    else:
        try:
            ScoringConfig.from_mapping(scoring)
        except (TypeError, ValueError) as err:
            problems.append(f"scoring: {err}")
    warmup = _section(cfg, "warmup")
    if warmup.get("enabled", False):
        from prresq.warmup import ON_TARGET_MISSED

        _choice("warmup.on_target_missed", warmup.get("on_target_missed"), ON_TARGET_MISSED, problems)
    _choice("data.on_bad_sample", (cfg.get("data") or {}).get("on_bad_sample"), ON_BAD_SAMPLE, problems)
    _choice(
        "model.attn_implementation", (cfg.get("model") or {}).get("attn_implementation"), ATTN_IMPLEMENTATIONS, problems
    )
    _check_cpu_only(cfg, problems)


def _check_cpu_only(cfg: DictConfig | Mapping[str, Any], problems: list[str]) -> None:
    """Settings that need CUDA, on a machine without it."""
    import torch

    if torch.cuda.is_available():
        return
    trainer = cfg.get("trainer") or {}
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        problems.append(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU; use trainer.accelerator=cpu")
    target = str(_section(cfg, "strategy").get("_target_", ""))
    if "deepspeed" in target.lower():
        problems.append(
            f"strategy ({target.rsplit('.', 1)[-1]}): DeepSpeed needs CUDA GPUs and this machine has none; on a CPU use "
            "strategy=single trainer.devices=1 (or strategy=ddp)"
        )
    precision = str(trainer.get("precision", "32-true"))
    if precision in ("16", "16-mixed", "16-true"):
        problems.append(
            f"trainer.precision={precision}: 16-bit floats need a CUDA GPU; on a CPU use trainer.precision=32 "
            "(or bf16-mixed)"
        )


def check_train_config(cfg: DictConfig | Mapping[str, Any]) -> None:
    """Raise `ConfigError` naming every key of `cfg` that would make training a no-op or fail mid-step."""
    problems: list[str] = []
    grpo = {**dataclasses.asdict(GRPOConfig()), **_section(cfg, "grpo")}  # a key not given has its default
    batch_size = (cfg.get("data") or {}).get("batch_size")
    if not _is_int(batch_size) or int(batch_size) < 1:
        problems.append(f"data.batch_size={batch_size!r}: must be an integer >= 1 (images per step and process)")
        batch_size = None
    else:
        batch_size = int(batch_size)
    val_subset = (cfg.get("data") or {}).get("val_subset")
    if val_subset is not None and (not _is_int(val_subset) or int(val_subset) < 1):
        problems.append(
            f"data.val_subset={val_subset!r}: must be an integer >= 1 (items of the validation split scored) or "
            "null (the whole split); a value below 1 would score no validation item"
        )
    k = _check_k("grpo.k", grpo.get("k"), problems)
    if k is not None:
        _check_micro_batch(grpo, batch_size, k, problems)
    schedule = _section(cfg, "schedule")
    if schedule.get("enabled", False):
        for stage in ("stage1", "stage2"):
            if isinstance(schedule.get(stage), Mapping) and "k" in schedule[stage]:
                stage_k = _check_k(f"schedule.{stage}.k", schedule[stage]["k"], problems)
                if stage_k is not None:
                    _check_micro_batch(grpo, batch_size, stage_k, problems)

    reward = _section(cfg, "reward")
    weights = _reward_weights(reward)
    if not weights:
        problems.append("reward: no reward term; every reward and advantage would be 0")
    elif all(w == 0 for w in weights.values()):
        listed = ", ".join(f"reward.{key}.weight=0" for key in weights)
        problems.append(f"{listed}: all reward weights are 0; every reward and advantage would be 0")
    for key, weight in weights.items():
        if not math.isfinite(weight):
            problems.append(f"reward.{key}.weight={reward[key].get('weight')!r}: must be a finite number")

    for key, low, why in (
        ("num_iterations", 1, "optimiser steps per rollout batch"),
        ("max_new_tokens", 1, "tokens per completion"),
    ):
        value = grpo.get(key)
        if value is not None and (not _is_int(value) or int(value) < low):
            problems.append(f"grpo.{key}={value!r}: must be an integer >= {low} ({why})")
    temperature = _number(grpo["temperature"])
    if temperature is None or not temperature > 0:
        problems.append(f"grpo.temperature={grpo.get('temperature')!r}: must be > 0 (sampling divides logits by it)")
    top_p = _number(grpo["top_p"])
    if top_p is None or not 0 < top_p <= 1:
        problems.append(f"grpo.top_p={grpo.get('top_p')!r}: must be in (0, 1]")

    optim = _section(cfg, "optim")
    lr = _number(optim.get("lr", 1.0))
    if lr is None or not lr > 0:
        problems.append(f"optim.lr={optim.get('lr')!r}: must be > 0, or the policy never changes")
    for key in ("loss", "optim", "lr_scheduler"):
        node = cfg.get(key)
        if node is not None and "_target_" not in node:
            problems.append(f"{key}: no _target_ (the class or function it builds, e.g. conf/{key}/)")
    decay = _section(cfg, "lr_scheduler").get("decay")
    if decay is not None and decay not in DECAYS:
        problems.append(f"lr_scheduler.decay={decay!r}: expected one of {DECAYS}")
    loss = _section(cfg, "loss")
    for key in ("beta", "eps_low", "eps_high"):
        value = loss.get(key)
        if value is not None and not (_number(value) is not None and _number(value) >= 0):
            problems.append(f"loss.{key}={value!r}: must be a number >= 0")

    scoring = _section(cfg, "scoring")
    default = ScoringOptions()  # a key not given has its default
    low = _number(scoring.get("score_low", default.score_low))
    high = _number(scoring.get("score_high", default.score_high))
    if low is None or high is None or not low < high:
        problems.append(
            f"scoring.score_low={scoring.get('score_low')!r}, scoring.score_high={scoring.get('score_high')!r}: "
            "score_low must be below score_high"
        )
    n = scoring.get("n")
    if scoring.get("mode", "both") in ("sample", "both") and n is not None and (not _is_int(n) or int(n) < 1):
        problems.append(f"scoring.n={n!r}: must be an integer >= 1 with scoring.mode={scoring.get('mode')}")
    num_aspects = (cfg.get("prompt") or {}).get("num_aspects", 1)
    try:
        resolve_answer_rule(str(scoring.get("answer_rule", "released")), int(num_aspects))
    except (TypeError, ValueError) as err:
        problems.append(str(err))

    if low is not None and high is not None and low < high:
        _check_mos_map_to((cfg.get("data") or {}).get("mos_map_to"), low, high, problems)
    model = cfg.get("model") or {}
    if "name_or_path" in model and model.get("name_or_path") in (None, ""):
        problems.append(
            "model.name_or_path=None: no model to start from. experiment=preresq_vqa_lsvq starts from a PreResQ-R1 "
            "IQA model: set PRERESQ_IQA_CHECKPOINT to its directory, e.g. "
            "`PRERESQ_IQA_CHECKPOINT=outputs/preresq_iqa_kadid/<date>_<time>/export python -m prresq.train "
            "experiment=preresq_vqa_lsvq`, or pass model.name_or_path=<model dir>"
        )

    strategy = _section(cfg, "strategy")
    devices = (cfg.get("trainer") or {}).get("devices", 1)
    if "_target_" not in strategy and strategy.get("name", "auto") == "auto" and str(devices) not in ("1", "auto"):
        problems.append(
            f"trainer.devices={devices}: strategy=single trains in one process on one device (on a CPU, "
            "more devices start as many processes, which hang); use trainer.devices=1, or strategy=ddp or a "
            "DeepSpeed strategy for several devices"
        )

    max_steps = (cfg.get("trainer") or {}).get("max_steps")
    if _is_int(max_steps) and int(max_steps) == 0:
        problems.append("trainer.max_steps=0: trains nothing (-1 = no step limit)")

    _check_choices(cfg, problems)

    if problems:
        raise ConfigError("invalid training config:\n  - " + "\n  - ".join(problems))
