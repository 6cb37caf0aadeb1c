"""`optimized_metric`: the result of `prresq.train.run` that `prresq.train.main` returns to Hydra sweepers.

A dotted path into `run`'s results (`after.srcc_mean`, `warmup_final_val.srcc_mean`, ...). A name this
config cannot produce is refused before training (`check_optimized_metric`), not after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from prresq.run_dir import is_global_rank_zero


def _metric_sources(cfg: DictConfig) -> dict[str, str | None]:
    """Result keys of `run` that can hold `optimized_metric`: None when this config fills it, else why not."""
    scored = cfg.get("eval_before_after", False) and not cfg.trainer.get("fast_dev_run")
    held_out = None if scored else "needs eval_before_after=true and no trainer.fast_dev_run"
    before = held_out or (None if cfg.get("ckpt_path") is None else "is not scored on resume (ckpt_path is set)")
    warmup = None if cfg.warmup.get("enabled", False) else "needs the warm-up (warmup.enabled)"
    return {"before": before, "after": held_out, "warmup_final_val": warmup}


def check_optimized_metric(cfg: DictConfig) -> None:
    """Refuse, before training, an `optimized_metric` this run will not produce."""
    name = cfg.get("optimized_metric")
    if name is None:
        return
    root = str(name).split(".")[0]
    sources = _metric_sources(cfg)
    if root not in sources or "." not in str(name):
        raise ValueError(
            f"optimized_metric={name!r}: expected <result>.<metric> with <result> one of {sorted(sources)}, "
            "e.g. after.srcc_mean"
        )
    if sources[root] is not None:
        raise ValueError(f"optimized_metric={name!r}: the {root!r} result {sources[root]}")


def optimized_metric(results: Mapping[str, Any], name: str | None) -> float | None:
    """The value named by `optimized_metric` (a dotted path into `run`'s results, e.g. `after.srcc_mean`).

    None when `name` is None, or on a process that computed no results (not global rank zero).
    """
    if name is None or (not results and not is_global_rank_zero()):
        return None
    node: Any = results
    for part in str(name).split("."):
        if not isinstance(node, Mapping) or part not in node:
            known = sorted(node) if isinstance(node, Mapping) else []
            raise KeyError(f"optimized_metric={name!r}: no {part!r} in this run's results (there: {known})")
        node = node[part]
    return float(node)
