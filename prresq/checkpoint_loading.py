"""Reading checkpoint files safely: `weights_only` loads, clear errors, the policy weights of a training run.

`load_checkpoint_file` never runs pickled code (`UnsafeCheckpointError` names the file and the object);
`reading_weights(folder)` turns the errors of a model folder's weight files (a pickle the weights-only
loader refuses, a malformed `.safetensors`) into errors in our words naming the folder and its files;
`read_lightning_checkpoint` returns a `prresq.train` checkpoint's hyperparameters and policy state dict
(`prresq.models.load_scoring_model` builds the policy they belong to).
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


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
        reason = _unpickling_reason(err)
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


def _unpickling_reason(err: Exception) -> str:
    """The line of torch's weights-only refusal that names the object (never its advice to load unsafely)."""
    parts = [p.strip() for p in str(err).split("\n") if p.strip()]
    return next((p for p in parts if "GLOBAL" in p or "Unsupported" in p), "an object outside tensors and containers")


@contextlib.contextmanager
def reading_weights(folder: str | Path, what: str = "model weights") -> Iterator[None]:
    """Translate the errors of reading a model folder's weight files into errors naming the folder and its files."""
    from safetensors import SafetensorError

    folder = Path(folder)
    try:
        yield
    except pickle.UnpicklingError as err:
        files = sorted(p.name for p in folder.glob("*.bin")) or sorted(p.name for p in folder.iterdir())
        raise UnsafeCheckpointError(
            f"refusing to load the {what} in {folder} ({', '.join(files[:4])}): a pickled weight file holds objects "
            f"that only the full unpickler can build, which could run code ({_unpickling_reason(err)}). Models "
            "exported by prresq are .safetensors; do not load files from untrusted sources."
        ) from None
    except SafetensorError as err:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        raise ValueError(
            f"the {what} in {folder} ({', '.join(files[:4])}) are not a valid .safetensors file ({err}): truncated, "
            "corrupt or crafted, and not loaded. Export the model again"
        ) from None


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
