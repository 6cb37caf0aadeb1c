"""LoRA policies (Hu et al. 2021, built on `peft`): the policy is the base model plus low-rank adapters.

`W x + (alpha / r) B A x` on the target projections, with B = 0 at initialisation, so the policy
starts equal to the base model. The KL reference of Eq. 6 is the **same module with its adapters
switched off** (`reference_model`): no second copy of the weights is built.

Configured by the Hydra field `model.lora` (null = full fine-tuning); keys left out take their
defaults from `LoraConfig` below, e.g. `python -m prresq.train 'model.lora={r:16}'`.

The adapters are injected into the Hugging Face model in place (`peft.inject_adapter_in_model`), so
the policy keeps its class and every code path (rollout, shared prefix, scoring) is unchanged.
An adapter export is peft's format (`adapter_config.json` + `adapter_model.safetensors`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

log = logging.getLogger(__name__)

VISION_MODES = ("frozen", "adapters", "full")
EXPORT_MODES = ("adapter", "merged")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PRRESQ_LORA = "prresq_lora.json"  # the LoraConfig the adapters were built from
PRRESQ_BASE = "prresq_base.json"  # the base model the adapters were trained on: path and fingerprint
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class LoraConfig:
    """The `model.lora` block: one default for every key.

    r, alpha, dropout: the adapter rank, scale numerator (update scaled by alpha / r) and input dropout.
        dropout defaults to 0: the policy's log-probs stay deterministic (the ratio and KL of Eq. 5-6 compare
        like with like), and each adapted projection does not keep a dropped-out copy of its input for
        backward (measured: with 0.05 the small model's LoRA step peaked at 0.72x the full step's RSS).
    target_modules: leaf names of the language model's linear layers that get adapters (attention and MLP).
    vision: the vision tower is `frozen`, gets `adapters` on `vision_target_modules` (null: the model family's
        names, `prresq.models`), or is trained in `full` (a trainable copy; the reference keeps the original tower).
    export: what `export` writes: the `adapter` alone (plus processor) or the `merged` full model.
    """

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    vision: str = "frozen"
    vision_target_modules: tuple[str, ...] | None = None
    export: str = "adapter"

    def __post_init__(self) -> None:
        if int(self.r) < 1:
            raise ValueError(f"model.lora.r={self.r}: the rank must be >= 1")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"model.lora.dropout={self.dropout}: expected a probability in [0, 1)")
        if self.vision not in VISION_MODES:
            raise ValueError(f"model.lora.vision={self.vision!r}: expected one of {list(VISION_MODES)}")
        if self.export not in EXPORT_MODES:
            raise ValueError(f"model.lora.export={self.export!r}: expected one of {list(EXPORT_MODES)}")
        for key in ("target_modules", "vision_target_modules"):
            value = getattr(self, key)
            if value is None and key == "vision_target_modules":
                continue
            names = (value,) if isinstance(value, str) else tuple(value)
            if not names or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"model.lora.{key}={value!r}: expected a non-empty list of module names")
            object.__setattr__(self, key, names)

    @classmethod
    def from_mapping(cls, cfg: LoraConfig | Mapping[str, Any] | None) -> LoraConfig | None:
        """`model.lora` (null, a mapping of some keys, or a LoraConfig) -> LoraConfig or None."""
        if cfg is None or isinstance(cfg, LoraConfig):
            return cfg
        if not isinstance(cfg, Mapping):
            raise TypeError(f"model.lora={cfg!r}: expected null or a mapping such as {{r: 16}}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise KeyError(f"model.lora: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**dict(cfg))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def target_module_names(model: nn.Module, spec: LoraConfig) -> list[str]:
    """Full names of the linear layers that get adapters; unknown leaf names are an error listing the model's."""
    from prresq.models.families import family_of

    family = family_of(model)
    linears = _linear_names(model)
    wanted = [((family.language_prefix,), spec.target_modules, "target_modules")]
    if spec.vision == "adapters":
        wanted.append(
            (family.vision_prefixes, spec.vision_target_modules or family.lora_vision_targets, "vision_target_modules")
        )
    chosen: list[str] = []
    for prefixes, leaves, key in wanted:
        prefix = prefixes[0] if len(prefixes) == 1 else list(prefixes)
        inside = [n for n in linears if n.startswith(tuple(prefixes))]
        missing = [leaf for leaf in leaves if not any(n.rsplit(".", 1)[-1] == leaf for n in inside)]
        if missing:
            available = sorted({n.rsplit(".", 1)[-1] for n in inside})
            raise ValueError(
                f"model.lora.{key}: {missing} match no linear layer under {prefix!r}; "
                f"its linear layers are named {available}"
            )
        chosen += [n for n in inside if n.rsplit(".", 1)[-1] in leaves]
    return chosen


