"""The one model loader: policy, reference and processor from a local Hugging Face directory.

The same `from_pretrained` path loads `Qwen/Qwen2.5-VL-7B-Instruct` on a GPU cluster and the
embedded tiny model on a CPU. The tiny model is not a code branch: `build_tiny_model` *writes*
a real model directory (random weights from a config, a byte-level BPE tokenizer trained offline
with the family's special tokens and chat template, the family's stock processor classes; see
`prresq.models.family`), and `load_policy` then reads it like any other checkpoint. Nothing here
names a family: each one's specifics live in its module of this package.

    python -m prresq.models --out .cache/tiny-qwen2.5-vl     # build (cached) and print a summary
    python -m prresq.models --family qwen3_vl --out .cache/tiny-qwen3-vl
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prresq.checkpoint_loading import UnsafeCheckpointError as UnsafeCheckpointError
from prresq.checkpoint_loading import load_checkpoint_file as load_checkpoint_file
from prresq.checkpoint_loading import read_lightning_checkpoint
from prresq.models.families import (
    DEFAULT_FAMILY,
    FAMILIES,
    check_family,
    family_of,
    family_of_dir,
    family_of_processor,
    family_of_tokenizer,
    get_family,
)
from prresq.models.family import TinySpec
from prresq.models.qwen2_5_vl import IMAGE_MEAN as IMAGE_MEAN
from prresq.models.qwen2_5_vl import IMAGE_STD as IMAGE_STD
from prresq.models.qwen2_5_vl import Qwen25VL

log = logging.getLogger(__name__)

# Kept for old imports: the tiny Qwen2.5-VL's (the default family's) values.
VISION_SPECIAL_TOKENS = list(Qwen25VL.never_sample)


def build_tiny_model(
    out_dir: str | Path, spec: TinySpec | None = None, force: bool = False, family: str | None = None
) -> Path:
    """Write a random tiny model of `family` (default Qwen2.5-VL) to `out_dir` (cached by spec digest); return it."""
    fam = get_family(family)
    spec = spec or fam.spec_class()
    out = Path(out_dir)
    marker = out / "prresq_tiny.json"
    if not force and marker.exists() and json.loads(marker.read_text()).get("digest") == spec.digest():
        return out
    out.mkdir(parents=True, exist_ok=True)
    fam.build_tiny(out, spec)
    marker.write_text(json.dumps({"digest": spec.digest(), "spec": asdict(spec)}, indent=2))
    return out


def load_processor(name_or_path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None) -> Any:
    """Load the stock processor; pixel caps bound the number of vision tokens per image."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(name_or_path))
    family_of_processor(processor).apply_pixel_caps(processor, min_pixels, max_pixels)
    processor.tokenizer.padding_side = "left"
    return processor


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def ensure_model_dir(name_or_path: str | Path, tiny: dict[str, Any] | None = None, family: str | None = None) -> Path:
    """Return the model directory, writing the tiny model of `family` there first when `tiny` sizes are given.

    A directory of an unsupported family, or of another family than `family` (`model.family`), is an error
    naming the family its config.json holds.
    """
    path = Path(name_or_path).expanduser()
    if tiny is not None:
        fam = get_family(family)
        return build_tiny_model(path, fam.spec_class(**tiny), family=fam.name)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model.name_or_path={path}: no config.json there. Point it at a local Hugging Face model "
            "directory (e.g. a downloaded Qwen/Qwen2.5-VL-7B-Instruct) or use model=tiny."
        )
    check_family(family_of_dir(path), family, f"model.name_or_path={path}")
    return path


def load_policy(
    name_or_path: str | Path,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    freeze_vision: bool = False,
    tiny: dict[str, Any] | None = None,
    lora: Any = None,
    family: str | None = None,
) -> nn.Module:
    """Load a policy of any supported family from a local directory (Eq. 5's pi_theta).

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
        base = load_policy(
            adapter_base(name_or_path), dtype, attn_implementation, gradient_checkpointing=False, family=family
        )
        model = load_adapter(base, name_or_path)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        return model
    path = ensure_model_dir(name_or_path, tiny, family)
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
        for p in family_of(model).vision_module(model).parameters():
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
    family = model_cfg.get("family")
    state, hp_model = None, {}
    if checkpoint is None:
        model_dir = ensure_model_dir(model_cfg["name_or_path"], model_cfg.get("tiny"), family)
    elif Path(checkpoint).is_dir() and (is_adapter_dir(checkpoint) or (Path(checkpoint) / "config.json").exists()):
        model_dir = Path(checkpoint)  # a full export, or a LoRA adapter export (loaded onto its base model)
    else:
        hparams, state = read_lightning_checkpoint(checkpoint)
        hp_model = dict(hparams.get("model") or {})
        if base_model is not None:
            model_dir = ensure_model_dir(base_model)
        elif "name_or_path" in hp_model:
            model_dir = ensure_model_dir(hp_model["name_or_path"], hp_model.get("tiny"), hp_model.get("family"))
        else:
            raise KeyError(f"{checkpoint}: no model.name_or_path in its hyperparameters; pass base_model=")
        min_pixels = min_pixels if min_pixels is not None else hparams.get("min_pixels")
        max_pixels = max_pixels if max_pixels is not None else hparams.get("max_pixels")
    processor = load_processor(model_dir, min_pixels, max_pixels)
    lora = hp_model.get("lora") if state is not None else None  # a LoRA run's .ckpt holds its adapters
    model = load_policy(model_dir, dtype=dtype, attn_implementation=attn, lora=lora, family=family)
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
    """Token ids that must never be sampled (passed to `generate(suppress_tokens=...)`): the family's vision tokens."""
    return family_of_tokenizer(tokenizer).never_sample_ids(tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".cache/tiny-qwen2.5-vl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--family", default=DEFAULT_FAMILY, choices=sorted(FAMILIES))
    args = parser.parse_args()
    family = get_family(args.family)
    path = build_tiny_model(args.out, family.spec_class(seed=args.seed), force=args.force, family=family.name)
    model = load_policy(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"tiny {family.title} at {path}: {n / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
