"""Qwen2.5-VL (`Qwen/Qwen2.5-VL-{3,7}B-Instruct`): the papers' model, and the embedded tiny default.

Vision: 14-pixel patches merged 2 x 2 (28-pixel factor), `<|image_pad|>` / `<|video_pad|>` placeholders
between `<|vision_start|>` and `<|vision_end|>`, patch grids `image_grid_thw` / `video_grid_thw`. Video:
frames through `videos=` with their sampling fps, from which the processor sets `second_per_grid_ts`
(temporal rotary positions in seconds). Positions: 3D multimodal rotary positions (`get_rope_index`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prresq.models.family import MediaGroup, ModelFamily, TinySpec
from prresq.tiny_tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer

# Stock Qwen2.5-VL image normalisation (OpenAI CLIP statistics).
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def init_vision_linears(visual: nn.Module, generator: torch.Generator) -> None:
    """std 1/sqrt(fan_in) for the vision tower: with 0.02 a random tower is blind to noise level."""
    for module in visual.modules():
        if isinstance(module, nn.Linear):
            std = 1.0 / math.sqrt(module.in_features)
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                if module.bias is not None:
                    module.bias.zero_()


def mrope_section(head_dim: int) -> list[int]:
    """(temporal, height, width) rotary sections summing to head_dim / 2."""
    half = head_dim // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


class Qwen25VL(ModelFamily):
    name = "qwen2_5_vl"
    title = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    processor_class = "Qwen2_5_VLProcessor"
    never_sample = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")
    vision_prefixes = ("model.visual.",)
    lora_vision_targets = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")

    # ----------------------------------------------------------------------------- tiny model
    def text_config(self, spec: TinySpec, ids: dict[str, int], vocab: int) -> dict[str, Any]:
        head_dim = spec.hidden_size // spec.num_attention_heads
        return dict(
            vocab_size=vocab,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads,
            num_key_value_heads=spec.num_key_value_heads,
            max_position_embeddings=spec.max_position_embeddings,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": mrope_section(head_dim),
            },
            tie_word_embeddings=True,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        )

    def vision_config(self, spec: TinySpec) -> dict[str, Any]:
        return dict(
            depth=spec.vision_depth,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_intermediate_size,
            num_heads=spec.vision_num_heads,
            out_hidden_size=spec.hidden_size,
            patch_size=spec.patch_size,
            spatial_merge_size=spec.spatial_merge_size,
            temporal_patch_size=spec.temporal_patch_size,
            window_size=spec.patch_size * spec.spatial_merge_size * 4,
            fullatt_block_indexes=[spec.vision_depth - 1],
        )

    def classes(self) -> tuple[Any, Any, Any, Any, Any]:
        """(config, model, processor, image processor, video processor) classes."""
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLVideoProcessor,
        )

        return (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLVideoProcessor,
        )

    def image_normalisation(self, spec: TinySpec) -> tuple[list[float], list[float]]:
        """(mean, std) of the stock image processor of this family, written into the tiny model's processor."""
        return IMAGE_MEAN, IMAGE_STD

    def build_tiny(self, out: Path, spec: TinySpec) -> None:
        config_cls, model_cls, processor_cls, image_cls, video_cls = self.classes()
        torch.manual_seed(spec.seed)
        tok = build_tokenizer(spec.vocab_size)
        ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        vocab = 64 * math.ceil(len(tok) / 64)
        config = config_cls(
            text_config=self.text_config(spec, ids, vocab),
            vision_config=self.vision_config(spec),
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=True,
        )
        model = model_cls(config)
        init_vision_linears(model.model.visual, torch.Generator().manual_seed(spec.seed))
        model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
        model.generation_config.pad_token_id = ids["<|endoftext|>"]
        model.save_pretrained(out)
        image_mean, image_std = self.image_normalisation(spec)
        common = dict(
            patch_size=spec.patch_size,
            merge_size=spec.spatial_merge_size,
            temporal_patch_size=spec.temporal_patch_size,
            image_mean=list(image_mean),
            image_std=list(image_std),
        )
        processor = processor_cls(
            image_processor=image_cls(min_pixels=3136, max_pixels=12845056, **common),
            tokenizer=tok,
            video_processor=video_cls(min_pixels=3136, max_pixels=12845056, **common),
            chat_template=CHAT_TEMPLATE,
        )
        processor.save_pretrained(out)

    # ----------------------------------------------------------------------------- tokens and media
    def media_groups(self, config: Any) -> list[MediaGroup]:
        merge = int(config.vision_config.spatial_merge_size)
        return [
            MediaGroup(config.image_token_id, "pixel_values", "image_grid_thw", merge),
            MediaGroup(
                config.video_token_id, "pixel_values_videos", "video_grid_thw", merge, 1, ("second_per_grid_ts",)
            ),
        ]

    def placeholder_check(self, processor: Any, inputs: dict[str, Any]) -> None:
        tok = processor.tokenizer
        merge = int(getattr(processor.image_processor, "merge_size", 2))
        for token, grid_key in (("<|image_pad|>", "image_grid_thw"), ("<|video_pad|>", "video_grid_thw")):
            if grid_key not in inputs:
                continue
            expected = int(inputs[grid_key].prod(-1).sum()) // (merge * merge)
            found = int((inputs["input_ids"] == tok.convert_tokens_to_ids(token)).sum())
            if found != expected:
                raise RuntimeError(f"{found} vision placeholder tokens for {grid_key} expecting {expected}")

    # ----------------------------------------------------------------------------- positions
    def shareable(self, inputs: dict[str, Any]) -> bool:
        """Visual inputs with their token types: the case the plain forward gives 3D rotary positions."""
        has_media = inputs.get("image_grid_thw") is not None or inputs.get("video_grid_thw") is not None
        has_types = inputs.get("mm_token_type_ids") is not None
        return self.shares_prefix and has_media and has_types and inputs["input_ids"].shape[1] > 1

    def prompt_positions(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """3D rotary positions of the prompts [3, B, P] (padded columns at 0), as the plain forward computes them."""
        positions, _ = model.model.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"),
            second_per_grid_ts=inputs.get("second_per_grid_ts"),
            attention_mask=inputs.get("attention_mask"),
        )
        return positions

    def generate_positions(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """A text row (for the attention mask) on top of the three rotary rows: [4, B, P]."""
        mask = inputs["attention_mask"]
        text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        return torch.cat([text[None], self.prompt_positions(model, inputs)], dim=0)

    # ----------------------------------------------------------------------------- vision tower
    def vision_module(self, model: nn.Module) -> nn.Module:
        return model.model.visual

    def pooled_image_features(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        visual = model.model.visual
        merge = int(getattr(visual, "spatial_merge_size", 2))
        grid = inputs["image_grid_thw"]
        out = visual(inputs["pixel_values"], grid_thw=grid)
        tokens = out.pooler_output if hasattr(out, "pooler_output") else out
        counts = (grid.prod(-1) // merge**2).tolist()
        return torch.stack([t.mean(0) for t in torch.split(tokens, counts)])  # one row per image
