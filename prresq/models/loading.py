"""The one model loader: policy, reference and processor from a local Hugging Face directory.

The same `from_pretrained` path loads `Qwen/Qwen2.5-VL-7B-Instruct` on a GPU cluster and the
embedded tiny model on a CPU. The tiny model is not a code branch: `build_tiny_model` *writes*
a real model directory (random Qwen2.5-VL weights from a config, a byte-level BPE tokenizer
trained offline with the Qwen special tokens and chat template, the stock Qwen2.5-VL processor
classes), and `load_policy` then reads it like any other checkpoint.

    python -m prresq.models --out .cache/tiny-qwen2.5-vl     # build (cached) and print a summary
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prresq.checkpoint_loading import UnsafeCheckpointError as UnsafeCheckpointError
from prresq.checkpoint_loading import load_checkpoint_file as load_checkpoint_file
from prresq.checkpoint_loading import read_lightning_checkpoint
from prresq.tiny_tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer

log = logging.getLogger(__name__)

# Sampling any of these from a (random or badly tuned) policy corrupts the multimodal positions.
VISION_SPECIAL_TOKENS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"]

# Stock Qwen2.5-VL image normalisation (OpenAI CLIP statistics).
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the embedded tiny Qwen2.5-VL (defaults: the sizes measured to learn on a CPU)."""

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


def _init_vision_linears(model: nn.Module, generator: torch.Generator) -> None:
    """std 1/sqrt(fan_in) for the vision tower: with 0.02 a random tower is blind to noise level."""
    for module in model.model.visual.modules():
        if isinstance(module, nn.Linear):
            std = 1.0 / math.sqrt(module.in_features)
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                if module.bias is not None:
                    module.bias.zero_()


