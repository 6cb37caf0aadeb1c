"""Model loading (`prresq.models.loading`): `from prresq.models import load_policy, ...` keeps working."""

from prresq.models.loading import (
    IMAGE_MEAN,
    IMAGE_STD,
    VISION_SPECIAL_TOKENS,
    TinySpec,
    UnsafeCheckpointError,
    build_tiny_model,
    ensure_model_dir,
    load_checkpoint_file,
    load_policy,
    load_processor,
    load_reference,
    load_scoring_model,
    resolve_device,
    vision_token_ids,
)

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "VISION_SPECIAL_TOKENS",
    "TinySpec",
    "UnsafeCheckpointError",
    "build_tiny_model",
    "ensure_model_dir",
    "load_checkpoint_file",
    "load_policy",
    "load_processor",
    "load_reference",
    "load_scoring_model",
    "resolve_device",
    "vision_token_ids",
]
