"""Objects built from config groups that more than one entry point needs (training and the warm-up; eval and infer)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from prresq.config import to_plain
from prresq.models import load_scoring_model
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


def scoring_model(cfg: DictConfig, device: str) -> tuple[Any, Any]:
    """(policy, processor) that eval and infer score with: the model group, `checkpoint` / `base_model` and the
    scoring group's pixel caps (`prresq.models.load_scoring_model`), on `device`."""
    sc = cfg.scoring
    return load_scoring_model(
        to_plain(cfg.model),
        cfg.get("checkpoint"),
        cfg.get("base_model"),
        sc.get("min_pixels"),
        sc.get("max_pixels"),
        device,
        sc.get("max_pixels_cap"),
    )
