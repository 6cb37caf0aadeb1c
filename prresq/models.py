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
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Sampling any of these from a (random or badly tuned) policy corrupts the multimodal positions.
VISION_SPECIAL_TOKENS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"]

# The Qwen2-VL / Qwen2.5-VL chat template (system default, image/video placeholders).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

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


def _tokenizer_corpus() -> list[str]:
    path = Path(__file__).parent / "assets" / "tokenizer_corpus.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    # Numbers as models write scores: 1.0 .. 5.0 in steps of 0.01, so every score is a few tokens.
    numbers = [f"<answer>{x / 100:.2f}</answer>" for x in range(100, 501)]
    return lines * 20 + numbers


def build_tokenizer(vocab_size: int) -> Any:
    """Train a byte-level BPE tokenizer offline and wrap it in the real Qwen2 tokenizer class."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tok = Qwen2Tokenizer(
        vocab=bpe.get_vocab(),
        merges=_merges(bpe),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.add_tokens(["<think>", "</think>", "<answer>", "</answer>"])
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 32768
    return tok


def _merges(bpe: Any) -> list[tuple[str, str]]:
    state = json.loads(bpe.to_str())
    merges = state["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


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


class UnsafeCheckpointError(ValueError):
    """A checkpoint file that would need to run pickled code to load; it is never unpickled."""


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """`torch.load(weights_only=True)` of a `.ckpt` (tensors, numbers, strings, containers only).

    A truncated or corrupt file is a `ValueError` naming it. Anything else is refused with
    `UnsafeCheckpointError` naming the file and the object that asked to be unpickled: a crafted checkpoint can run arbitrary code through the full unpickler, and
    `prresq.train` never writes such objects (its RNG states are stored as plain tensors and tuples).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        parts = [p.strip() for p in str(err).split("\n") if p.strip()]
        reason = next((p for p in parts if "GLOBAL" in p or "Unsupported" in p), parts[-1] if parts else "")
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it holds objects that only the full unpickler can build, "
            f"which could run code ({reason}). Checkpoints written by prresq.train load with "
            "weights_only=True; do not load files from untrusted sources."
        ) from None
    except (EOFError, OSError, RuntimeError) as err:
        size = path.stat().st_size
        raise ValueError(
            f"checkpoint {path} ({size} bytes) is not a readable torch checkpoint: truncated or corrupt "
            f"({type(err).__name__}: {str(err) or 'unexpected end of file'})"
        ) from None


# ----------------------------------------------------------------------------- scoring model (eval, infer)


def resolve_device(device: str | None) -> torch.device:
    """`auto` (or None): CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def read_lightning_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A `prresq.train` checkpoint -> (hyperparameters, policy state dict without the `policy.` prefix)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory, not a Lightning .ckpt file. A DeepSpeed checkpoint must be consolidated "
            "first (lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict); an "
            "exported model directory needs a config.json"
        )
    ckpt = load_checkpoint_file(path, mmap=True)
    state = ckpt.get("state_dict") or {}
    policy = {k[len("policy.") :]: v for k, v in state.items() if k.startswith("policy.")}
    if not policy:
        raise KeyError(f"{path}: no 'policy.*' weights in the checkpoint's state_dict (is it a GRPOModule checkpoint?)")
    return dict(ckpt.get("hyper_parameters") or {}), policy


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
