"""Format rewards: 1.0 when a completion is exactly ``<think>...</think><answer>...</answer>``, else 0.0.

``format_reward`` is VisualQuality-R1's (any answer content); ``preresq_format_reward`` is PreResQ-R1's
released pattern, which also fixes the answer to one number per line (IQA: 5 numbers, VQA: 2).
Both use a full match with DOTALL, as released.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = ["format_reward", "preresq_format_reward", "FORMAT_RE", "PRERESQ_FORMAT_RE"]

FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
PRERESQ_FORMAT_RE = {
    "iqa": re.compile(r"<think>.*?</think>\s*<answer>(?:\s*\d+\.?\d*\s*\n){4}\s*\d+\.?\d*\s*</answer>", re.DOTALL),
    "vqa": re.compile(r"<think>.*?</think>\s*<answer>(?:\s*\d+\.?\d*\s*\n){2}\s*</answer>", re.DOTALL),
}


def _full_match(pattern: re.Pattern[str], texts: list[str]) -> Tensor:
    return torch.tensor([1.0 if pattern.fullmatch(t) else 0.0 for t in texts], dtype=torch.float32).reshape(len(texts))


def format_reward(texts: list[str]) -> Tensor:
    """VisualQuality-R1 format reward ``[N]``: full match of ``<think>.*?</think>\\s*<answer>.*?</answer>``."""
    return _full_match(FORMAT_RE, texts)


def preresq_format_reward(texts: list[str], task: str = "iqa") -> Tensor:
    """PreResQ-R1 format reward ``[N]`` (released regexes; ``task`` is ``"iqa"`` or ``"vqa"``)."""
    if task not in PRERESQ_FORMAT_RE:
        raise ValueError(f"task must be one of {sorted(PRERESQ_FORMAT_RE)}, got {task!r}")
    return _full_match(PRERESQ_FORMAT_RE[task], texts)
