"""Qwen3-VL (`Qwen/Qwen3-VL-{2,4,8}B-Instruct`): Qwen2.5-VL's chat tokens, placeholders and 3D rotary positions.

Differences from Qwen2.5-VL, all held here: 16-pixel patches merged 2 x 2 (32-pixel factor), a vision
tower with learned position embeddings and DeepStack features fed into early decoder layers,
interleaved multimodal rotary sections, and video frames separated by textual timestamps
(`<t seconds>` before each `<|vision_start|>`), so the temporal rotary index carries no seconds
(no `second_per_grid_ts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prresq.models.family import MediaGroup, TinySpec
from prresq.models.qwen2_5_vl import Qwen25VL, mrope_section

# Stock Qwen3-VL image normalisation.
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]


@dataclass(frozen=True)
class Qwen3VLTinySpec(TinySpec):
    """The tiny Qwen2.5-VL's sizes with Qwen3-VL's 16-pixel patches."""

    family: str = "qwen3_vl"
    patch_size: int = 16
    num_position_embeddings: int = 64  # learned vision position grid (8 x 8 patches, interpolated)
    # the stock processor's normalisation (part of the spec, so a tiny model written with another one is rebuilt)
    image_mean: tuple[float, float, float] = tuple(IMAGE_MEAN)  # type: ignore[assignment]
    image_std: tuple[float, float, float] = tuple(IMAGE_STD)  # type: ignore[assignment]


class Qwen3VL(Qwen25VL):
    name = "qwen3_vl"
    title = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    processor_class = "Qwen3VLProcessor"
    spec_class = Qwen3VLTinySpec
    lora_vision_targets = ("qkv", "proj", "linear_fc1", "linear_fc2")

    def text_config(self, spec: TinySpec, ids: dict[str, int], vocab: int) -> dict[str, Any]:
        cfg = super().text_config(spec, ids, vocab)
        head_dim = spec.hidden_size // spec.num_attention_heads
        cfg["head_dim"] = head_dim
        cfg["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": mrope_section(head_dim),
            "mrope_interleaved": True,
        }
        return cfg

    def image_normalisation(self, spec: TinySpec) -> tuple[list[float], list[float]]:
        assert isinstance(spec, Qwen3VLTinySpec)
        return list(spec.image_mean), list(spec.image_std)

    def vision_config(self, spec: TinySpec) -> dict[str, Any]:
        assert isinstance(spec, Qwen3VLTinySpec)
        return dict(
            depth=spec.vision_depth,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_intermediate_size,
            num_heads=spec.vision_num_heads,
            out_hidden_size=spec.hidden_size,
            patch_size=spec.patch_size,
            spatial_merge_size=spec.spatial_merge_size,
            temporal_patch_size=spec.temporal_patch_size,
            num_position_embeddings=spec.num_position_embeddings,
            deepstack_visual_indexes=[0],
        )

    def classes(self) -> tuple[Any, Any, Any, Any, Any]:
        from transformers import (
            Qwen2VLImageProcessor,
            Qwen3VLConfig,
            Qwen3VLForConditionalGeneration,
            Qwen3VLProcessor,
            Qwen3VLVideoProcessor,
        )

        return (
            Qwen3VLConfig,
            Qwen3VLForConditionalGeneration,
            Qwen3VLProcessor,
            Qwen2VLImageProcessor,
            Qwen3VLVideoProcessor,
        )

    def media_groups(self, config: Any) -> list[MediaGroup]:
        merge = int(config.vision_config.spatial_merge_size)
        return [
            MediaGroup(config.image_token_id, "pixel_values", "image_grid_thw", merge),
            MediaGroup(config.video_token_id, "pixel_values_videos", "video_grid_thw", merge),
        ]
