"""The shared scoring path: N-sample averaging with failures, the expected-score rule, padding of the answer prefix."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import prresq.scoring as scoring
from prresq.data.collate import PromptCollator
from prresq.data.records import Record
from prresq.models import load_policy, load_processor
from prresq.scoring import (
    ScoringConfig,
    answer_prefix,
    correlations,
    digit_candidates,
    expected_from_logits,
    expected_scores,
    score_batch,
    score_loader,
)

# ----------------------------------------------------------------------------- fake model / decode


class FakeTokenizer:
    pad_token_id = 0

    def convert_tokens_to_ids(self, token: str) -> int:
        return {"<|im_end|>": 1, "<|endoftext|>": 0}.get(token, 99)


class FakeProcessor:
    tokenizer = FakeTokenizer()


@pytest.fixture
def fixed_answers(monkeypatch: pytest.MonkeyPatch):
    """Make the scoring engine's generation + `decode` return fixed texts: greedy -> `greedy`, sampled -> `samples`."""
    answers: dict[str, list[str]] = {"greedy": [], "samples": []}
    calls: list[dict] = []

    sampled = 10_000  # sampled rows' ids start here, greedy rows' at 0

    def fake_generate(model, inputs, k, tokens, sampling, do_sample=True):
        calls.append({"k": k, "do_sample": do_sample, **vars(sampling)})
        texts = answers["samples"] if do_sample else answers["greedy"]
        assert len(texts) == inputs["input_ids"].shape[0] * k
        ids = torch.arange(len(texts))[:, None] + (sampled if do_sample else 0)  # row -> text via fake decode
        return ids, torch.ones_like(ids)

    def fake_decode(processor, ids):
        return [answers["samples"][i - sampled] if i >= sampled else answers["greedy"][i] for i in ids[:, 0].tolist()]

    class FakeEngine:
        """The engine interface scoring uses: `generate(model, inputs, k, do_sample, generators)` and `plain`."""

        def __init__(self, cfg: ScoringConfig) -> None:
            self.cfg = cfg

        @property
        def plain(self) -> FakeEngine:
            return self

        def generate(self, model, inputs, k=None, do_sample=True, generators=None):
            return fake_generate(model, inputs, k, None, self.cfg.sampling, do_sample)

    monkeypatch.setattr(scoring, "engine_for", lambda model, processor, cfg: FakeEngine(cfg))
    monkeypatch.setattr(scoring, "decode", fake_decode)
    return answers, calls


def _inputs(b: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.zeros(b, 4, dtype=torch.long), "attention_mask": torch.ones(b, 4, dtype=torch.long)}


SAMPLES = [
    # item 0: two of four parse (2 and 4) -> mean 3
    "<think>a</think><answer>2</answer>",
    "no answer here",
    "<answer>4.0</answer>",
    "<answer>n/a</answer>",
    # item 1: all four fail -> NaN, never a random number
    "",
    "3",
    "<answer></answer>",
    "<think>4</think>",
    # item 2: all parse; 7 is clamped to 5 -> (1 + 2 + 3 + 5) / 4
    "<answer>1</answer>",
    "<answer>2</answer>",
    "<answer>3</answer>",
    "<answer>7</answer>",
]


def test_sample_mean_excludes_unparseable_answers_and_all_failed_is_nan(fixed_answers):
    answers, calls = fixed_answers
    answers["samples"] = SAMPLES
    cfg = ScoringConfig(mode="sample", n=4, temperature=0.7, answer_rule="answer_first")  # "3" alone does not parse
    out = score_batch(None, FakeProcessor(), _inputs(3), cfg)
    assert out.n_parsed.tolist() == [2, 0, 4]
    assert out.sample_mean[0].item() == pytest.approx(3.0)
    assert math.isnan(out.sample_mean[1].item())
    assert out.sample_mean[2].item() == pytest.approx(2.75)
    assert out.greedy is None and out.expected is None
    assert out.primary is out.sample_mean
    assert out.texts == [SAMPLES[0], SAMPLES[4], SAMPLES[8]]
    assert calls[-1]["k"] == 4 and calls[-1]["temperature"] == 0.7


def test_both_mode_reports_greedy_and_uses_the_sample_mean(fixed_answers):
    answers, _ = fixed_answers
    answers["samples"] = SAMPLES
    answers["greedy"] = ["<answer>4.5</answer>", "bad", "<answer>1</answer>"]
    out = score_batch(None, FakeProcessor(), _inputs(3), ScoringConfig(mode="both", n=4, answer_rule="answer_first"))
    assert out.greedy[0].item() == pytest.approx(4.5) and math.isnan(out.greedy[1].item())
    assert out.primary is out.sample_mean
    assert out.n_parsed.tolist() == [2, 0, 4]  # counts of the N samples
    assert out.texts == answers["greedy"]


