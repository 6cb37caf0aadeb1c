"""Shared-prefix rollouts (`prresq.prefix`) against the plain per-completion path (`prresq.rollout`).

Every test runs on the tiny model of each family (`conftest.FAMILIES`: Qwen2.5-VL, Qwen3-VL, InternVL).
The tiny model is made decisive first (random, untied output head; decoder weights at unit gain),
so that greedy answers and sampled tokens depend on the image, the prompt and the rotary positions:
a wrong position, a lost cache row or a detached prefix changes the tokens or the numbers below.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import FAMILIES
from PIL import Image
from torch import Tensor

from prresq.loss import GRPOLoss
from prresq.models import load_policy, load_processor, vision_token_ids
from prresq.models.families import family_of
from prresq.prefix import completion_logprobs_shared, generate_completions_shared, micro_batches
from prresq.rollout import VisionIds, completion_logprobs, expand_inputs, generate_completions, slice_inputs
from prresq.sampling import GenerationTokens, SamplingConfig
from prresq.scoring import ScoringConfig, score_batch

K = 3
T = 12


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request, tiny_family_dir):
    return tiny_family_dir(request.param)


@pytest.fixture(scope="module")
def processor(family_dir):
    return load_processor(family_dir, min_pixels=28 * 28, max_pixels=112 * 112)


@pytest.fixture(scope="module")
def model(family_dir):
    model = load_policy(family_dir)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.model.language_model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(module.in_features))
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=gen) * 0.5)
    return model.eval()


def _prompt(processor, content) -> str:
    msgs = [{"role": "user", "content": content}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def _images(processor, sizes):
    """One image per prompt, of different sizes and prompt lengths (so the rows are left-padded differently)."""
    rng = np.random.default_rng(0)
    texts = ["Rate the quality.", "Rate the quality of this picture, carefully and in detail.", "Score it."]
    prompts = [_prompt(processor, [{"type": "image"}, {"type": "text", "text": t}]) for t in texts[: len(sizes)]]
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    return dict(processor(text=prompts, images=images, return_tensors="pt", padding=True))


def _mixed(processor):
    """Two images in one prompt and a native video in another (temporal rotary positions, second_per_grid_ts)."""
    rng = np.random.default_rng(1)
    prompts = [
        _prompt(processor, [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}, {"type": "text", "text": "Rate."}]),
        _prompt(processor, [{"type": "video"}, {"type": "text", "text": "Rate this video."}]),
    ]  # fmt: skip
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(56, 84), (84, 56)]]
    clip = rng.integers(0, 255, (16, 56, 56, 3), dtype=np.uint8)
    meta = {"total_num_frames": 16, "fps": 2.0, "duration": 8.0, "width": 56, "height": 56}
    meta["frames_indices"] = list(range(16))
    out = processor(
        text=prompts, images=images, videos=[clip], video_metadata=[meta], do_sample_frames=False,
        padding=True, return_tensors="pt",
    )  # fmt: skip
    return dict(out)


def _gen_kwargs(processor, **sampling) -> dict:
    """`tokens` and `sampling` arguments of the generate functions (T new tokens unless `sampling` says otherwise)."""
    tok = processor.tokenizer
    # Many stop tokens, so that completions end at different lengths and the masks are exercised.
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"), *range(40, 140)]
    tokens = GenerationTokens(eos, tok.pad_token_id, vision_token_ids(tok))
    return dict(tokens=tokens, sampling=SamplingConfig(**{"max_new_tokens": T, **sampling}))


def _count_pixel_rows(model, rows: list[int]):
    """Hook the family's vision encoder: append the pixel rows of each call to `rows`."""

    def hook(_m, args, kwargs):
        pixels = args[0] if args else kwargs.get("pixel_values", kwargs.get("hidden_states"))
        rows.append(pixels.shape[0])

    return family_of(model).vision_encoder(model).register_forward_pre_hook(hook, with_kwargs=True)


def _rollout(model, processor, inputs, seed=0):
    """K sampled completions per prompt, some ended and some not (the first of a few seeds that gives both)."""
    for attempt in range(8):
        torch.manual_seed(seed + 1000 * attempt)
        completion, mask = generate_completions(model, inputs, K, **_gen_kwargs(processor))
        lengths = mask.sum(1)
        if lengths.min() < T and lengths.max() == T:
            return completion, mask
    raise AssertionError("the fixture should give ended and unended completions")


