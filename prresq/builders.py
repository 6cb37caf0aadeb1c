"""Objects built from config groups that more than one entry point needs (training and the warm-up)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from prresq.config import to_plain
from prresq.scoring import ScoringConfig


def build_datamodule(cfg: DictConfig, processor: Any) -> Any:
    """Instantiate the `data` group, generate its synthetic set when it declares one, attach processor + flow."""
    dm = instantiate(cfg.data, _recursive_=False)
    dm.prepare_data()
    flow = instantiate(cfg.dataflow)
    dm.attach(processor=processor, prompt=cfg.prompt, flow=flow)
    return dm


def scoring_config(cfg: DictConfig) -> ScoringConfig:
    """The `scoring` group as a `ScoringConfig`, with the prompt's number of aspect scores."""
    return ScoringConfig(**{**to_plain(cfg.scoring), "num_aspects": int(cfg.prompt.num_aspects)})
