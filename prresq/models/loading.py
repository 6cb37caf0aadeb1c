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
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prresq.checkpoint_loading import UnsafeCheckpointError as UnsafeCheckpointError
from prresq.checkpoint_loading import load_checkpoint_file as load_checkpoint_file
from prresq.checkpoint_loading import read_lightning_checkpoint, reading_weights
from prresq.file_lock import file_lock
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
from prresq.models.family import ModelFamily, TinySpec
from prresq.models.qwen2_5_vl import IMAGE_MEAN as IMAGE_MEAN
from prresq.models.qwen2_5_vl import IMAGE_STD as IMAGE_STD
from prresq.models.qwen2_5_vl import Qwen25VL

log = logging.getLogger(__name__)

# Kept for old imports: the tiny Qwen2.5-VL's (the default family's) values.
VISION_SPECIAL_TOKENS = list(Qwen25VL.never_sample)


TINY_MARKER = "prresq_tiny.json"  # {digest, spec} of a folder written by build_tiny_model


def tiny_digest(model_dir: str | Path) -> str | None:
    """The spec digest of the tiny model in `model_dir` (None when it holds none)."""
    marker = Path(model_dir) / TINY_MARKER
    try:
        return json.loads(marker.read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        return None


def tiny_model_path(root: str | Path, spec: TinySpec) -> Path:
    """Where the tiny model of `spec` lives under the tiny-model folder `root`: `<root>/<digest>`, one folder per
    spec (so a `model.tiny.*` override never rewrites the folder another spec's adapters were trained on), or
    `root` itself when it already holds this spec's model (a folder written by `build_tiny_model` directly)."""
    root = Path(root)
    return root if tiny_digest(root) == spec.digest() else root / spec.digest()


def model_fingerprint(model_dir: str | Path) -> str:
    """A digest of a model folder's identity: config.json, the tiny model's spec, and each weight file's name,
    size, first and last MiB (cheap for a 7B model, and any two tiny models differ in it)."""
    folder = Path(model_dir)
    h = hashlib.sha256()
    for name in ("config.json", TINY_MARKER):
        if (folder / name).is_file():
            h.update(name.encode() + (folder / name).read_bytes())
    chunk = 1 << 20
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        size = weights.stat().st_size
        h.update(f"{weights.name}:{size}".encode())
        with open(weights, "rb") as f:
            h.update(f.read(chunk))
            if size > chunk:
                f.seek(max(chunk, size - chunk))
                h.update(f.read(chunk))
    return h.hexdigest()[:16]


def build_tiny_model(
    out_dir: str | Path, spec: TinySpec | None = None, force: bool = False, family: str | None = None
) -> Path:
    """Write a random tiny model of `family` (default: the default family) directory; return its path.

    A folder that holds this spec's model is returned as it is. The model is written under a lock
    (`<parent>/.<name>.lock`, so concurrent processes write it once) into a temporary folder beside
    `out_dir`, then renamed to it. A folder holding another spec's model is never rewritten in place
    (adapters trained on it would load onto other weights): that is an error unless `force`.
    """
    fam = get_family(family)
    spec = spec or fam.spec_class()
    out = Path(out_dir)
    if not force and tiny_digest(out) == spec.digest():
        return out
    with file_lock(out.parent / f".{out.name}.lock"):
        if not force and tiny_digest(out) == spec.digest():
            return out  # written by another process while this one waited
        held = tiny_digest(out)
        if held is not None and not force:
            raise ValueError(
                f"{out} holds the tiny model of spec digest {held}, not {spec.digest()}; a model folder is not "
                "rewritten in place. Use its own folder (prresq.models.tiny_model_path) or force=True"
            )
        if out.exists() and not force and any(out.iterdir()):
            raise ValueError(f"{out}: not empty and not a tiny model folder; choose an empty folder for the tiny model")
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _write_tiny_model(tmp, spec, fam)
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def _write_tiny_model(out: Path, spec: TinySpec, family: ModelFamily) -> None:
    """The family writes its model, tokenizer and processor; the marker (spec and digest) comes last."""
    out.mkdir(parents=True)
    family.build_tiny(out, spec)
    (out / TINY_MARKER).write_text(json.dumps({"digest": spec.digest(), "spec": asdict(spec)}, indent=2))


def processor_max_pixels(processor: Any) -> int | None:
    """The processor's pixel cap per picture (its model family reads it)."""
    return family_of_processor(processor).max_pixels(processor)


def cap_pixels(processor: Any, cap: int) -> bool:
    """Lower the processor's pixel cap to `cap` where it is higher (or unset); returns whether it changed anything."""
    return family_of_processor(processor).cap_pixels(processor, cap)


def prompt_token_limit(model: nn.Module, max_new_tokens: int) -> int | None:
    """The longest prompt the model's context leaves room for: max_position_embeddings - max_new_tokens."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    context = getattr(text, "max_position_embeddings", None)
    return None if context is None else int(context) - int(max_new_tokens)


def load_processor(name_or_path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None) -> Any:
    """Load the stock processor; pixel caps bound the number of vision tokens per image."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(name_or_path))
    family_of_processor(processor).apply_pixel_caps(processor, min_pixels, max_pixels)
    processor.tokenizer.padding_side = "left"
    return processor


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def ensure_model_dir(name_or_path: str | Path, tiny: dict[str, Any] | None = None, family: str | None = None) -> Path:
    """Return the model directory; with `tiny` sizes, the tiny model of `family` and that spec under the tiny-model
    folder `name_or_path` (`tiny_model_path`: `<name_or_path>/<spec digest>`, written first when missing).

    A directory that already holds a model this function did not write (no `prresq_tiny.json`: a run's export,
    a downloaded checkpoint) is used as it is, never overwritten, even with `tiny` sizes (`model=tiny
    model.name_or_path=RUN/export`). A directory of an unsupported family, or of another family than `family`
    (`model.family`), is an error naming the family its config.json holds.
    """
    path = Path(name_or_path).expanduser()
    exported = tiny is not None and (path / "config.json").exists() and not (path / TINY_MARKER).exists()
    if tiny is not None and not exported:
        fam = get_family(family)
        spec = fam.spec_class(**tiny)
        return build_tiny_model(tiny_model_path(path, spec), spec, family=fam.name)
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

    from prresq.lora import LoraConfig, adapter_base, apply_lora, check_adapter_base, is_adapter_dir, load_adapter

    spec = LoraConfig.from_mapping(lora)
    if spec is not None and freeze_vision and spec.vision != "frozen":
        raise ValueError(f"model.freeze_vision=true contradicts model.lora.vision={spec.vision!r}; set one of them")
    if is_adapter_dir(name_or_path):
        if spec is not None:
            raise ValueError(
                f"{name_or_path} is a LoRA adapter export; model.lora must be null to load it "
                "(new adapters go on a full model directory)"
            )
        check_adapter_base(name_or_path)  # before loading the base: a rewritten base folder is an error
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
    with reading_weights(path):
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
    max_pixels_cap: int | None = None,
) -> tuple[nn.Module, Any]:
    """(policy in eval mode on `device`, processor) from the model group, an export dir or a `.ckpt`.

    For a `.ckpt` the policy is built from `base_model` or the checkpoint's `model.name_or_path`
    hyperparameter, then its `policy.*` weights are loaded (strictly); pixel caps default to the
    checkpoint's. Without a `max_pixels` from either, the processor's own cap is lowered to
    `max_pixels_cap` (the `scoring` group's default: as training caps pixels). dtype and attention
    implementation always come from `model_cfg`.
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
    if max_pixels is None and max_pixels_cap is not None and cap_pixels(processor, int(max_pixels_cap)):
        log.info("pixels per image or video frame capped to %d (scoring.max_pixels_cap)", max_pixels_cap)
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
