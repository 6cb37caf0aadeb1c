"""Answer parser and format rewards: edge cases with hand-written expected values."""

from __future__ import annotations

import math

import pytest
import torch

from prresq.rewards import format_reward, parse_answers, parse_aspects, parse_scores, preresq_format_reward
from prresq.rewards.parse import resolve_answer_rule, score_answers


def _same(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), equal_nan=True)


# ---------------------------------------------------------------- parse_scores (one score)


def test_parse_scores_basic_and_last_answer_tag() -> None:
    texts = [
        "<think>looks fine</think><answer>3.75</answer>",
        # several <answer> tags: the LAST one counts, and inside it the FIRST number
        "<answer>2</answer> on reflection <answer>4.5 (out of 5), maybe 3</answer>",
        "<think>The score is 2.</think>\n<answer> 1.25 </answer>",
    ]
    _same(parse_scores(texts), [3.75, 4.5, 1.25])


def test_parse_scores_nan_when_nothing_parses() -> None:
    texts = [
        "<answer>excellent</answer>",  # no number inside the answer
        "<think>I would say 4</think>",  # a number, but no answer tag
        "<answer>4",  # truncated: the tag never closes
        "",
    ]
    out = parse_scores(texts)
    assert out.shape == (4,) and out.dtype == torch.float32
    assert torch.isnan(out).all()  # never a random fallback


def test_parse_scores_clamp_and_signs() -> None:
    texts = [
        "<answer>7.2</answer>",  # above the range -> 5
        "<answer>-2</answer>",  # negative -> clamped to 1
        "<answer>0.5</answer>",  # below -> 1
        "<answer>+4</answer>",  # explicit plus sign
        "<answer>.5</answer>",  # leading dot = 0.5 -> 1
        "<answer>3.</answer>",  # trailing dot = 3
    ]
    _same(parse_scores(texts), [5.0, 1.0, 1.0, 4.0, 1.0, 3.0])
    # a custom range: the same -2 clamps to 0, 7.2 to 10 is untouched
    _same(parse_scores(["<answer>-2</answer>", "<answer>7.2</answer>"], low=0.0, high=10.0), [0.0, 7.2])


def test_parse_scores_nested_answer_opening() -> None:
    # an unclosed "<answer>" followed by a complete block: the complete block is the last answer
    _same(parse_scores(["<answer> thinking <answer>2.5</answer>"]), [2.5])


def test_parse_scores_empty_list() -> None:
    assert parse_scores([]).shape == (0,)


# ---------------------------------------------------------------- parse_aspects (PreResQ-R1 rule)


def test_parse_aspects_last_numbers_anywhere() -> None:
    texts = [
        # 7 numbers in the text: the last 5 are kept (the think part's "1" and "2" are dropped)
        "<think>step 1, step 2</think><answer>3.1\n2.2\n4\n5.00\n1.5</answer>",
        # the released regex reads "-1.5" as negative and ".5" as 0.5
        "a -1.5 b .5 c 2 d 3 e 4",
    ]
    _same(parse_aspects(texts, 5), [[3.1, 2.2, 4.0, 5.0, 1.5], [-1.5, 0.5, 2.0, 3.0, 4.0]])


def test_parse_aspects_padding_and_fallback() -> None:
    texts = [
        "<answer>4.2 3.3</answer>",  # 2 numbers for D = 5: pad with the FIRST number found (4.2)
        "<answer>none</answer>",  # nothing: [3.0] * D
    ]
    _same(parse_aspects(texts, 5), [[4.2, 3.3, 4.2, 4.2, 4.2], [3.0] * 5])
    _same(parse_aspects(["global 3.5 local"], 2), [[3.5, 3.5]])


def test_parse_answers_one_and_many_aspects() -> None:
    texts = ["<answer>4.5</answer>", "<answer>oops</answer>"]
    scores, aspects = parse_answers(texts, num_aspects=1)
    _same(scores, [4.5, math.nan])
    assert aspects.shape == (2, 1)
    _same(aspects[:, 0], [4.5, math.nan])

    texts = ["<answer>1\n2\n3\n4\n5</answer>", "<answer>5 5 5 5 9</answer>"]
    scores, aspects = parse_answers(texts, num_aspects=5)
    # prediction = mean of the clamped aspects: (1+2+3+4+5)/5 = 3; the 9 is clamped to 5 -> (5*5)/5 = 5
    _same(scores, [3.0, 5.0])
    _same(aspects[1], [5.0, 5.0, 5.0, 5.0, 5.0])  # aspects are clamped to [1, 5] (the released code keeps 9)


# ---------------------------------------------------------------- format rewards