def test_greedy_mode_counts_its_parse(fixed_answers):
    answers, _ = fixed_answers
    answers["greedy"] = ["<answer>2.5</answer>", "nothing"]
    out = score_batch(None, FakeProcessor(), _inputs(2), ScoringConfig(mode="greedy"))
    assert out.n_parsed.tolist() == [1, 0]
    assert out.primary is out.greedy


def test_unknown_mode_is_rejected_before_any_generation(fixed_answers):
    _, calls = fixed_answers
    with pytest.raises(ValueError, match="scoring.mode"):
        score_batch(None, FakeProcessor(), _inputs(1), ScoringConfig(mode="mean"))
    assert calls == []


def test_score_loader_skips_empty_batches_and_keeps_order(fixed_answers):
    answers, _ = fixed_answers
    answers["greedy"] = ["<answer>1</answer>", "<answer>3</answer>", "<answer>5</answer>"]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    batch = {"model_inputs": _inputs(3), "mos": torch.tensor([1.0, 2.0, 3.0]), "ids": ["a", "b", "c"]}
    batch["media"] = ["a.png", "b.png", "c.png"]
    scored = score_loader(Model(), FakeProcessor(), [None, batch], ScoringConfig(mode="greedy"))
    assert scored["ids"] == ["a", "b", "c"] and scored["media"] == ["a.png", "b.png", "c.png"]
    assert scored["pred"].tolist() == [1.0, 3.0, 5.0]
    assert scored["sample_mean"] is None
    corr = correlations(scored)
    assert corr["srcc_greedy"] == pytest.approx(1.0, abs=1e-5) and corr["fail_greedy"] == 0.0


def test_from_mapping_ignores_keys_of_the_eval_block():
    cfg = ScoringConfig.from_mapping(
        {"mode": "both", "n": 3, "batch_size": 4, "seed": 1, "logistic": True}, num_aspects=5
    )
    assert (cfg.mode, cfg.n, cfg.num_aspects) == ("both", 3, 5)


# ----------------------------------------------------------------------------- expected score rule


def test_expected_score_on_hand_made_logits():
    cands, values = [3, 4, 5, 6, 7], [1.0, 2.0, 3.0, 4.0, 5.0]
    logits = torch.zeros(4, 10)
    # row 0: uniform over all 10 tokens -> expected 3 (uniform over candidates), mass 5/10
    # row 1: '5' dominates -> ~5
    logits[1, 7] = 50.0
    # row 2: only '2' and '4' likely, equally -> 3; mass ~1
    logits[2, [4, 6]] = 30.0
    # row 3: p('1') : p('2') = e^2 : 1 (others -inf-like) -> (e^2 * 1 + 1 * 2) / (e^2 + 1)
    logits[3] = -1e4
    logits[3, 3], logits[3, 4] = 2.0, 0.0
    expected, mass = expected_from_logits(logits, cands, values)
    e2 = math.exp(2.0)
    assert expected.tolist() == pytest.approx([3.0, 5.0, 3.0, (e2 + 2) / (e2 + 1)], abs=1e-5)
    assert mass[0].item() == pytest.approx(0.5)
    assert mass[1].item() == pytest.approx(1.0, abs=1e-6) and mass[2].item() == pytest.approx(1.0, abs=1e-6)


def test_digit_candidates_of_the_tiny_tokenizer(tiny_model_dir: Path):
    tok = load_processor(tiny_model_dir).tokenizer
    ids, values = digit_candidates(tok, 1.0, 5.0)
    assert values == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]
    assert digit_candidates(tok, 0.5, 2.5)[1] == [1.0, 2.0]


def test_answer_prefix_stops_after_the_last_answer_tag(tiny_model_dir: Path):
    tok = load_processor(tiny_model_dir).tokenizer
    ids = tok.encode("<think>blurry</think><answer>2</answer> then <answer>3.5</answer>", add_special_tokens=False)
    prefix, forced = answer_prefix(tok, ids)
    assert not forced
    assert tok.decode(prefix) == "<think>blurry</think><answer>2</answer> then <answer>"
    assert prefix == ids[: len(prefix)]
    bare = tok.encode("<think>no tag</think>", add_special_tokens=False)
    prefix, forced = answer_prefix(tok, bare)
    assert forced and tok.decode(prefix) == "<think>no tag</think><answer>"


