"""The global random generators' states (torch, CUDA, numpy, Python) as plain, `weights_only`-loadable values.

A result that is cached and reused in place of a computation must leave the generators where the
computation would have left them, or everything that samples afterwards diverges: `capture` after the
computation, store the states with the result, `restore` them after loading it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def numpy_state_to_plain(state: tuple) -> tuple:
    """numpy's RNG state with its key array as a tensor, so the states load with `torch.load(weights_only=True)`."""
    return (state[0], torch.from_numpy(state[1].astype(np.int64)), *state[2:])


def numpy_state_from_plain(state: tuple) -> tuple:
    return (state[0], state[1].numpy().astype(np.uint32), *state[2:])


def capture_rng_states() -> dict[str, Any]:
    """The current states of torch's CPU generator, every CUDA generator, numpy's and Python's `random`."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": numpy_state_to_plain(np.random.get_state()),
        "python": random.getstate(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the generators to states from `capture_rng_states` (CUDA only where both sides have it)."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(numpy_state_from_plain(states["numpy"]))
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