def test_format_reward() -> None:
    texts = [
        "<think>a</think><answer>3</answer>",
        "<think>multi\nline</think>\n\n<answer>\n3.5\n</answer>",  # DOTALL + whitespace between blocks
        "<answer>3</answer>",  # no think
        "<think>a</think><answer>3</answer> trailing",  # full match required
        " <think>a</think><answer>3</answer>",  # leading space: not a full match
        "<think>a</think>text<answer>3</answer>",  # text between the blocks
    ]
    _same(format_reward(texts), [1.0, 1.0, 0.0, 0.0, 0.0, 0.0])


def test_preresq_format_reward_iqa_and_vqa() -> None:
    iqa_ok = "<think>x</think>\n<answer>\n3.1\n2\n4.25\n5\n1.5</answer>"  # 4 numbers + newline, then a 5th
    iqa_four = "<think>x</think><answer>3.1\n2\n4.25\n5\n</answer>"  # only four numbers
    iqa_inline = "<think>x</think><answer>3.1 2 4.25 5 1.5</answer>"  # not one per line
    _same(preresq_format_reward([iqa_ok, iqa_four, iqa_inline], task="iqa"), [1.0, 0.0, 0.0])

    vqa_ok = "<think>x</think><answer>\n3.5\n4\n</answer>"  # released: two "number + newline", then </answer>
    vqa_no_newline = "<think>x</think><answer>3.5\n4</answer>"  # the second number needs its newline
    _same(preresq_format_reward([vqa_ok, vqa_no_newline, iqa_ok], task="vqa"), [1.0, 0.0, 0.0])


def test_preresq_format_reward_rejects_unknown_task() -> None:
    import pytest

    with pytest.raises(ValueError, match="task"):
        preresq_format_reward(["x"], task="audio")


def test_parse_answers_clamps_huge_aspect_numbers_instead_of_overflowing():
    import torch

    from prresq.rewards import parse_answers

    scores, aspects = parse_answers(["<answer>" + "9" * 45 + "\n2\n3\n4\n0.5</answer>"], 5)
    assert torch.isfinite(aspects).all() and torch.isfinite(scores).all()
    assert aspects[0].tolist() == [5.0, 2.0, 3.0, 4.0, 1.0]
    assert scores[0].item() == 3.0


# ----------------------------------------------------------------------------- evaluation's answer rules

RULE_CASES = [
    # text, rule, D, expected score (nan = unreadable)
    ("<think>x</think><answer>3.5</answer>", "answer_first", 1, 3.5),
    ("<answer>2</answer> then <answer>4.25 and 1</answer>", "answer_first", 1, 4.25),
    ("no answer tag 4.0", "answer_first", 1, math.nan),
    ("<answer></answer>", "answer_first", 1, math.nan),
    ("<answer>saturation 2.5; granularity 3</answer>", "answer_first_or_text", 5, 2.5),
    ("rated 3.75 overall", "answer_first_or_text", 5, 3.75),  # released IQA: the whole text without <answer>
    ("", "answer_first_or_text", 5, math.nan),  # blank: NaN, not [3.0] * 5
    ("<answer>4 and 2.5</answer>", "answer_mean", 2, 3.25),
    ("global 4 local 2 but no tag", "answer_mean", 2, math.nan),
    ("1 2 3 4 5 6", "aspect_mean", 5, 4.0),  # last five numbers: (2+3+4+5+6)/5
    ("only 4.0 and 2", "aspect_mean", 5, math.nan),  # fewer than D: never padded
    ("<answer>9</answer>", "answer_first", 1, 5.0),  # clamped to [1, 5]
]


@pytest.mark.parametrize(("text", "rule", "d", "expected"), RULE_CASES)
def test_score_answers_rules_by_hand(text, rule, d, expected):
    scores, aspects = score_answers([text], rule, d)
    assert aspects.shape == (1, d)
    if math.isnan(expected):
        assert torch.isnan(scores[0]) and not (aspects == 3.0).any()
    else:
        assert scores[0].item() == pytest.approx(expected)


def test_released_rule_is_the_papers_by_answer_shape():
    """`released` is the anchors' released inference rule: one number of the last <answer> or of the text (one score,
    VisualQuality-R1; five aspects, PreResQ-R1 IQA), the mean of the last <answer>'s numbers (two, PreResQ-R1 VQA);
    the training reward's parser keeps the released fallback (3.0) where evaluation gives NaN."""
    released = [resolve_answer_rule("released", d) for d in (1, 5, 2)]
    assert released == ["answer_first_or_text", "answer_first_or_text", "answer_mean"]
    assert score_answers(["no numbers"], "released", 5)[0].isnan().all()
    assert parse_answers(["no numbers"], 5)[0].tolist() == [3.0]
    with pytest.raises(ValueError, match="scoring.answer_rule='median'"):
        score_answers(["x"], "median", 1)
    with pytest.raises(ValueError, match="no paper answers with 3 numbers"):
        resolve_answer_rule("released", 3)
