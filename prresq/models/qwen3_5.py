"""Qwen3.5 (`Qwen/Qwen3.5-*`): Qwen3-VL's vision side and processor on a hybrid decoder.

Three of every four decoder layers are Gated DeltaNet linear attention, whose state is a recurrence,
not keys/values: the shared-prefix cache (one prefill replayed under K completions) cannot hold it,
so this family uses the plain engine (`shares_prefix = False`, said at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prresq.models.family import TinySpec
from prresq.models.qwen2_5_vl import mrope_section
from prresq.models.qwen3_vl import Qwen3VL, Qwen3VLTinySpec


@dataclass(frozen=True)
class Qwen35TinySpec(Qwen3VLTinySpec):
    """The tiny Qwen3-VL's sizes; one linear-attention layer, then one full-attention layer."""

    family: str = "qwen3_5"
    linear_heads: int = 2
    linear_head_dim: int = 32


class Qwen35(Qwen3VL):
    name = "qwen3_5"
    title = "Qwen3.5"
    model_types = ("qwen3_5",)
    processor_class = "Qwen3_5Processor"  # the stock processor is Qwen3-VL's (same behaviour), so never matched
    spec_class = Qwen35TinySpec
    shares_prefix = False

    def text_config(self, spec: TinySpec, ids: dict[str, int], vocab: int) -> dict[str, Any]:
        assert isinstance(spec, Qwen35TinySpec)
        cfg = super().text_config(spec, ids, vocab)
        head_dim = spec.hidden_size // spec.num_attention_heads
        partial = 0.25  # the stock share of rotary dimensions
        cfg["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": mrope_section(int(head_dim * partial)),
            "mrope_interleaved": True,
            "partial_rotary_factor": partial,
        }
        cfg.update(
            layer_types=[
                "linear_attention" if (i + 1) % 2 else "full_attention" for i in range(spec.num_hidden_layers)
            ],
            linear_num_key_heads=spec.linear_heads,
            linear_num_value_heads=spec.linear_heads,
            linear_key_head_dim=spec.linear_head_dim,
            linear_value_head_dim=spec.linear_head_dim,
        )
        return cfg

    def vision_config(self, spec: TinySpec) -> dict[str, Any]:
        cfg = super().vision_config(spec)
        cfg.pop("deepstack_visual_indexes")
        return cfg

    def classes(self) -> tuple[Any, Any, Any, Any, Any]:
        from transformers import (
            Qwen2VLImageProcessor,
            Qwen3_5Config,
            Qwen3_5ForConditionalGeneration,
            Qwen3VLProcessor,
            Qwen3VLVideoProcessor,
        )

        return (
            Qwen3_5Config,
            Qwen3_5ForConditionalGeneration,
            Qwen3VLProcessor,
            Qwen2VLImageProcessor,
            Qwen3VLVideoProcessor,
        )
