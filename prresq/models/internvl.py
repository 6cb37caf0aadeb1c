"""InternVL (`OpenGVLab/InternVL3-{1,2,8}B-hf`): an InternViT tower, a pixel-shuffle projector and a Qwen2 decoder.

Not a Qwen-VL: pictures are fixed-size square tiles (`image_size`, no patch grid), each `image_seq_length`
`<IMG_CONTEXT>` placeholders between `<img>` and `</img>`; a video is its frames, one tile each
("Frame1: <img>...</img>"), all in `pixel_values`. Positions are the decoder's plain 1D rotary
positions: the shared prefix continues them from the last prompt token, and the plain forward is given
the same mask-aware positions `generate` uses (left padding), so both paths number tokens alike.
Pixel caps bound the tiles per picture (`max_pixels // tile area`, a thumbnail tile comes on top when
a picture is cut); the tiny model's processor keeps one tile per picture unless capped otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prresq.models.family import MediaGroup, ModelFamily, TinySpec
from prresq.tiny_tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer

IMAGE_MEAN = [0.485, 0.456, 0.406]  # stock InternVL normalisation (ImageNet statistics)
IMAGE_STD = [0.229, 0.224, 0.225]
NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
# The tiny chat template: Qwen's, with InternVL's placeholders (the processor expands them into tiles).
INTERNVL_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n"
).replace("<|vision_start|><|video_pad|><|vision_end|>", "<video>\n")


@dataclass(frozen=True)
class InternVLTinySpec(TinySpec):
    """Tiny InternVL: 56-pixel tiles of 14-pixel patches, pixel-shuffled 2 x 2 -> 4 tokens per tile."""

    family: str = "internvl"
    image_size: int = 56
    downsample_ratio: float = 0.5


class InternVL(ModelFamily):
    name = "internvl"
    title = "InternVL"
    model_types = ("internvl",)
    processor_class = "InternVLProcessor"
    spec_class = InternVLTinySpec
    never_sample = ("<IMG_CONTEXT>", "<img>", "</img>", "<video>")
    vision_prefixes = ("model.vision_tower.", "model.multi_modal_projector.")
    lora_vision_targets = ("q_proj", "k_proj", "v_proj", "projection_layer", "fc1", "fc2")

    def build_tiny(self, out: Path, spec: TinySpec) -> None:
        from transformers import (
            GotOcr2ImageProcessor,
            InternVLConfig,
            InternVLForConditionalGeneration,
            InternVLProcessor,
            InternVLVideoProcessor,
        )

        assert isinstance(spec, InternVLTinySpec)
        torch.manual_seed(spec.seed)
        tok = build_tokenizer(spec.vocab_size, NAMED_TOKENS, INTERNVL_CHAT_TEMPLATE)
        ids = {t: tok.convert_tokens_to_ids(t) for t in [*SPECIAL_TOKENS, *NAMED_TOKENS.values()]}
        vocab = 64 * math.ceil(len(tok) / 64)
        seq = int((spec.image_size // spec.patch_size) ** 2 * spec.downsample_ratio**2)
        config = InternVLConfig(
            vision_config=dict(
                hidden_size=spec.vision_hidden_size,
                num_hidden_layers=spec.vision_depth,
                num_attention_heads=spec.vision_num_heads,
                intermediate_size=spec.vision_intermediate_size,
                image_size=[spec.image_size, spec.image_size],
                patch_size=[spec.patch_size, spec.patch_size],
            ),
            text_config=dict(
                model_type="qwen2",
                vocab_size=vocab,
                hidden_size=spec.hidden_size,
                intermediate_size=spec.intermediate_size,
                num_hidden_layers=spec.num_hidden_layers,
                num_attention_heads=spec.num_attention_heads,
                num_key_value_heads=spec.num_key_value_heads,
                max_position_embeddings=spec.max_position_embeddings,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
                tie_word_embeddings=True,
                bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"],
            ),
            image_token_id=ids["<IMG_CONTEXT>"],
            image_seq_length=seq,
            downsample_ratio=spec.downsample_ratio,
            tie_word_embeddings=True,
        )
        model = InternVLForConditionalGeneration(config)
        gen = torch.Generator().manual_seed(spec.seed)
        for module in (model.model.vision_tower, model.model.multi_modal_projector):
            for sub in module.modules():  # std 1/sqrt(fan_in): with 0.02 a random tower is blind to noise level
                if isinstance(sub, nn.Linear):
                    with torch.no_grad():
                        sub.weight.copy_(torch.randn(sub.weight.shape, generator=gen) / math.sqrt(sub.in_features))
                        if sub.bias is not None:
                            sub.bias.zero_()
        model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
        model.generation_config.pad_token_id = ids["<|endoftext|>"]
        model.save_pretrained(out)
        size = {"height": spec.image_size, "width": spec.image_size}
        norm = dict(image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
        processor = InternVLProcessor(
            image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False, max_patches=1, **norm),
            tokenizer=tok,
            video_processor=InternVLVideoProcessor(size=size, **norm),
            image_seq_length=seq,
            chat_template=INTERNVL_CHAT_TEMPLATE,
        )
        processor.save_pretrained(out)

    # ----------------------------------------------------------------------------- tokens and media
    def media_groups(self, config: Any) -> list[MediaGroup]:
        # Images and video frames share `pixel_values`: one tile (row) of `image_seq_length` placeholders each.
        return [MediaGroup(config.image_token_id, "pixel_values", tokens_per_medium=int(config.image_seq_length))]

    def placeholder_check(self, processor: Any, inputs: dict[str, Any]) -> None:
        if inputs.get("pixel_values") is None:
            return
        expected = int(inputs["pixel_values"].shape[0]) * int(processor.image_seq_length)
        found = int((inputs["input_ids"] == processor.image_token_id).sum())
        if found != expected:
            raise RuntimeError(f"{found} vision placeholder tokens for pixel_values expecting {expected}")

    # ----------------------------------------------------------------------------- positions
    @staticmethod
    def _text_positions(mask: Tensor) -> Tensor:
        return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)

    def prompt_positions(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """1D positions [B, P] counted over the attention mask (what `generate` gives left-padded rows)."""
        return self._text_positions(inputs["attention_mask"])

    def forward_positions(self, inputs: dict[str, Tensor]) -> Tensor | None:
        return self._text_positions(inputs["attention_mask"])

    # ----------------------------------------------------------------------------- processor and pixels
    def size_factor(self, processor: Any) -> int:
        return int(processor.image_processor.size["height"])

    def apply_pixel_caps(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
        """Pictures are cut into fixed-size tiles: the caps bound the number of tiles (video frames: one tile each)."""
        ip = processor.image_processor
        area = int(ip.size["height"]) * int(ip.size["width"])
        if max_pixels is not None:
            ip.max_patches = max(1, int(max_pixels) // area)
        if min_pixels is not None:
            ip.min_patches = min(max(1, int(min_pixels) // area), int(ip.max_patches))

    def max_pixels(self, processor: Any) -> int | None:
        ip = processor.image_processor
        return int(ip.max_patches) * int(ip.size["height"]) * int(ip.size["width"])

    def cap_pixels(self, processor: Any, cap: int) -> bool:
        ip = processor.image_processor
        tiles = max(1, int(cap) // (int(ip.size["height"]) * int(ip.size["width"])))
        if int(ip.max_patches) <= tiles:
            return False
        ip.max_patches = tiles
        ip.min_patches = min(int(getattr(ip, "min_patches", 1)), tiles)
        return True

    # ----------------------------------------------------------------------------- vision tower
    def vision_module(self, model: nn.Module) -> nn.Module:
        return nn.ModuleDict({"vision_tower": model.model.vision_tower, "projector": model.model.multi_modal_projector})

    def vision_encoder(self, model: nn.Module) -> nn.Module:
        return model.model.vision_tower

    def pooled_image_features(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """Mean over the tiles of each sample (warm-up batches hold one picture per sample)."""
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"])
        features = features.pooler_output if hasattr(features, "pooler_output") else features  # [tiles, tokens, H]
        _, rows = self.media_groups(model.config)[0].spans(inputs)
        return torch.stack([f.mean((0, 1)) for f in torch.split(features, rows.tolist())])
