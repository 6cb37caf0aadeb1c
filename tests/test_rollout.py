"""Rollout plumbing: sample expansion, completion masks and completion log-probs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prresq.models import build_tiny_model, load_policy, load_processor, vision_token_ids
from prresq.rollout import (
    VisionIds,
    completion_logprobs,
    completion_mask,
    expand_inputs,
    generate_completions,
    slice_inputs,
    split_completions,
)
from prresq.sampling import GenerationTokens, SamplingConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    torch.manual_seed(0)
    return load_policy(path).eval(), load_processor(path, min_pixels=56 * 56, max_pixels=112 * 112)


def _batch(processor, sizes):
    rng = np.random.default_rng(0)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate the quality."}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    return dict(processor(text=[text] * len(sizes), images=images, return_tensors="pt", padding=True))


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 9, 7, 9], [9, 1, 1, 1, 1], [1, 2, 3, 4, 5]])
    mask = completion_mask(ids, eos_ids=[9])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_expanded_logprobs_equal_per_sample_logprobs(tiny):
    """Images of different sizes in one batch: the expanded batch scores each completion like its own prompt."""
    model, processor = tiny
    inputs = _batch(processor, [(112, 112), (56, 84)])
    ids = VisionIds.from_config(model.config)
    k = 3
    eos = [processor.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    tokens = GenerationTokens(eos, processor.tokenizer.pad_token_id, vision_token_ids(processor.tokenizer))
    completion, mask = generate_completions(model, inputs, k, tokens, SamplingConfig(max_new_tokens=6))
    assert completion.shape[0] == 2 * k
    expanded = expand_inputs(inputs, k, ids)
    assert expanded["pixel_values"].shape[0] == k * inputs["pixel_values"].shape[0]
    with torch.no_grad():
        batched = completion_logprobs(model, expanded, completion, mask)
        for row in range(2 * k):
            single = completion_logprobs(
                model, slice_inputs(expanded, slice(row, row + 1), ids), completion[row : row + 1], mask[row : row + 1]
            )
            m = mask[row].bool()
            torch.testing.assert_close(batched[row][m], single[0][m], atol=1e-4, rtol=1e-4)
    assert (batched[mask.bool()] <= 0).all()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_logprobs_equal_the_scores_generate_sampled_from(tiny, temperature):
    """Pins: `completion_logprobs` (one teacher-forced pass over prompt + completion, no KV cache) gives, at
    every unmasked position, the log-softmax of the per-token scores that `generate(output_scores=True)`
    sampled that token from (KV-cached decoding, the rollout's sampling kwargs, logits / temperature), for
    images of two sizes in one left-padded batch."""
    model, processor = tiny
    inputs = _batch(processor, [(112, 112), (56, 84)])
    eos = [processor.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    pad = processor.tokenizer.pad_token_id
    kwargs = SamplingConfig(temperature=temperature, max_new_tokens=8).generate_kwargs(GenerationTokens(eos, pad, []))
    torch.manual_seed(3)
    with torch.no_grad():
        out = model.generate(**inputs, **kwargs, output_scores=True, return_dict_in_generate=True)
        completion, mask = split_completions(out.sequences, inputs["input_ids"].shape[1], eos, pad)
        scored = completion_logprobs(model, inputs, completion, mask, temperature=temperature)
    sampled_from = torch.log_softmax(torch.stack(out.scores, dim=1).float(), dim=-1)  # [B, T, V]
    expected = sampled_from.gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    m = mask.bool()
    assert m.sum() >= 4 and torch.isfinite(expected[m]).all()
    torch.testing.assert_close(scored[m], expected[m], atol=1e-4, rtol=1e-4)
    # Not vacuous: scoring at another temperature than the one sampled at gives other log-probs.
    with torch.no_grad():
        other = completion_logprobs(model, inputs, completion, mask, temperature=temperature + 0.5)
    assert not torch.allclose(other[m], expected[m], atol=1e-3)


def test_slice_inputs_picks_matching_pixels(tiny):
    model, processor = tiny
    inputs = _batch(processor, [(112, 112), (56, 84), (84, 56)])
    ids = VisionIds.from_config(model.config)
    part = slice_inputs(inputs, slice(1, 3), ids)
    rows = inputs["image_grid_thw"].prod(-1)
    assert part["pixel_values"].shape[0] == int(rows[1:].sum())
    torch.testing.assert_close(part["pixel_values"], inputs["pixel_values"][int(rows[0]) :])
    assert part["input_ids"].shape[0] == 2
