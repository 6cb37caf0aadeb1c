"""`scoring.mode=both` from one prefill per item (`prresq.one_prefill`) against the two-pass path."""

from __future__ import annotations

import torch
from test_prefix import K, T, _images, _mixed, family_dir, model, processor  # noqa: F401 - fixtures

import prresq.scoring as scoring
from prresq.one_prefill import generate_greedy_and_samples
from prresq.prefix import generate_completions_shared
from prresq.rollout import generate_completions
from prresq.sampling import GenerationTokens
from prresq.scoring import ScoringConfig, score_batch


def test_one_prefill_gives_the_two_pass_tokens(model, processor):  # noqa: F811 - fixtures
    """Pins: the greedy and the N sampled completions of one prefill equal, token for token, the greedy pass
    plus the shared-prefix sample pass for the same seed (images of different sizes, and images + a video),
    and the decoder prefills the prompts once instead of twice."""
    tokens = GenerationTokens.from_tokenizer(processor.tokenizer)
    cfg = ScoringConfig(mode="both", n=K, temperature=0.8, max_new_tokens=T)
    prefills: list[int] = []

    def on_decoder(_m, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.shape[1] > 1:
            prefills.append(embeds.shape[0])

    for inputs in (_images(processor, [(112, 112), (56, 84), (84, 56)]), _mixed(processor)):
        prefills.clear()
        hook = model.model.language_model.register_forward_pre_hook(on_decoder, with_kwargs=True)
        try:
            torch.manual_seed(7)
            greedy = generate_completions(model, inputs, 1, tokens, cfg.sampling, do_sample=False)
            samples = generate_completions_shared(model, inputs, K, tokens, cfg.sampling)
            two_pass = len(prefills)
            prefills.clear()
            torch.manual_seed(7)
            one_greedy, one_samples = generate_greedy_and_samples(model, inputs, K, tokens, cfg.sampling)
            one_pass = len(prefills)
        finally:
            hook.remove()
        assert torch.equal(one_greedy[0], greedy[0]) and torch.equal(one_greedy[1], greedy[1])
        assert torch.equal(one_samples[0], samples[0]) and torch.equal(one_samples[1], samples[1])
        assert (two_pass, one_pass) == (2, 1)
        assert len({tuple(r.tolist()) for r in samples[0]}) > 1  # the samples differ: the seed matters


def test_score_batch_both_uses_one_prefill_with_the_same_scores(model, processor, monkeypatch):  # noqa: F811
    """Pins: `score_batch(mode=both)` (shared prefix) goes through the one-prefill path and gives the scores
    and texts of the two-pass path (restored by monkeypatching the combined function away)."""
    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)])
    cfg = ScoringConfig(mode="both", n=K, temperature=0.8, max_new_tokens=T)
    calls: list[int] = []
    real = scoring.generate_greedy_and_samples
    monkeypatch.setattr(scoring, "generate_greedy_and_samples", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(3)
    one = score_batch(model, processor, inputs, cfg)
    assert calls == [1]

    def two_pass(model, inputs, n, tokens, sampling, generators=None):
        greedy = generate_completions(model, inputs, 1, tokens, sampling, do_sample=False)
        return greedy, generate_completions_shared(model, inputs, n, tokens, sampling, generators=generators)

    monkeypatch.setattr(scoring, "generate_greedy_and_samples", two_pass)
    torch.manual_seed(3)
    two = score_batch(model, processor, inputs, cfg)
    assert one.texts == two.texts
    for key in ("greedy", "sample_mean", "n_parsed"):
        assert torch.equal(torch.nan_to_num(getattr(one, key), -1.0), torch.nan_to_num(getattr(two, key), -1.0)), key