@pytest.mark.parametrize("batch", ["images", "mixed"])
def test_logprobs_equal_plain_path(model, processor, batch):
    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)]) if batch == "images" else _mixed(processor)
    completion, mask = _rollout(model, processor, inputs)
    expanded = expand_inputs(inputs, K, VisionIds.from_config(model.config))
    with torch.no_grad():
        plain = completion_logprobs(model, expanded, completion, mask)
        shared = completion_logprobs_shared(model, inputs, K, completion, mask)
        plain_t = completion_logprobs(model, expanded, completion, mask, temperature=0.7)
        shared_t = completion_logprobs_shared(model, inputs, K, completion, mask, temperature=0.7)
    m = mask.bool()
    assert shared.shape == plain.shape == completion.shape
    torch.testing.assert_close(shared[m], plain[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_t[m], plain_t[m], atol=1e-5, rtol=1e-5)
    assert plain[m].std() > 0.5  # decisive model: far from uniform, so the check above has teeth


def _loss_and_grads(model, logp_fn, mask, old, ref, adv):
    model.zero_grad(set_to_none=True)
    logp = logp_fn()
    loss, _ = GRPOLoss(beta=0.04, eps_low=0.2, eps_high=0.2, aggregation="sequence")(
        logp, adv, mask, old_logp=old, ref_logp=ref
    )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), logp.detach(), grads


@pytest.mark.parametrize("checkpointing", [None, "non_reentrant", "reentrant"])
def test_loss_and_gradients_equal_plain_path(model, processor, checkpointing):
    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)])
    completion, mask = _rollout(model, processor, inputs, seed=1)
    expanded = expand_inputs(inputs, K, VisionIds.from_config(model.config))
    with torch.no_grad():
        base = completion_logprobs(model, expanded, completion, mask)
    gen = torch.Generator().manual_seed(0)
    old = base + 0.05 * torch.randn(base.shape, generator=gen)  # ratios != 1, some clipped
    ref = base + 0.1 * torch.randn(base.shape, generator=gen)
    adv = torch.randn(completion.shape[0], generator=gen)
    if checkpointing is not None:
        model.gradient_checkpointing_enable({"use_reentrant": checkpointing == "reentrant"})
    model.train()
    try:
        plain_fn = lambda: completion_logprobs(model, expanded, completion, mask)  # noqa: E731
        shared_fn = lambda: completion_logprobs_shared(model, inputs, K, completion, mask)  # noqa: E731
        plain = _loss_and_grads(model, plain_fn, mask, old, ref, adv)
        shared = _loss_and_grads(model, shared_fn, mask, old, ref, adv)
        with torch.no_grad():  # the old-policy pass: training mode, no gradients
            shared_old = shared_fn()
    finally:
        model.eval()
        if checkpointing is not None:
            model.gradient_checkpointing_disable()
    m = mask.bool()
    torch.testing.assert_close(shared[1][m], plain[1][m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_old[m], plain[1][m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[0], plain[0], atol=1e-6, rtol=1e-5)
    assert shared[2].keys() == plain[2].keys()
    vision = [n for n in plain[2] if family_of(model).is_vision_parameter(n)]
    assert vision and all(plain[2][n].abs().sum() > 0 for n in vision)  # the prefix (vision tower) gets gradient
    for name, grad in plain[2].items():  # fp32 sums in another order: tolerance relative to the tensor's scale
        scale = float(grad.abs().max())
        torch.testing.assert_close(
            shared[2][name], grad, atol=1e-5 * scale, rtol=1e-4, msg=lambda s, n=name: f"{n}: {s}"
        )


@pytest.mark.parametrize("batch", ["images", "mixed"])
def test_greedy_generation_identical(model, processor, batch):
    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)]) if batch == "images" else _mixed(processor)
    kwargs = _gen_kwargs(processor)
    # The plain path cannot do greedy with num_return_sequences > 1: score the expanded batch with k = 1.
    expanded = expand_inputs(inputs, K, VisionIds.from_config(model.config))
    plain, plain_mask = generate_completions(model, expanded, 1, do_sample=False, **kwargs)
    shared, shared_mask = generate_completions_shared(model, inputs, K, do_sample=False, **kwargs)
    assert torch.equal(shared, plain) and torch.equal(shared_mask, plain_mask)
    assert len({tuple(r) for r in plain[::K].tolist()}) == plain.shape[0] // K  # answers depend on the image
    assert not model.training


@pytest.mark.parametrize("batch", ["images", "mixed"])
def test_sampled_generation_identical(model, processor, batch):
    """Same seed, same logits processing (temperature, top-k, top-p, min_new_tokens): the same samples."""
    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)]) if batch == "images" else _mixed(processor)
    kwargs = _gen_kwargs(processor, temperature=0.8, top_p=0.9, top_k=50, min_new_tokens=3)
    # Make stopping part of what is compared, whatever the random weights: a token this model samples
    # often also ends a completion.
    torch.manual_seed(5)
    probe, _ = generate_completions(model, inputs, K, **kwargs)
    stop = int(torch.mode(probe[:, 3:].flatten()).values)
    kwargs["tokens"] = dataclasses.replace(kwargs["tokens"], eos_ids=[*kwargs["tokens"].eos_ids, stop])
    torch.manual_seed(3)
    plain, plain_mask = generate_completions(model, inputs, K, **kwargs)
    torch.manual_seed(3)
    shared, shared_mask = generate_completions_shared(model, inputs, K, **kwargs)
    assert torch.equal(shared, plain) and torch.equal(shared_mask, plain_mask)
    assert plain_mask.sum(1).min() >= 3 and plain_mask.sum(1).min() < T
    assert len({tuple(r) for r in plain.tolist()}) > plain.shape[0] // 2  # the K samples of an image differ
    pad = processor.tokenizer.pad_token_id
    assert (shared[~shared_mask.bool()] == pad).all()
    suppressed = torch.tensor(vision_token_ids(processor.tokenizer))
    assert not torch.isin(shared, suppressed).any()


