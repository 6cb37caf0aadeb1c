"""Batch rows: how a processor batch's prompts are repeated K times or sliced into micro-batches.

The visual inputs follow their prompts: each model family says how its pixel rows map to placeholder
tokens (`prresq.models.MediaGroup`), so an image's (or a video's, or a tile's) pixel rows and patch grid
go wherever its prompt row goes. Prompts are left-padded and completions right-padded, so for a prompt
of width P the completion token t sits at column P + t of the concatenated sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from prresq.models.families import family_of
from prresq.models.family import MediaGroup

# Model inputs that are per-sample rows (dim 0 = batch) and per-token columns (dim 1 = sequence).
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


@dataclass(frozen=True)
class VisionIds:
    """How a model's processor batches hold their visual inputs (its family's `MediaGroup`s), to split them per sample."""

    groups: tuple[MediaGroup, ...]
    family: str = ""  # the model family's name, for messages
    shares_prefix: bool = True  # False: the family cannot share a prompt prefix exactly (plain engine)

    @classmethod
    def from_config(cls, config: Any) -> VisionIds:
        family = family_of(config)
        return cls(tuple(family.media_groups(config)), family.title, family.shares_prefix)


def _repeat_chunks(values: Tensor, sizes: Tensor, k: int) -> Tensor:
    """Repeat consecutive row-chunks of `values` (chunk lengths `sizes`) k times each, in order."""
    chunks = torch.split(values, sizes.tolist())
    return torch.cat([c for c in chunks for _ in range(k)]) if chunks else values


def _as_tensor(value: Any) -> Tensor:
    return value if isinstance(value, Tensor) else torch.tensor(value)


def expand_inputs(inputs: dict[str, Tensor], k: int, ids: VisionIds) -> dict[str, Tensor]:
    """Repeat every sample of a processor batch k times (sample i -> rows i*k .. i*k+k-1)."""
    if k == 1:
        return dict(inputs)
    out: dict[str, Tensor] = {}
    for key, value in inputs.items():
        if key in TOKEN_KEYS or key == "labels":
            out[key] = value.repeat_interleave(k, dim=0)
    for group in ids.groups:
        if not group.present(inputs):
            continue
        media, rows = group.spans(inputs)  # [B] media and pixel rows of each sample
        if group.grid_key is not None:
            out[group.grid_key] = _repeat_chunks(inputs[group.grid_key], media, k)
        out[group.pixel_key] = _repeat_chunks(inputs[group.pixel_key], rows, k)
        for key in group.per_media_keys:
            if key in inputs:
                out[key] = _repeat_chunks(_as_tensor(inputs[key]), media, k)
    for key, value in inputs.items():
        out.setdefault(key, value)
    return out


def slice_inputs(inputs: dict[str, Tensor], sl: slice, ids: VisionIds) -> dict[str, Tensor]:
    """Rows `sl` of an expanded batch, with the matching rows of the visual inputs."""
    n = inputs["input_ids"].shape[0]
    if sl.start == 0 and sl.stop == n:
        return inputs
    out = {k: inputs[k][sl] for k in (*TOKEN_KEYS, "labels") if k in inputs}
    for group in ids.groups:
        if not group.present(inputs):
            continue
        media, rows = group.spans(inputs)
        media_start, media_stop = int(media[: sl.start].sum()), int(media[: sl.stop].sum())
        row_start, row_stop = int(rows[: sl.start].sum()), int(rows[: sl.stop].sum())
        if row_stop == row_start:
            continue  # no medium of this kind in these rows: the slice has none (an empty tensor would not encode)
        if group.grid_key is not None:
            out[group.grid_key] = inputs[group.grid_key][media_start:media_stop]
        out[group.pixel_key] = inputs[group.pixel_key][row_start:row_stop]
        for key in group.per_media_keys:
            if key in inputs:
                out[key] = inputs[key][media_start:media_stop]
    return out


def micro_batches(num_prompts: int, k: int, micro_batch_size: int | None) -> list[tuple[slice, slice]]:
    """(prompt rows, completion rows) of micro-batches of whole prompts.

    `micro_batch_size` counts completions like `grpo.micro_batch_size` (None: everything at once); it is
    rounded down to whole groups of k, at least one prompt per micro-batch. Prompt rows slice the unexpanded
    batch (`slice_inputs`), completion rows the [B*k, ...] tensors.
    """
    per = num_prompts if not micro_batch_size else max(1, int(micro_batch_size) // k)
    return [
        (slice(i, min(i + per, num_prompts)), slice(i * k, min(i + per, num_prompts) * k))
        for i in range(0, num_prompts, per)
    ]


def completion_micro_batches(n: int, micro_batch_size: int | None) -> list[tuple[slice, slice]]:
    """(prompt rows, completion rows) of micro-batches of any `micro_batch_size` completions of an expanded batch."""
    size = int(micro_batch_size or n)
    return [(sl, sl) for sl in (slice(i, min(i + size, n)) for i in range(0, n, size))]
