"""The one answer parser: completion texts -> quality scores (and PreResQ-R1 aspect scores).

Two rules live here, nowhere else:

- ``parse_scores`` (VisualQuality-R1, one score, paper Table 1 prompt): the first number inside the
  LAST ``<answer>...</answer>``. Unlike the released code (random score when nothing parses, no clamp)
  an unparseable completion gives NaN and parsed scores are clamped to ``[low, high]``.
- ``parse_aspects`` (PreResQ-R1, D aspect scores): the released rule, the last D numbers anywhere in
  the completion, padded with the first number found, ``[3.0] * D`` when there is none.

``parse_answers`` picks the rule from the prompt's number of aspects and returns both views.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = ["parse_scores", "parse_aspects", "parse_answers", "ANSWER_RE", "SCORE_NUMBER_RE", "ASPECT_NUMBER_RE"]

# Content of an <answer> block that holds no nested "<answer>" opening, so the last match is the block
# opened by the last "<answer>" that is closed.
ANSWER_RE = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
# A signed decimal number: "3", "-2", "+4.5", "3.", ".5" (no exponents: "1e5" reads as 1).
SCORE_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
# The released PreResQ-R1 number pattern (verbatim).
ASPECT_NUMBER_RE = re.compile(r"[-+]?\d*\.\d+|\d+")

_ASPECT_FALLBACK = 3.0


def _first_answer_number(text: str) -> float:
    blocks = ANSWER_RE.findall(text)
    if not blocks:
        return float("nan")
    match = SCORE_NUMBER_RE.search(blocks[-1])
    return float(match.group()) if match else float("nan")


def parse_scores(texts: list[str], low: float = 1.0, high: float = 5.0) -> Tensor:
    """First number of the last ``<answer>`` of each text -> float32 ``[N]``; NaN if none, else clamped.

    VisualQuality-R1 (Table 1 prompt) asks for one float in ``[1, 5]`` inside ``<answer></answer>``.
    """
    values = torch.tensor([_first_answer_number(t) for t in texts], dtype=torch.float32).reshape(len(texts))
    return values.clamp(low, high)  # clamp keeps NaN


def _last_numbers(text: str, num_aspects: int) -> list[float]:
    nums = [float(x) for x in ASPECT_NUMBER_RE.findall(text)]
    if len(nums) >= num_aspects:
        return nums[len(nums) - num_aspects :]
    if nums:
        return nums + [nums[0]] * (num_aspects - len(nums))
    return [_ASPECT_FALLBACK] * num_aspects


def parse_aspects(texts: list[str], num_aspects: int) -> Tensor:
    """The released PreResQ-R1 rule: last ``num_aspects`` numbers anywhere in each text -> ``[N, D]``.

    Fewer numbers than D: pad with the first number found; none: ``[3.0] * D``. Never NaN, not clamped
    (the released rewards see the raw numbers).
    """
    if num_aspects < 1:
        raise ValueError(f"num_aspects must be >= 1, got {num_aspects}")
    rows = [_last_numbers(t, num_aspects) for t in texts]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(texts), num_aspects)


def parse_answers(texts: list[str], num_aspects: int, low: float = 1.0, high: float = 5.0) -> tuple[Tensor, Tensor]:
    """``(scores [N], aspects [N, D])`` for a prompt asking for ``num_aspects`` numbers.

    ``num_aspects == 1``: :func:`parse_scores` (NaN when unparseable), ``aspects = scores[:, None]``.
    ``num_aspects > 1``: :func:`parse_aspects`; the score is the PreResQ-R1 prediction, the mean of the
    D aspects. Aspects are clamped to ``[low, high]`` too (unlike the released code): a sampled run of
    40 digits is 1e40, infinite in float32, and would turn every group reward of the batch into NaN.
    """
    if num_aspects == 1:
        scores = parse_scores(texts, low, high)
        return scores, scores[:, None].clone()
    aspects = torch.nan_to_num(parse_aspects(texts, num_aspects), posinf=high, neginf=low).clamp(low, high)
    return aspects.mean(-1), aspects