@pytest.mark.parametrize("batch", ["images", "mixed"])
def test_scoring_samples_identical(model, processor, batch, monkeypatch):
    """`score_batch` N-sample scoring: shared prefix and plain path draw the same tokens and scores for a seed.

    Images of different sizes, and two images + a video. The shared path prefills each prompt once (B rows,
    all but the last column); the plain path prefills B*N rows. Both encode the media once (transformers'
    `generate` expands the encoder outputs, not the pixels).
    """
    import prresq.scoring as scoring

    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)]) if batch == "images" else _mixed(processor)
    b, p = inputs["input_ids"].shape
    drawn: list[Tensor] = []
    real_decode = scoring.decode
    monkeypatch.setattr(scoring, "decode", lambda proc, ids: drawn.append(ids) or real_decode(proc, ids))
    vision: list[int] = []
    prefill: list[tuple[int, int]] = []  # (rows, columns) of decoder calls over more than one new token

    def on_decoder(_m, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.shape[1] > 1:
            prefill.append(tuple(embeds.shape[:2]))

    hooks = [
        _count_pixel_rows(model, vision),
        model.model.language_model.register_forward_pre_hook(on_decoder, with_kwargs=True),
    ]
    out, seen = {}, {}
    try:
        for shared in (True, False):
            cfg = ScoringConfig(mode="sample", n=K, temperature=0.8, max_new_tokens=T, shared_prefix=shared)
            drawn.clear(), vision.clear(), prefill.clear()
            torch.manual_seed(7)
            out[shared] = score_batch(model, processor, inputs, cfg)
            seen[shared] = (drawn[-1], sum(vision), list(prefill))
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(seen[True][0], seen[False][0])
    assert len({tuple(r) for r in seen[True][0].tolist()}) > seen[True][0].shape[0] // 2  # samples differ
    torch.testing.assert_close(out[True].sample_mean, out[False].sample_mean, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(out[True].n_parsed, out[False].n_parsed) and out[True].texts == out[False].texts
    media_rows = sum(int(inputs[k].shape[0]) for k in ("pixel_values", "pixel_values_videos") if k in inputs)
    assert seen[True][1] == seen[False][1] == media_rows
    assert seen[True][2] == [(b, p - 1)] and seen[False][2] == [(b * K, p)]


def test_micro_batches_of_whole_prompts(model, processor):
    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)])
    completion, mask = _rollout(model, processor, inputs, seed=2)
    assert micro_batches(3, K, None) == [(slice(0, 3), slice(0, 9))]
    batches = micro_batches(3, K, 2 * K + 1)  # 7 completions: 2 whole prompts, then the last one
    assert batches == [(slice(0, 2), slice(0, 6)), (slice(2, 3), slice(6, 9))]
    assert micro_batches(3, K, 1) == [(slice(i, i + 1), slice(i * K, i * K + K)) for i in range(3)]
    ids = VisionIds.from_config(model.config)
    with torch.no_grad():
        full = completion_logprobs_shared(model, inputs, K, completion, mask)
        parts = [
            completion_logprobs_shared(model, slice_inputs(inputs, p, ids), K, completion[r], mask[r])
            for p, r in batches
        ]
    m = mask.bool()
    torch.testing.assert_close(torch.cat(parts)[m], full[m], atol=1e-5, rtol=1e-5)


def test_vision_encoder_runs_once_per_image(model, processor):
    inputs = _images(processor, [(112, 112), (56, 84)])
    rows: list[int] = []
    handle = _count_pixel_rows(model, rows)
    try:
        completion, mask = generate_completions_shared(model, inputs, K, **_gen_kwargs(processor))
        with torch.no_grad():
            completion_logprobs_shared(model, inputs, K, completion, mask)
    finally:
        handle.remove()
    assert rows == [inputs["pixel_values"].shape[0]] * 2  # once in generation, once in scoring; not K times


def test_rejects_mismatched_rows(model, processor):
    inputs = _images(processor, [(56, 56), (56, 56)])
    completion = torch.zeros((2 * K + 1, 4), dtype=torch.long)
    with pytest.raises(ValueError, match="completions for 2 prompts"):
        completion_logprobs_shared(model, inputs, K, completion, torch.ones_like(completion))
