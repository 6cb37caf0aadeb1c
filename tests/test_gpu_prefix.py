"""Shared-prefix rollouts against the per-completion path on CUDA, in bf16 (the training dtype on a GPU).

tests/test_prefix.py pins the equality in fp32 on CPU to 1e-5. On a GPU the two paths run other
kernels (batch B with the prefix cache repeated K times vs batch B*K), and bf16 keeps 8 bits of
mantissa, so they agree to bf16 rounding, not bit for bit. The tolerances below are bf16's: a
relative rounding step of 2**-8 on logits of magnitude ~10 (the decisive model's). A wrong rotary
position, a lost cache row or a detached prefix moves log-probs by whole units and gradients by
their own size, far outside them. Each test records its figures (`record_property`), which the GPU
kit (experiments/gpu/run_checks.py) reads from pytest's JUnit XML into its report.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from prresq.loss import GRPOLoss
from prresq.models import load_policy, load_processor, vision_token_ids
from prresq.prefix import completion_logprobs_shared, generate_completions_shared
from prresq.rollout import VisionIds, completion_logprobs, expand_inputs, generate_completions
from prresq.sampling import GenerationTokens, SamplingConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.is_available() is False)"),
]

K = 4
T = 16
LOGP_ATOL, LOGP_RTOL = 0.25, 0.03  # bf16 rounding of log-probs of magnitude up to ~20 (CPU bf16: max 0.12)
GRAD_REL = 0.1  # ||g_shared - g_plain|| / ||g_plain|| per tensor (CPU bf16: worst 0.021)


def decisive_bf16(model_dir, device: str) -> torch.nn.Module:
    """The tiny model with unit-gain decoder weights and a random untied head (tests/test_prefix.py), in bf16."""
    model = load_policy(model_dir, dtype="float32", attn_implementation="sdpa")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.model.language_model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(module.in_features))
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=gen) * 0.5)
    return model.to(device=device, dtype=torch.bfloat16).eval()


def image_batch(processor, device: str) -> dict[str, torch.Tensor]:
    """Three prompts with images of different sizes and prompt lengths (rows left-padded differently)."""
    rng = np.random.default_rng(0)
    texts = ["Rate the quality.", "Rate the quality of this picture, carefully and in detail.", "Score it."]
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for t in texts
    ]
    images = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(112, 112), (56, 84), (84, 56)]
    ]
    out = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    return {key: v.to(device) for key, v in out.items()}


def gen_kwargs(processor) -> dict:
    tok = processor.tokenizer
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"), *range(40, 140)]
    tokens = GenerationTokens(eos, tok.pad_token_id, vision_token_ids(tok))
    return dict(tokens=tokens, sampling=SamplingConfig(max_new_tokens=T))


def compare_logprobs_and_grads(model, processor, device: str) -> dict[str, float]:
    """Sampled completions scored by both paths with gradients; the GRPO loss backpropagated through each."""
    inputs = image_batch(processor, device)
    torch.manual_seed(0)
    completion, mask = generate_completions(model, inputs, K, **gen_kwargs(processor))
    expanded = expand_inputs(inputs, K, VisionIds.from_config(model.config))
    gen = torch.Generator().manual_seed(0)
    adv = torch.randn(completion.shape[0], generator=gen).to(device)
    model.train()
    results = {}
    try:
        for name, fn in (
            ("plain", lambda: completion_logprobs(model, expanded, completion, mask)),
            ("shared", lambda: completion_logprobs_shared(model, inputs, K, completion, mask)),
        ):
            model.zero_grad(set_to_none=True)
            logp = fn()
            loss, _ = GRPOLoss(beta=0.0, eps_low=0.2, eps_high=0.2, aggregation="sequence")(
                logp, adv, mask, old_logp=None, ref_logp=None
            )
            loss.backward()
            grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
            results[name] = (logp.detach().float(), grads)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    m = mask.bool()
    plain, shared = results["plain"][0][m], results["shared"][0][m]
    diff = (shared - plain).abs()
    within = diff <= LOGP_ATOL + LOGP_RTOL * plain.abs()
    rel = {
        n: float((results["shared"][1][n] - g).norm() / g.norm().clamp_min(1e-30))
        for n, g in results["plain"][1].items()
        if float(g.norm()) > 0
    }
    worst = max(rel, key=rel.get)
    return {
        "tokens": int(m.sum()),
        "logp_spread": float(plain.std()),
        "logp_max_abs_diff": float(diff.max()),
        "logp_mean_abs_diff": float(diff.mean()),
        "logp_within_tol": float(within.float().mean()),
        "grad_tensors": len(rel),
        "grad_same_keys": float(results["shared"][1].keys() == results["plain"][1].keys()),
        "vision_grads": float(sum(".visual." in n for n in rel)),
        "grad_max_rel_diff": rel[worst],
        "grad_worst_tensor": worst,
    }


def compare_greedy(model, processor, device: str) -> dict[str, float]:
    inputs = image_batch(processor, device)
    kwargs = gen_kwargs(processor)
    expanded = expand_inputs(inputs, K, VisionIds.from_config(model.config))
    plain, plain_mask = generate_completions(model, expanded, 1, do_sample=False, **kwargs)
    shared, shared_mask = generate_completions_shared(model, inputs, K, do_sample=False, **kwargs)
    same_rows = (plain == shared).all(1) & (plain_mask == shared_mask).all(1)
    return {
        "rows": plain.shape[0],
        "identical_rows": int(same_rows.sum()),
        "distinct_answers": len({tuple(r) for r in plain[::K].tolist()}),
    }


@pytest.fixture(scope="module")
def cuda_model(tiny_model_dir):
    return decisive_bf16(tiny_model_dir, "cuda")


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, min_pixels=28 * 28, max_pixels=112 * 112)


def test_logprobs_and_gradients_match_on_cuda_bf16(cuda_model, processor, record_property):
    """On CUDA in bf16, the shared prefix's log-probs and gradients equal the per-completion path's to bf16 rounding."""
    fig = compare_logprobs_and_grads(cuda_model, processor, "cuda")
    for key, value in fig.items():
        record_property(key, value)
    assert fig["logp_spread"] > 0.5  # a decisive model: the comparison has teeth
    assert fig["logp_within_tol"] == 1.0, fig
    assert fig["grad_same_keys"] == 1.0 and fig["vision_grads"] > 0, fig  # the prefix (vision tower) gets gradient
    assert fig["grad_max_rel_diff"] <= GRAD_REL, fig


def test_greedy_outputs_identical_on_cuda_bf16(cuda_model, processor, record_property):
    """On CUDA in bf16, greedy decoding from the shared prefix gives the per-completion path's tokens, row for row."""
    fig = compare_greedy(cuda_model, processor, "cuda")
    for key, value in fig.items():
        record_property(key, value)
    assert fig["distinct_answers"] > 1  # answers depend on the image
    assert fig["identical_rows"] == fig["rows"], fig
