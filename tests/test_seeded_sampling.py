"""Seeded sampling per answer (`prresq.row_sampling`): an item's sampled answers depend on (seed, item id,
sample index) only -- not on its batch -- and scoring with a seed leaves the global random states alone."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_eval import compose_eval
from test_prefix import T, _prompt, model, processor  # noqa: F401 - fixtures

from prresq.engine.plain import generate_completions
from prresq.engine.shared import generate_completions_shared
from prresq.eval import run
from prresq.one_prefill import generate_greedy_and_samples
from prresq.row_sampling import item_seed, row_generators
from prresq.sampling import GenerationTokens, SamplingConfig
from prresq.scoring import ScoringConfig, score_loader

N = 3
IDS = ["a", "b", "c"]
TEXTS = ["Rate the quality.", "Rate the quality of this picture, carefully and in detail.", "Score it."]
SIZES = [(112, 112), (56, 84), (84, 56)]


@pytest.fixture(scope="module")
def family_dir(tiny_model_dir):
    """Qwen2.5-VL only (the engines' family coverage is `tests/test_prefix.py`'s)."""
    return tiny_model_dir


def _batch(processor, items: list[int]) -> dict:  # noqa: F811
    """A processor batch of the items `items` (prompts of different lengths: rows left-padded differently)."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]
    prompts = [_prompt(processor, [{"type": "image"}, {"type": "text", "text": TEXTS[i]}]) for i in items]
    return dict(processor(text=prompts, images=[images[i] for i in items], return_tensors="pt", padding=True))


def _rows(completion: torch.Tensor, mask: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(row[m.bool()].tolist()) for row, m in zip(completion, mask)]


def _tokens(processor) -> GenerationTokens:  # noqa: F811
    return GenerationTokens.from_tokenizer(processor.tokenizer)


def test_item_seeds_depend_on_seed_item_and_index():
    assert item_seed(42, "a", 0) == item_seed(42, "a", 0)
    assert len({item_seed(42, "a", 0), item_seed(43, "a", 0), item_seed(42, "b", 0), item_seed(42, "a", 1)}) == 4
    assert item_seed(42, "a1", 0) != item_seed(42, "a", 10)  # the fields are separated, not concatenated
    assert 0 <= item_seed(42, "a", 0) < 2**63


def test_an_items_samples_are_the_same_in_any_batch_on_every_engine(model, processor):  # noqa: F811
    """Pins: with per-answer generators, the N samples of each item are the same token for token whether the
    item is scored in a batch of 3 (left-padded, other items around it) or alone, on the plain engine, the
    shared-prefix engine and the one-prefill path; the engines agree with each other; the global RNG is not
    moved; and the samples depend on the seed (so the equalities are not trivial)."""
    tokens, sampling = _tokens(processor), SamplingConfig(temperature=1.0, max_new_tokens=T)
    paths = {
        "plain": lambda inputs, gens: generate_completions(model, inputs, N, tokens, sampling, generators=gens),
        "shared": lambda inputs, gens: generate_completions_shared(model, inputs, N, tokens, sampling, generators=gens),
        "one_prefill": lambda inputs, gens: generate_greedy_and_samples(model, inputs, N, tokens, sampling, gens)[1],
    }
    state = torch.get_rng_state()
    results: dict[str, list] = {}
    for name, generate in paths.items():
        together = _rows(*generate(_batch(processor, [0, 1, 2]), row_generators(7, IDS, N)))
        alone = [r for i in range(3) for r in _rows(*generate(_batch(processor, [i]), row_generators(7, [IDS[i]], N)))]
        assert together == alone, name
        results[name] = together
    assert results["plain"] == results["shared"] == results["one_prefill"]
    assert torch.equal(torch.get_rng_state(), state)
    assert len(set(results["plain"][:N])) > 1  # the N samples of an item differ
    other = _rows(*paths["shared"](_batch(processor, [0, 1, 2]), row_generators(8, IDS, N)))
    assert other != results["shared"]


def test_a_seeded_scoring_call_leaves_the_global_random_states_alone(model, processor):  # noqa: F811
    """Pins: `score_loader(seed=...)` over a real DataLoader (whose iteration draws a base seed from torch's RNG)
    leaves torch's, NumPy's and Python's random states where they were; unseeded scoring does move torch's."""
    batches = [
        {"model_inputs": _batch(processor, [i]), "mos": torch.tensor([3.0]), "ids": [IDS[i]], "media": [f"{i}.png"]}
        for i in range(3)
    ]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    cfg = ScoringConfig(mode="both", n=N, temperature=1.0, max_new_tokens=4)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    first = score_loader(model, processor, loader, cfg, seed=3)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    assert score_loader(model, processor, loader, cfg, seed=3)["texts"] == first["texts"]
    score_loader(model, processor, loader, cfg)
    assert not torch.equal(torch.get_rng_state(), states[0])  # the check above can fail


@pytest.mark.filterwarnings("ignore::prresq.metrics.DegenerateInputWarning")
@pytest.mark.parametrize("mode", ["both", "sample"])
def test_eval_predictions_do_not_depend_on_the_batch_size(tmp_path, tiny_model_dir, synthetic_iqa, mode):
    """Pins: `prresq.eval` with seeded sampling (N = 3 at temperature 1) writes the same predictions file with
    `scoring.batch_size=1` and `=3` (5 items: batches of 3 and 2, padded differently)."""
    common = [f"scoring.mode={mode}", f"scoring.n={N}", "scoring.temperature=1.0", "limit=5", "plots=false"]
    frames = []
    for size in (1, 3):
        cfg = compose_eval([*common, f"scoring.batch_size={size}"], tmp_path / str(size), tiny_model_dir, synthetic_iqa)
        run(cfg)
        frames.append(
            pd.read_csv(tmp_path / str(size) / "eval" / "predictions_synthetic_iqa.csv", keep_default_na=False)
        )
    pd.testing.assert_frame_equal(frames[0], frames[1])
    print(frames[0][["pred", "n_parsed", "text"]])
