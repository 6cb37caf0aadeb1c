"""Model loading (`prresq.models.loading`) and the model-family seam (`family.py`, `families.py`, one module per family).

`from prresq.models import load_policy, ...` keeps working.
"""

from prresq.models.families import FAMILIES, family_of, family_of_dir, family_of_processor, get_family
from prresq.models.family import MediaGroup, ModelFamily
from prresq.models.loading import (
    IMAGE_MEAN,
    IMAGE_STD,
    TINY_MARKER,
    VISION_SPECIAL_TOKENS,
    TinySpec,
    UnsafeCheckpointError,
    build_tiny_model,
    cap_pixels,
    ensure_model_dir,
    load_checkpoint_file,
    load_policy,
    load_processor,
    load_reference,
    load_scoring_model,
    model_fingerprint,
    processor_max_pixels,
    prompt_token_limit,
    resolve_device,
    tiny_digest,
    tiny_model_path,
    vision_token_ids,
)

__all__ = [
    "TINY_MARKER",
    "cap_pixels",
    "model_fingerprint",
    "processor_max_pixels",
    "prompt_token_limit",
    "tiny_digest",
    "tiny_model_path",
    "FAMILIES",
    "MediaGroup",
    "ModelFamily",
    "family_of",
    "family_of_dir",
    "family_of_processor",
    "get_family",
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
