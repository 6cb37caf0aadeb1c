"""The supported model families and how a model, a processor, a tokenizer or a directory finds its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prresq.models.family import ModelFamily, read_model_type
from prresq.models.internvl import InternVL
from prresq.models.qwen2_5_vl import Qwen25VL
from prresq.models.qwen3_5 import Qwen35
from prresq.models.qwen3_vl import Qwen3VL

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (Qwen25VL(), Qwen3VL(), InternVL(), Qwen35())}
DEFAULT_FAMILY = "qwen2_5_vl"  # the papers' model and the embedded tiny default


def supported() -> str:
    return ", ".join(f"{f.name} ({f.title}: model_type {'/'.join(f.model_types)})" for f in FAMILIES.values())


def get_family(name: str | None) -> ModelFamily:
    """The family called `name` (`model.family`); None: the default."""
    name = DEFAULT_FAMILY if name is None else str(name)
    if name not in FAMILIES:
        raise ValueError(f"model.family={name!r} is not supported; supported families: {supported()}")
    return FAMILIES[name]


def family_for_model_type(model_type: str, source: str) -> ModelFamily:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise ValueError(
        f"{source}: model_type {model_type!r} is not a supported model family; supported families: {supported()}"
    )


def family_of_dir(model_dir: str | Path) -> ModelFamily:
    """The family of a model directory, from its config.json's `model_type`."""
    return family_for_model_type(read_model_type(model_dir), f"{Path(model_dir) / 'config.json'}")


def family_of(model_or_config: Any) -> ModelFamily:
    """The family of a loaded model (or of its config)."""
    config = getattr(model_or_config, "config", model_or_config)
    return family_for_model_type(str(config.model_type), f"model of class {type(model_or_config).__name__}")


def check_family(found: ModelFamily, expected: str | None, source: str) -> None:
    """A directory (model, export, checkpoint base) of one family loaded with another family's config: named."""
    if expected is not None and get_family(expected).name != found.name:
        raise ValueError(
            f"{source} holds a model of the {found.title} family (model.family={found.name}), but the config says "
            f"model.family={expected}; choose the model config of its family (conf/model/)"
        )


def family_of_tokenizer(tokenizer: Any) -> ModelFamily:
    """The family whose vision tokens the tokenizer knows (the more specific families are tried first)."""
    vocab = tokenizer.get_vocab()
    for family in sorted(FAMILIES.values(), key=lambda f: f.name != "internvl"):
        if family.never_sample and all(t in vocab for t in family.never_sample):
            return family
    raise ValueError(
        f"tokenizer {type(tokenizer).__name__} holds the vision tokens of no supported family ({supported()})"
    )


def family_of_processor(processor: Any) -> ModelFamily:
    """The family whose stock processor class this is (else the one its tokenizer names)."""
    for family in FAMILIES.values():
        if type(processor).__name__ == family.processor_class:
            return family
    return family_of_tokenizer(processor.tokenizer)
