"""The one answer parser: completion texts -> quality scores (and PreResQ-R1 aspect scores).

Two rules live here, nowhere else:

- ``parse_scores`` (VisualQuality-R1, one score, paper Table 1 prompt): the first number inside the
  LAST ``<answer>...</answer>``. Unlike the released code (random score when nothing parses, no clamp)
  an unparseable completion gives NaN and parsed scores are clamped to ``[low, high]``.
- ``parse_aspects`` (PreResQ-R1, D aspect scores): the released rule, the last D numbers anywhere in
  the completion, padded with the first number found, ``[3.0] * D`` when there is none.

``parse_answers`` picks the rule from the prompt's number of aspects and returns both views. It is the
training reward's parser (the released fallbacks stay there).

``score_answers`` is evaluation's and validation's (``scoring.answer_rule``): an answer the rule cannot read
is NaN, never padded, never 3.0, never random. Rules (``ANSWER_RULES``):

- ``answer_first``: the first number of the last ``<answer>`` (the paper's Table 1 format, as ``parse_scores``);
- ``answer_first_or_text``: the first number of the last ``<answer>``, or of the whole text when it holds no
  ``<answer>`` (the released inference of both anchors: VisualQuality-R1's README quick start and PreResQ-R1's
  src/inference_PreResIQA_R1.py, one number);
- ``answer_mean``: the mean of every number of the last ``<answer>`` (PreResQ-R1's released VQA inference,
  src/inference_PreResVQA-R1.py);
- ``aspect_mean``: the mean of the last D numbers anywhere (the training reward's rule), NaN with fewer than D;
- ``released``: the anchors' released inference rule for the prompt's answer (D = 1, VisualQuality-R1, and
  D = 5, PreResQ-R1 IQA: ``answer_first_or_text``; D = 2, PreResQ-R1 VQA: ``answer_mean``).

Scores are clamped to ``[low, high]`` (NaN stays NaN); the released scripts' random score for an unreadable
answer is what the NaN replaces.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = [
    "parse_scores",
    "parse_aspects",
    "parse_answers",
    "score_answers",
    "resolve_answer_rule",
    "ANSWER_RULES",
    "ANSWER_RE",
    "SCORE_NUMBER_RE",
    "ASPECT_NUMBER_RE",
]

# Content of an <answer> block that holds no nested "<answer>" opening, so the last match is the block
# opened by the last "<answer>" that is closed.
ANSWER_RE = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
# A signed decimal number: "3", "-2", "+4.5", "3.", ".5" (no exponents: "1e5" reads as 1).
SCORE_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
# The released PreResQ-R1 number pattern (verbatim).
ASPECT_NUMBER_RE = re.compile(r"[-+]?\d*\.\d+|\d+")

# The released PreResQ-R1 inference patterns (verbatim): IQA's first number, VQA's numbers of the answer.
RELEASED_IQA_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
RELEASED_VQA_NUMBER_RE = re.compile(r"\d+\.?\d*")

_ASPECT_FALLBACK = 3.0
ANSWER_RULES = ("released", "answer_first", "answer_first_or_text", "answer_mean", "aspect_mean")
_RELEASED_BY_ASPECTS = {1: "answer_first_or_text", 5: "answer_first_or_text", 2: "answer_mean"}


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


def resolve_answer_rule(rule: str, num_aspects: int) -> str:
    """The concrete rule of `rule` for a prompt asking for `num_aspects` numbers (`released` -> the paper's)."""
    if rule not in ANSWER_RULES:
        raise ValueError(f"scoring.answer_rule={rule!r}: expected one of {', '.join(ANSWER_RULES)}")
    if rule != "released":
        return rule
    if num_aspects not in _RELEASED_BY_ASPECTS:
        raise ValueError(
            f"scoring.answer_rule=released: no paper answers with {num_aspects} numbers (1: VisualQuality-R1, "
            f"5: PreResQ-R1 IQA, 2: PreResQ-R1 VQA); set scoring.answer_rule to one of {', '.join(ANSWER_RULES[1:])}"
        )
    return _RELEASED_BY_ASPECTS[num_aspects]


def _score_one(text: str, rule: str, num_aspects: int) -> float:
    blocks = ANSWER_RE.findall(text)
    if rule == "answer_first":
        return _first_answer_number(text)
    if rule == "answer_first_or_text":
        match = RELEASED_IQA_NUMBER_RE.search(blocks[-1] if blocks else text)
        return float(match.group()) if match else float("nan")
    if rule == "answer_mean":
        nums = [float(x) for x in RELEASED_VQA_NUMBER_RE.findall(blocks[-1])] if blocks else []
        return sum(nums) / len(nums) if nums else float("nan")
    nums = [float(x) for x in ASPECT_NUMBER_RE.findall(text)]
    return sum(nums[-num_aspects:]) / num_aspects if len(nums) >= num_aspects else float("nan")


def _aspects_unpadded(text: str, num_aspects: int) -> list[float]:
    nums = [float(x) for x in ASPECT_NUMBER_RE.findall(text)]
    return nums[len(nums) - num_aspects :] if len(nums) >= num_aspects else [float("nan")] * num_aspects


def score_answers(
    texts: list[str], rule: str, num_aspects: int, low: float = 1.0, high: float = 5.0
) -> tuple[Tensor, Tensor]:
    """Evaluation's answer -> score (module docstring): ``(scores [N], aspects [N, D])``, NaN where unreadable.

    ``aspects`` are the last D numbers of the text (NaN rows with fewer; never padded); with D = 1 they are the
    scores. Both are clamped to ``[low, high]``.
    """
    rule = resolve_answer_rule(rule, num_aspects)
    scores = torch.tensor([_score_one(t, rule, num_aspects) for t in texts], dtype=torch.float32).reshape(len(texts))
    scores = torch.nan_to_num(scores, nan=float("nan"), posinf=high, neginf=low).clamp(low, high)
    if num_aspects == 1:
        return scores, scores[:, None].clone()
    aspects = torch.tensor([_aspects_unpadded(t, num_aspects) for t in texts], dtype=torch.float32)
    aspects = torch.nan_to_num(aspects.reshape(len(texts), num_aspects), nan=float("nan"), posinf=high, neginf=low)
    return scores, aspects.clamp(low, high)
