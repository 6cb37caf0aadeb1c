"""The prompt configs quote the papers and the authors' released code exactly (issue 13, item 9).

Each expected string below is quoted from its source, named in the test and in the config's comment:
the VisualQuality-R1 paper's Table 1, and the PreResQ-R1 repository (DanceSkyCode/General-Visual-Quality-RL)
inference scripts ``src/inference_PreResIQA_R1.py`` / ``src/inference_PreResVQA-R1.py`` and the prompt list
of its training script ``src/grpo_preres_r1.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compose_config
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from prresq.data.collate import PromptCollator
from prresq.data.dataflow import ImageFlow
from prresq.data.records import Record
from prresq.models import load_processor

# The released question template (both PreResQ-R1 inference scripts; VisualQuality-R1 README).
TEMPLATE = (
    " First output the thinking process in <think> </think> tags and then output the final answer"
    " with only one score in <answer> </answer> tags."
)
PRERESQ_IQA_POOL = [  # src/grpo_preres_r1.py, `prompts`
    "You are doing an image quality assessment. Provide five ratings in the following order: saturation, "
    "granularity, sharpness, foreground, and background. Please rate 5 scores each row. Each rating should be a "
    "float between 1 and 5, rounded to two decimals (1 = very poor, 5 = excellent).",
    "You are doing an image quality assessment. For this image quality assessment task, please evaluate along "
    "five aspects: color saturation, texture granularity, clarity or sharpness, foreground quality, and background "
    "quality. Please rate 5 scores each row. Give each aspect a score between 1.00 and 5.00 (two decimals, where "
    "1 = very poor and 5 = excellent).",
    "You are doing an image quality assessment. Please assess image quality by providing five ratings in sequence: "
    "rate the saturation, rate the granularity, rate the sharpness, rate the foreground quality, and rate the "
    "background quality. Please rate 5 scores each row. All answers must be floats from 1.00 to 5.00, rounded to "
    "two decimals.",
    "You are doing an image quality assessment. Provide ratings for five dimensions: saturation to reflect color "
    "vividness, granularity to capture texture smoothness, sharpness to evaluate detail clarity, foreground quality "
    "to assess object visibility, and background quality to measure scene consistency. Please rate 5 scores each "
    "row. Each score must be a float between 1.00 and 5.00, where 1 means poor and 5 means excellent.",
    "You are doing an image quality assessment. Please give an image quality evaluation with five scores in the "
    "following order: saturation, granularity, sharpness, foreground quality, and background quality. Please rate "
    "5 scores each row. Each score should be a float between 1 and 5, rounded to two decimals, with 1 indicating "
    "very poor quality and 5 indicating excellent quality.",
]


def _prompt(name: str) -> DictConfig:
    cfg = compose_config("train", [f"prompt={name}"])
    return cfg.prompt


def test_vq_r1_prompt_keeps_the_table1_line_break(tiny_model_dir, tmp_path):
    """Pins: the VisualQuality-R1 prompt is Table 1's text with its line break after "Here is the question:"
    (YAML folding used to turn it into a space), and the break reaches the model's input ids."""
    text = _prompt("vq_r1").text
    assert text == (
        "You are doing the image quality assessment task. Here is the question:\n"
        "Rate the overall image visual quality. The rating should be a float between 1 and 5, with 1 representing "
        "very poor quality and 5 representing excellent quality." + TEMPLATE
    )
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((56, 56, 3), dtype=np.uint8)).save(path)
    processor = load_processor(tiny_model_dir, min_pixels=56 * 56, max_pixels=56 * 56)
    batch = PromptCollator(processor, text, ImageFlow())([Record("a", "toy", path, 3.0, 3.0, {}, "toy.jsonl:1")])
    decoded = processor.tokenizer.decode(batch["model_inputs"]["input_ids"][0])
    assert "Here is the question:\nRate the overall image visual quality." in decoded


def test_vq_r1_released_wording_is_a_named_alternative():
    """Pins: the released inference wording of VisualQuality-R1 (README "Quick Start") is `prompt=vq_r1_released`."""
    assert _prompt("vq_r1_released").text == (
        "You are doing the image quality assessment task. Here is the question: What is your overall rating on the "
        "quality of this picture? The rating should be a float between 1 and 5, rounded to two decimal places, with "
        "1 representing very poor quality and 5 representing excellent quality." + TEMPLATE
    )


def test_preresq_iqa_prompt_is_the_released_wording():
    """Pins: `prompt=preresq_iqa` is src/inference_PreResIQA_R1.py's PROMPT + QUESTION_TEMPLATE verbatim (its
    string concatenation leaves no space after "parts:" and "rating."), and the stage-1 pool is that text
    followed by the five prompts of src/grpo_preres_r1.py, each in the same template."""
    p = _prompt("preresq_iqa")
    released = (
        "You are doing the image quality assessment task. Describe and rate the image in five parts:"
        "saturation rating; granularity rating; sharpness rating; foreground rating; and background rating."
        "All ratings should be floats between 1 and 5, rounded to two decimals, where 1 represents very poor quality "
        "and 5 represents excellent quality." + TEMPLATE
    )
    assert p.text == released and p.num_aspects == 5
    assert list(p.pool) == [released] + [q + TEMPLATE for q in PRERESQ_IQA_POOL]


def test_preresq_vqa_prompt_is_the_released_wording():
    """Pins: `prompt=preresq_vqa` is src/inference_PreResVQA-R1.py's question_prompt + QUESTION_TEMPLATE verbatim."""
    p = _prompt("preresq_vqa")
    assert p.text == (
        "You are doing the video quality assessment task. Please compare the multi-frame images and evaluate their "
        "global temporal smoothness. Then compare and describe the rest magnifying local single frame pictures in "
        "five parts: saturation rating; granularity rating; sharpness rating; foreground rating; and background "
        "rating. Then, please rate both global and local quality of this video. The ratings should be two float "
        "scores between 1 and 5, rounded to two decimal places, with 1 representing very poor quality and 5 "
        "representing excellent quality." + TEMPLATE
    )
    assert p.num_aspects == 2 and list(p.aspects) == ["global", "local"] and p.pool is None


@pytest.mark.parametrize(
    ("name", "start", "aspects"),
    [
        ("preresq_iqa_ours", "You are doing the image quality assessment task. Rate the image on five aspects", 5),
        ("preresq_vqa_ours", "You are doing the video quality assessment task. The global multiframe picture", 2),
    ],
)
def test_our_wording_is_a_named_alternative(name, start, aspects):
    """Pins: our own wording stays selectable by name, with the answer format spelled out (one score per line)."""
    p = _prompt(name)
    assert p.text.startswith(start) and "\n" not in p.text and p.num_aspects == aspects
    assert "one per line" in p.text or "each on its own line" in p.text
    if p.pool is not None:
        assert p.pool[0] == p.text and len(p.pool) == 4


def test_tiny_prompt_and_tiny_preresq_wording_unchanged():
    """Pins: the tiny prompt and experiment=tiny_preresq's prompt are the ones the README's tiny results were
    measured with."""
    assert _prompt("tiny").text == (
        "Rate the quality of this image from 1 to 5. Think in <think> </think>, then give the score in "
        "<answer> </answer>."
    )
    cfg = compose_config("train", ["experiment=tiny_preresq"])
    assert OmegaConf.to_container(cfg.prompt, resolve=True) == OmegaConf.to_container(
        _prompt("preresq_iqa_ours"), resolve=True
    )