class CharTokenizer:
    """Tokens are given strings; encode is per character (ids = code points)."""

    def __init__(self, pieces: list[str]) -> None:
        self.vocab = {1000 + i: p for i, p in enumerate(pieces)}

    def decode(self, ids, **kw) -> str:
        return "".join(self.vocab.get(i, chr(i)) for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


def test_answer_prefix_retokenises_a_token_that_crosses_the_tag():
    tok = CharTokenizer(["ok <answ", "er>3", ".5</answer>"])
    prefix, forced = answer_prefix(tok, [1000, 1001, 1002])
    assert not forced
    assert prefix[0] == 1000 and tok.decode(prefix) == "ok <answer>"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_policy(tiny_model_dir), load_processor(tiny_model_dir)


def _batch(processor, synthetic_iqa: Path, n: int) -> dict:
    images = sorted((synthetic_iqa / "images").rglob("*.png"))[:n]
    records = [Record(id=str(i), dataset="t", media=p, mos=3.0, mos_mapped=3.0) for i, p in enumerate(images)]
    return PromptCollator(processor, "Rate the image quality from 1 to 5.")(records)["model_inputs"]


def test_expected_scores_match_an_unpadded_forward_per_row(tiny, synthetic_iqa: Path):
    """Rows with different prompt and prefix lengths are re-padded on the left without changing their logits."""
    model, processor = tiny
    tok = processor.tokenizer
    inputs = _batch(processor, synthetic_iqa, 2)
    inputs["input_ids"][1, :3] = tok.pad_token_id  # make row 1's prompt shorter (left padding)
    inputs["attention_mask"][1, :3] = 0
    texts = ["<think>sharp</think><answer>4</answer>", "<think>noisy image, grainy</think>"]
    comp = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, comp)) + 2
    pad = tok.pad_token_id
    completion = torch.tensor([c + [pad] * (width - len(c)) for c in comp])
    cfg = ScoringConfig(mode="expected")
    expected, mass, forced = expected_scores(model, processor, inputs, completion, cfg)
    assert forced.tolist() == [False, True]
    cands, values = digit_candidates(tok)
    offsets = [0, *inputs["image_grid_thw"].prod(-1).cumsum(0).tolist()]
    for i, text in enumerate(texts):
        prefix, _ = answer_prefix(tok, comp[i])
        keep = inputs["attention_mask"][i].bool()
        row = {
            "input_ids": torch.cat([inputs["input_ids"][i][keep], torch.tensor(prefix)])[None],
            "pixel_values": inputs["pixel_values"][offsets[i] : offsets[i + 1]],
            "image_grid_thw": inputs["image_grid_thw"][i : i + 1],
        }
        row["attention_mask"] = torch.ones_like(row["input_ids"])
        if "mm_token_type_ids" in inputs:
            row["mm_token_type_ids"] = torch.cat(
                [inputs["mm_token_type_ids"][i][keep], torch.zeros(len(prefix), dtype=torch.long)]
            )[None]
        with torch.no_grad():
            logits = model(**row, use_cache=False).logits[:, -1]
        e, m = expected_from_logits(logits, cands, values)
        assert expected[i].item() == pytest.approx(e.item(), abs=1e-4), text
        assert mass[i].item() == pytest.approx(m.item(), rel=1e-3)


def test_expected_mode_on_the_tiny_model(tiny, synthetic_iqa: Path):
    model, processor = tiny
    inputs = _batch(processor, synthetic_iqa, 3)
    out = score_batch(model, processor, inputs, ScoringConfig(mode="expected", max_new_tokens=6))
    assert out.primary is out.expected
    assert torch.all((out.expected >= 1.0) & (out.expected <= 5.0))
    assert torch.all((out.expected_mass > 0) & (out.expected_mass <= 1))
    assert out.greedy is not None and out.n_parsed is not None
    with pytest.raises(ValueError, match="single-number"):
        score_batch(model, processor, inputs, ScoringConfig(mode="expected", max_new_tokens=2, num_aspects=5))


def test_released_rule_reads_a_number_outside_answer_tags(fixed_answers):
    """ScoringConfig's default rule (`released`) for one score is the anchors' released inference: the first number
    of the last <answer>, else of the text ("3" counts); still NaN without any number ("" and "n/a")."""
    answers, _ = fixed_answers
    answers["greedy"] = ["3", "", "<answer>n/a</answer>", "<answer>2.5</answer> 4"]
    out = score_batch(None, FakeProcessor(), _inputs(4), ScoringConfig(mode="greedy"))
    assert out.greedy[0].item() == 3.0 and out.greedy[3].item() == 2.5
    assert math.isnan(out.greedy[1].item()) and math.isnan(out.greedy[2].item())
    assert out.n_parsed.tolist() == [1, 0, 0, 1]