def build_tiny_model(out_dir: str | Path, spec: TinySpec | None = None, force: bool = False) -> Path:
    """Write a random tiny Qwen2.5-VL model directory (cached by spec digest); return its path."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    spec = spec or TinySpec()
    out = Path(out_dir)
    marker = out / "prresq_tiny.json"
    if not force and marker.exists() and json.loads(marker.read_text()).get("digest") == spec.digest():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    tok = build_tokenizer(spec.vocab_size)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = 64 * math.ceil(len(tok) / 64)
    head_dim = spec.hidden_size // spec.num_attention_heads
    half = head_dim // 2  # mrope_section (temporal, height, width) must sum to head_dim / 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads,
            num_key_value_heads=spec.num_key_value_heads,
            max_position_embeddings=spec.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope},
            tie_word_embeddings=True,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
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
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    _init_vision_linears(model, torch.Generator().manual_seed(spec.seed))
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    common = dict(
        patch_size=spec.patch_size,
        merge_size=spec.spatial_merge_size,
        temporal_patch_size=spec.temporal_patch_size,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056, **common),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(min_pixels=3136, max_pixels=12845056, **common),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    marker.write_text(json.dumps({"digest": spec.digest(), "spec": asdict(spec)}, indent=2))
    return out


def load_processor(name_or_path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None) -> Any:
    """Load the stock processor; pixel caps bound the number of vision tokens per image."""
    from transformers import AutoProcessor

    kwargs: dict[str, Any] = {}
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    processor = AutoProcessor.from_pretrained(str(name_or_path))
    for sub in (processor.image_processor, getattr(processor, "video_processor", None)):
        if sub is None or not kwargs:
            continue
        size = dict(sub.size) if getattr(sub, "size", None) is not None else {}
        if min_pixels is not None:
            size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            size["longest_edge"] = max_pixels
        sub.size = size
    processor.tokenizer.padding_side = "left"
    return processor


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def ensure_model_dir(name_or_path: str | Path, tiny: dict[str, Any] | None = None) -> Path:
    """Return the model directory, writing the tiny model there first when `tiny` sizes are given."""
    path = Path(name_or_path).expanduser()
    if tiny is not None:
        return build_tiny_model(path, TinySpec(**tiny))
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model.name_or_path={path}: no config.json there. Point it at a local Hugging Face model "
            "directory (e.g. a downloaded Qwen/Qwen2.5-VL-7B-Instruct) or use model=tiny."
        )
    return path


def load_policy(
    name_or_path: str | Path,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    freeze_vision: bool = False,
    tiny: dict[str, Any] | None = None,
    lora: Any = None,
) -> nn.Module:
    """Load a Qwen2.5-VL policy from a local directory (Eq. 5's pi_theta).

    `lora` (the `model.lora` block, see `prresq.lora.LoraConfig`) injects fresh adapters. A directory
    written by an adapter export is loaded as its base model plus those adapters.
    """
    from transformers import AutoModelForImageTextToText

    from prresq.lora import LoraConfig, adapter_base, apply_lora, is_adapter_dir, load_adapter

    spec = LoraConfig.from_mapping(lora)
    if spec is not None and freeze_vision and spec.vision != "frozen":
        raise ValueError(f"model.freeze_vision=true contradicts model.lora.vision={spec.vision!r}; set one of them")
    if is_adapter_dir(name_or_path):
        if spec is not None:
            raise ValueError(
                f"{name_or_path} is a LoRA adapter export; model.lora must be null to load it "
                "(new adapters go on a full model directory)"
            )
        base = load_policy(adapter_base(name_or_path), dtype, attn_implementation, gradient_checkpointing=False)
        model = load_adapter(base, name_or_path)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        return model
    path = ensure_model_dir(name_or_path, tiny)
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype={dtype!r}: expected one of {sorted(_DTYPES)}")
    if attn_implementation == "flash_attention_2" and not torch.cuda.is_available():
        log.warning("model.attn_implementation=flash_attention_2 needs CUDA; falling back to sdpa")
        attn_implementation = "sdpa"
    model = AutoModelForImageTextToText.from_pretrained(
        str(path), dtype=_DTYPES[dtype], attn_implementation=attn_implementation
    )
    if spec is not None:
        apply_lora(model, spec, base_dir=path)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if freeze_vision and spec is None:  # with LoRA, model.lora.vision decides
        for p in model.model.visual.parameters():
            p.requires_grad_(False)
    return model


def load_reference(policy: nn.Module) -> nn.Module:
    """A frozen copy of the policy for the KL term (Eq. 6); never built when beta = 0."""
    import copy

    ref = copy.deepcopy(policy)
    ref.requires_grad_(False)
    ref.eval()
    return ref


# ----------------------------------------------------------------------------- scoring model (eval, infer)


def resolve_device(device: str | None) -> torch.device:
    """`auto` (or None): CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_scoring_model(
    model_cfg: Mapping[str, Any],
    checkpoint: str | Path | None = None,
    base_model: str | Path | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    device: str | None = "auto",
) -> tuple[nn.Module, Any]:
    """(policy in eval mode on `device`, processor) from the model group, an export dir or a `.ckpt`.

    For a `.ckpt` the policy is built from `base_model` or the checkpoint's `model.name_or_path`
    hyperparameter, then its `policy.*` weights are loaded (strictly); pixel caps default to the
    checkpoint's. dtype and attention implementation always come from `model_cfg`.
    """
    from prresq.lora import is_adapter_dir

    dtype = model_cfg.get("dtype", "float32")
    attn = model_cfg.get("attn_implementation", "sdpa")
    state, hp_model = None, {}
    if checkpoint is None:
        model_dir = ensure_model_dir(model_cfg["name_or_path"], model_cfg.get("tiny"))
    elif Path(checkpoint).is_dir() and (is_adapter_dir(checkpoint) or (Path(checkpoint) / "config.json").exists()):
        model_dir = Path(checkpoint)  # a full export, or a LoRA adapter export (loaded onto its base model)
    else:
        hparams, state = read_lightning_checkpoint(checkpoint)
        hp_model = dict(hparams.get("model") or {})
        if base_model is not None:
            model_dir = ensure_model_dir(base_model)
        elif "name_or_path" in hp_model:
            model_dir = ensure_model_dir(hp_model["name_or_path"], hp_model.get("tiny"))
        else:
            raise KeyError(f"{checkpoint}: no model.name_or_path in its hyperparameters; pass base_model=")
        min_pixels = min_pixels if min_pixels is not None else hparams.get("min_pixels")
        max_pixels = max_pixels if max_pixels is not None else hparams.get("max_pixels")
    processor = load_processor(model_dir, min_pixels, max_pixels)
    lora = hp_model.get("lora") if state is not None else None  # a LoRA run's .ckpt holds its adapters
    model = load_policy(model_dir, dtype=dtype, attn_implementation=attn, lora=lora)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise RuntimeError(
                f"{checkpoint}: policy weights do not match {model_dir}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]} (set base_model= to the model the run trained)"
            )
        log.info("loaded %d policy tensors from %s onto %s", len(state), checkpoint, model_dir)
    model.to(resolve_device(device))
    model.eval()
    return model, processor


def vision_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that must never be sampled (passed to `generate(suppress_tokens=...)`)."""
    return [tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".cache/tiny-qwen2.5-vl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    path = build_tiny_model(args.out, TinySpec(seed=args.seed), force=args.force)
    model = load_policy(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"tiny Qwen2.5-VL at {path}: {n / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
