"""The model-family seam: everything that differs between vision-language model families.

A family (one module per family in this package, registered in `prresq.models.families`) says how to
build its tiny offline model, which tokens are its vision placeholders and must never be sampled,
how its multimodal rotary positions are computed for a shared prompt prefix, how its pixel inputs
map to placeholder tokens (to repeat or slice a batch per sample), how its processor takes pixel
caps, and where its vision tower sits (freezing, LoRA, the warm-up's vision phase). The code outside
this package asks the family of a model, a processor or a directory and never names one.

Adding a family: one module here (a `ModelFamily` subclass), its entry in `families.FAMILIES`, a
`conf/model/<family>_<size>.yaml`, and its row in the README's family table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TinySpec:
    """Sizes of an embedded tiny model (defaults: the tiny Qwen2.5-VL's, the sizes measured to learn on a CPU)."""

    seed: int = 0
    vocab_size: int = 1024  # BPE merges; special tokens come on top
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    # Vision width 128 (not 64): measured, a 64-wide random tower plus a linear head reached held-out
    # SRCC ~0.6 on the noise set after 600 steps, a 128-wide one ~0.9 (lr 3e-4, batch 32).
    vision_hidden_size: int = 128
    vision_intermediate_size: int = 256
    vision_depth: int = 2
    vision_num_heads: int = 4
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    max_position_embeddings: int = 4096

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MediaGroup:
    """One kind of visual input of a processor batch and how it maps to placeholder tokens.

    Each medium (an image, a video, or an image tile) owns a run of pixel rows of `pixel_key` and a
    number of `token_id` placeholders in `input_ids`. With `grid_key` (a [num_media, 3] (t, h, w) patch
    grid) a medium has t*h*w pixel rows and t*h*w / merge**2 tokens; without it one pixel row (a tile)
    is one medium of `tokens_per_medium` tokens. `per_media_keys` are further per-medium inputs.
    """

    token_id: int
    pixel_key: str
    grid_key: str | None = None
    merge: int = 1
    tokens_per_medium: int = 1
    per_media_keys: tuple[str, ...] = ()

    def media_sizes(self, inputs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(placeholder tokens, pixel rows) of every medium of the batch, each [num_media]."""
        if self.grid_key is not None:
            rows = inputs[self.grid_key].prod(-1)
            return rows // (self.merge * self.merge), rows
        n = int(inputs[self.pixel_key].shape[0])
        return torch.full((n,), self.tokens_per_medium, dtype=torch.long), torch.ones(n, dtype=torch.long)

    def present(self, inputs: dict[str, Any]) -> bool:
        key = self.grid_key or self.pixel_key
        return inputs.get(key) is not None

    def spans(self, inputs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Per sample of the batch: (number of media, number of pixel rows), each [B], in row order."""
        tokens, rows = self.media_sizes(inputs)
        per_row = (inputs["input_ids"] == self.token_id).sum(1)  # [B] placeholders per sample
        cum_tokens = torch.cat([tokens.new_zeros(1), tokens.cumsum(0)])
        bounds = torch.cat([per_row.new_zeros(1), per_row.cumsum(0)]).to(cum_tokens)
        media_bounds = torch.searchsorted(cum_tokens, bounds)
        if not torch.equal(cum_tokens[media_bounds], bounds):
            raise ValueError(
                f"{self.pixel_key}: the placeholder tokens per sample {per_row.tolist()} do not split into whole media "
                f"of {tokens.tolist()} tokens"
            )
        cum_rows = torch.cat([rows.new_zeros(1), rows.cumsum(0)])
        return media_bounds.diff(), cum_rows[media_bounds].diff()


class ModelFamily:
    """Base of the families: class attributes describe it, methods do what differs between families."""

    name: ClassVar[str]  # the `model.family` value, e.g. "qwen2_5_vl"
    title: ClassVar[str]  # e.g. "Qwen2.5-VL"
    model_types: ClassVar[tuple[str, ...]]  # `model_type` values of its config.json
    processor_class: ClassVar[str]  # its stock processor's class name
    spec_class: ClassVar[type[TinySpec]] = TinySpec
    # Chat tokens: generation stops at these; the supervised answer ends with `end_of_turn`.
    stop_tokens: ClassVar[tuple[str, ...]] = ("<|im_end|>", "<|endoftext|>")
    end_of_turn: ClassVar[str] = "<|im_end|>"
    # Never sampled: one of these in a completion would corrupt the multimodal inputs of the next forward.
    never_sample: ClassVar[tuple[str, ...]] = ()
    # Parameter name prefixes of the vision tower (with its projector into the language model).
    vision_prefixes: ClassVar[tuple[str, ...]] = ()
    language_prefix: ClassVar[str] = "model.language_model."
    lora_targets: ClassVar[tuple[str, ...]] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    lora_vision_targets: ClassVar[tuple[str, ...]] = ()
    # False: the shared-prefix engine cannot reproduce the plain forward's positions; it uses the plain engine.
    shares_prefix: ClassVar[bool] = True

    # ----------------------------------------------------------------------------- tiny model
    def build_tiny(self, out: Path, spec: TinySpec) -> None:
        """Write a random tiny model + its tokenizer and stock processor to `out`."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- tokens and media
    def never_sample_ids(self, tokenizer: Any) -> list[int]:
        return [tokenizer.convert_tokens_to_ids(t) for t in self.never_sample]

    def stop_ids(self, tokenizer: Any) -> list[int]:
        return [tokenizer.convert_tokens_to_ids(t) for t in self.stop_tokens]

    def media_groups(self, config: Any) -> list[MediaGroup]:
        """The visual inputs of a processor batch for a model of this `config`."""
        raise NotImplementedError

    def placeholder_check(self, processor: Any, inputs: dict[str, Any]) -> None:
        """Raise when a batch's placeholder tokens do not match its visual inputs (a truncated prompt)."""

    # ----------------------------------------------------------------------------- positions
    def shareable(self, inputs: dict[str, Any]) -> bool:
        """True when the shared-prefix forward gives this batch the plain forward's positions."""
        return self.shares_prefix and inputs["input_ids"].shape[1] > 1

    def prompt_positions(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """Rotary positions [..., B, P] of the prompts, as the plain forward computes them."""
        raise NotImplementedError

    def generate_positions(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """The `position_ids` to hand `generate` for the prompts (it grows them by one per new token)."""
        return self.prompt_positions(model, inputs)

    def forward_positions(self, inputs: dict[str, Tensor]) -> Tensor | None:
        """Positions the plain (whole-sequence) forward needs passed in; None: the model computes them."""
        return None

    # ----------------------------------------------------------------------------- processor and pixels
    def size_factor(self, processor: Any) -> int:
        """Side lengths of resized pictures are multiples of this (patch size x spatial merge)."""
        ip = processor.image_processor
        return int(ip.patch_size) * int(getattr(ip, "merge_size", 1))

    def apply_pixel_caps(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
        """Bound the pixels (so the vision tokens) per picture: `shortest_edge`/`longest_edge` area caps."""
        for sub in (processor.image_processor, getattr(processor, "video_processor", None)):
            if sub is None or (min_pixels is None and max_pixels is None):
                continue
            size = dict(sub.size) if getattr(sub, "size", None) is not None else {}
            if min_pixels is not None:
                size["shortest_edge"] = min_pixels
            if max_pixels is not None:
                size["longest_edge"] = max_pixels
            sub.size = size

    def max_pixels(self, processor: Any) -> int | None:
        """The processor's pixel cap per picture (`size["longest_edge"]`, or its `max_pixels`)."""
        sub = processor.image_processor
        size = getattr(sub, "size", None) or {}
        value = size.get("longest_edge") if isinstance(size, Mapping) else getattr(size, "longest_edge", None)
        return int(value) if value is not None else getattr(sub, "max_pixels", None)

    def cap_pixels(self, processor: Any, cap: int) -> bool:
        """Lower the pixel cap of the image and video processors to `cap` where it is higher (or unset);
        returns whether it changed anything."""
        changed = False
        for sub in (processor.image_processor, getattr(processor, "video_processor", None)):
            if sub is None:
                continue
            size = dict(sub.size) if getattr(sub, "size", None) is not None else {}
            if size.get("longest_edge") is None or int(size["longest_edge"]) > cap:
                size["longest_edge"] = int(cap)
                if size.get("shortest_edge") is not None and int(size["shortest_edge"]) > cap:
                    size["shortest_edge"] = int(cap)
                sub.size = size
                changed = True
        return changed

    # ----------------------------------------------------------------------------- vision tower
    def is_vision_parameter(self, name: str) -> bool:
        return any(name.startswith(p) or f".{p}" in f".{name}" for p in self.vision_prefixes)

    def vision_module(self, model: nn.Module) -> nn.Module:
        """The vision tower (and projector): frozen by `model.freeze_vision`, trained by the warm-up's phase (a)."""
        raise NotImplementedError

    def vision_encoder(self, model: nn.Module) -> nn.Module:
        """The module that encodes pixels (called once per vision encoding)."""
        return self.vision_module(model)

    def vision_module_names(self) -> list[str]:
        """Attribute names of the vision modules under `model.model` (peft's `modules_to_save`)."""
        return [p.split(".")[1] for p in self.vision_prefixes]

    def pooled_image_features(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """One mean-pooled vision feature row per image [num_images, text hidden size] (warm-up phase (a))."""
        raise NotImplementedError


def read_model_type(model_dir: str | Path) -> str:
    """`model_type` of a model directory's config.json."""
    path = Path(model_dir) / "config.json"
    try:
        return str(json.loads(path.read_text())["model_type"])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: no readable model_type ({exc})") from exc