def apply_lora(model: nn.Module, spec: LoraConfig, base_dir: str | Path | None = None) -> nn.Module:
    """Inject adapters into `model` in place (only adapter weights, plus a `full` vision copy, stay trainable)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    from prresq.models.families import family_of

    names = target_module_names(model, spec)
    pattern = "|".join(re.escape(n) for n in names)
    peft_cfg = PeftLoraConfig(
        r=int(spec.r),
        lora_alpha=float(spec.alpha),
        lora_dropout=float(spec.dropout),
        target_modules=f"^(?:{pattern})$",
        modules_to_save=family_of(model).vision_module_names() if spec.vision == "full" else None,
        bias="none",
        base_model_name_or_path=None if base_dir is None else str(Path(base_dir).resolve()),
    )
    inject_adapter_in_model(peft_cfg, model, ADAPTER_NAME)
    for name, param in model.named_parameters():
        param.requires_grad_(is_adapter_parameter(name))
    model.peft_config = {ADAPTER_NAME: peft_cfg}  # what peft's state-dict helpers read
    model.prresq_lora = spec
    return model


def is_adapter_parameter(name: str) -> bool:
    """Parameters that LoRA trains: the low-rank factors and the `modules_to_save` copies."""
    return "lora_" in name or ".modules_to_save." in name


def _adapter_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    return [m for m in model.modules() if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))]


def has_adapters(model: nn.Module) -> bool:
    return getattr(model, "prresq_lora", None) is not None


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """The base model: adapters (and `modules_to_save` copies) off for the block, then back on.

    peft's toggle also clears `requires_grad` of the adapter weights; it is restored exactly afterwards.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    layers = _adapter_layers(model)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def reference_model(policy: nn.Module, reference: nn.Module | None) -> Iterator[nn.Module]:
    """The KL reference (Eq. 6): the frozen copy when one was built, else the policy without adapters."""
    if reference is not None:
        yield reference
        return
    if not has_adapters(policy):
        raise RuntimeError("no reference model: the policy has no adapters to disable and no frozen copy was built")
    with adapters_disabled(policy) as base:
        yield base


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights in place (W <- W + alpha/r B A); the model is plain afterwards."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            replacement = module.get_base_layer()
        elif isinstance(module, ModulesToSaveWrapper):
            replacement = module.modules_to_save[ADAPTER_NAME]
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
    for attr in ("peft_config", "prresq_lora"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def save_adapter(model: nn.Module, out_dir: str | Path) -> Path:
    """peft's adapter format: adapter_config.json (with the base model path) + adapter_model.safetensors."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out / ADAPTER_WEIGHTS))
    model.peft_config[ADAPTER_NAME].save_pretrained(str(out))
    (out / PRRESQ_LORA).write_text(json.dumps(model.prresq_lora.to_dict(), indent=2))
    base = model.peft_config[ADAPTER_NAME].base_model_name_or_path
    if base:
        from prresq.models import model_fingerprint

        record = {"base_model": str(base), "fingerprint": model_fingerprint(base)}
        (out / PRRESQ_BASE).write_text(json.dumps(record, indent=2))
    return out


def check_adapter_base(adapter_dir: str | Path) -> None:
    """Raise when the base model folder of an adapter export is no longer the model it was trained on.

    The export records the base folder's `prresq.models.model_fingerprint` (`prresq_base.json`); a folder
    rewritten since (another tiny spec, other weights) has another one, and the adapters would load onto
    other weights with other outputs. An export without the record (written before it existed) is loaded
    with a warning.
    """
    from prresq.models import model_fingerprint, tiny_digest

    path = Path(adapter_dir)
    base = adapter_base(path)
    record_path = path / PRRESQ_BASE
    if not record_path.is_file():
        log.warning(
            "%s: no %s; cannot check that %s is the model these adapters were trained on", path, PRRESQ_BASE, base
        )
        return
    recorded = json.loads(record_path.read_text()).get("fingerprint")
    current = model_fingerprint(base)
    if recorded != current:
        tiny = tiny_digest(base)
        now = f" (now the tiny model of spec digest {tiny})" if tiny else ""
        raise ValueError(
            f"{path}: these adapters were trained on the base model {base} with fingerprint {recorded}, but that "
            f"folder now holds a model with fingerprint {current}{now}; loading them onto it would give other "
            "outputs. Restore the base model it was trained on, or export a merged model "
            "(model.lora.export=merged)"
        )


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Inject the adapters of an adapter export into its base model and load their weights."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from prresq.checkpoint_loading import reading_weights

    path = Path(adapter_dir)
    check_adapter_base(path)
    spec = LoraConfig.from_mapping(json.loads((path / PRRESQ_LORA).read_text()))
    apply_lora(model, spec, adapter_base(path))
    with reading_weights(path, "adapter weights"):
        weights = load_file(str(path / ADAPTER_WEIGHTS))
    result = set_peft_model_state_dict(model, weights, adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if is_adapter_parameter(k)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{path}: adapter weights do not fit the base model: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return model


def is_adapter_dir(path: str | Path) -> bool:
    """A directory written by an adapter export (adapter_config.json, no full config.json)."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).exists() and not (path / "config.json").exists()


def adapter_base(path: str | Path) -> Path:
    """The base model directory an adapter export was trained on (its adapter_config.json)."""
    base = json.loads((Path(path) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{Path(path) / ADAPTER_CONFIG}: no base_model_name_or_path; cannot find the base model")
    return Path(base)


def check_checkpoint_kind(state_dict: Mapping[str, Any], lora_run: bool, source: str) -> None:
    """Resuming a LoRA run from a full fine-tune checkpoint (or the reverse) is an error naming both."""
    lora_ckpt = any("lora_A" in key for key in state_dict)
    if lora_ckpt == lora_run:
        return
    what = {True: "a LoRA run (model.lora set)", False: "a full fine-tune (model.lora=null)"}
    raise ValueError(
        f"{source}: the checkpoint is from {what[lora_ckpt]} but this run is {what[lora_run]}; "
        "set model.lora to match the checkpoint"
    )


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
