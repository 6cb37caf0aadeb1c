"""Reward registry, RewardMix weights, local rows, and the Hydra ``reward`` group composition."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prresq.rewards import (
    REWARDS,
    RewardInputs,
    RewardMix,
    build_reward_mix,
    fidelity_reward,
    format_reward,
    parse_answers,
    preresq_format_reward,
    preresq_reward,
    register_reward,
)
from prresq.rewards.preresq import (
    pairwise_score_rank,
    rank_reward,
    response_penalty,
    triplet_rank,
    triplet_response_balance,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPECTED_TERMS = {
    "fidelity",
    "format",
    "preresq_format",
    "response_penalty",
    "response_balance",
    "pairwise_score_rank",
    "triplet_rank",
    "rank",
    "preresq",
}


def _one_score_inputs(local: slice = slice(None)) -> RewardInputs:
    # B = 4 images, K = 3; texts hold the scores so that parse -> scores is the real path.
    rows = [[3.0, 4.5, 5.0], [1.0, 2.0, 2.5], [4.0, 4.0, 3.5], [2.0, 1.5, 3.0]]
    texts = [f"<think>t</think><answer>{s}</answer>" for row in rows for s in row]
    texts[4] = "<answer>no score</answer>"  # image 1, sample 1: unparseable, bad format
    scores, aspects = parse_answers(texts, num_aspects=1)
    K = 3
    idx = range(4)[local]
    local_texts = [t for i in idx for t in texts[i * K : (i + 1) * K]]
    return RewardInputs(
        texts=local_texts,
        scores=scores.reshape(4, K),
        aspects=aspects.reshape(4, K, 1),
        mos=torch.tensor([4.0, 1.5, 3.0, 2.0]),
        dataset_ids=torch.tensor([0, 0, 1, 1]),
        local=local,
    )


def _aspect_inputs(
    B: int = 4, K: int = 6, seed: int = 0, task: str = "iqa", low_spread: bool = False
) -> tuple[RewardInputs, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    D = 5 if task == "iqa" else 2
    values = (1 + 4 * torch.rand(B, K, D, generator=g)).round(decimals=2)
    if low_spread:  # completion 0 of every image: aspects within 0.4 (std < 0.5: the response penalty bites)
        values[:, 0] = (values[:, 0, :1] + 0.4 * torch.rand(B, D, generator=g)).round(decimals=2).clamp(max=5)
    texts = [
        "<think>x</think><answer>" + "\n".join(f"{v:.2f}" for v in row.tolist()) + "\n</answer>"
        for row in values.reshape(B * K, D)
    ]
    if task == "iqa":  # the IQA format has no newline after the 5th number
        texts = [t.replace("\n</answer>", "</answer>") for t in texts]
    scores, aspects = parse_answers(texts, num_aspects=D)
    inputs = RewardInputs(
        texts=texts,
        scores=scores.reshape(B, K),
        aspects=aspects.reshape(B, K, D),
        mos=1 + 4 * torch.rand(B, generator=g),
        dataset_ids=torch.zeros(B, dtype=torch.long),
        local=slice(None),
    )
    return inputs, values


def test_registered_terms_compute_their_functions_with_released_defaults() -> None:
    """Pins: each registered name builds (with no constants) the term its docstring names, computing that
    function with the released default constants on the global tensors, and returning the local rows."""
    inputs, _ = _aspect_inputs(B=6, K=6, seed=3, low_spread=True)
    inputs.dataset_ids = torch.tensor([0, 1, 0, 1, 0, 1])
    inputs.texts[1] = "<think>x</think><answer>3.00</answer>"  # VisualQuality-R1 format only
    inputs.texts[20] = "3.00"  # neither format
    a, g, ids = inputs.aspects, inputs.mos, inputs.dataset_ids
    q = a.mean(-1)
    expected = {
        "fidelity": fidelity_reward(inputs.scores, g, dataset_ids=ids),
        "format": format_reward(inputs.texts).reshape(6, 6),
        "preresq_format": preresq_format_reward(inputs.texts, "iqa").reshape(6, 6),
        "response_penalty": response_penalty(a, min_std=0.5, scale=0.5),
        "response_balance": triplet_response_balance(a, num_dims=4, tolerance=0.05, scale=0.5),
        "pairwise_score_rank": pairwise_score_rank(q, g, "released", dataset_ids=ids),
        "triplet_rank": triplet_rank(q, g, dataset_ids=ids),
        "rank": rank_reward(q, g, tolerance=0.02),
        "preresq": preresq_reward(a, g, "iqa", "released", dataset_ids=ids),
    }
    assert set(REWARDS) >= EXPECTED_TERMS == set(expected)
    for name, value in expected.items():
        assert value.abs().sum() > 0, name  # a non-trivial value for every term on this input
        torch.testing.assert_close(REWARDS[name]()(inputs), value, msg=name)
        local = RewardInputs(**{**vars(inputs), "texts": inputs.texts[3 * 6 :], "local": slice(3, 6)})
        torch.testing.assert_close(REWARDS[name]()(local), value[3:], msg=name)
    # Distinct terms: no two names are wired to the same computation.
    values = list(expected.values())
    assert all(not torch.allclose(x, y) for i, x in enumerate(values) for y in values[i + 1 :])


def test_mix_weights_and_per_term_values() -> None:
    inputs = _one_score_inputs()
    mix = build_reward_mix({"fidelity": {"weight": 2.0, "variant": "mean"}, "format": {"weight": 0.5}})
    total, terms = mix(inputs)
    fid = fidelity_reward(inputs.scores, inputs.mos, dataset_ids=inputs.dataset_ids)
    fmt = format_reward(inputs.texts).reshape(4, 3)
    torch.testing.assert_close(terms["fidelity"], fid)  # unweighted
    torch.testing.assert_close(terms["format"], fmt)
    torch.testing.assert_close(total, 2.0 * fid + 0.5 * fmt)
    assert terms["format"][1, 1].item() == 0.0 and terms["fidelity"][1, 1].item() == 0.0  # unparseable sample
    assert not torch.isnan(total).any()


def test_local_rows_match_global_computation() -> None:
    cfg = {"fidelity": {"weight": 1.0}, "format": {"weight": 1.0}, "preresq": {"weight": 1.0}}
    full, full_terms = build_reward_mix(cfg)(_one_score_inputs())
    for local in (slice(0, 2), slice(2, 4)):
        part, part_terms = build_reward_mix(cfg)(_one_score_inputs(local))
        assert part.shape == (2, 3)
        torch.testing.assert_close(part, full[local])
        for key in cfg:
            torch.testing.assert_close(part_terms[key], full_terms[key][local])


def test_alias_and_defaults() -> None:
    inputs = _one_score_inputs()
    mix = build_reward_mix({"fid_bin": {"name": "fidelity", "variant": "binary", "weight": 1.0}, "format": None})
    total, terms = mix(inputs)
    assert set(terms) == {"fid_bin", "format"}
    binary = fidelity_reward(inputs.scores, inputs.mos, "binary", dataset_ids=inputs.dataset_ids)
    torch.testing.assert_close(terms["fid_bin"], binary)
    torch.testing.assert_close(total, binary + terms["format"])  # missing weight -> 1


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(ValueError, match="registered rewards") as err:
        build_reward_mix({"accuracy": {"weight": 1.0}})
    for name in EXPECTED_TERMS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="bad constants"):
        build_reward_mix({"fidelity": {"weight": 1.0, "gama": 1e-6}})


def test_register_custom_term() -> None:
    @register_reward("_test_constant")
    class Constant:
        def __init__(self, value: float = 1.0):
            self.value = value

        def __call__(self, inputs: RewardInputs) -> torch.Tensor:
            return torch.full((len(inputs.texts) // inputs.num_samples, inputs.num_samples), self.value)

    try:
        total, _ = build_reward_mix({"_test_constant": {"weight": 3.0, "value": 0.5}})(_one_score_inputs())
        torch.testing.assert_close(total, torch.full((4, 3), 1.5))
        with pytest.raises(ValueError, match="already registered"):
            register_reward("_test_constant")(Constant)
    finally:
        REWARDS.pop("_test_constant")


def test_mix_rejects_wrong_shapes() -> None:
    class Bad:
        def __call__(self, inputs: RewardInputs) -> torch.Tensor:
            return torch.zeros(1)

    with pytest.raises(ValueError, match="returned"):
        RewardMix({"bad": Bad()}, {"bad": 1.0})(_one_score_inputs())


def test_preresq_terms_ignore_nan_aspects() -> None:
    """Pins: an unparseable sample (NaN aspects) enters the PreResQ terms as the released parser's fallback 3.0,
    so its own reward is finite and the other images' pair terms are exactly those of a sample that answered
    3.0."""
    inputs = _one_score_inputs()
    assert torch.isnan(inputs.aspects[1, 1]).all()
    total, terms = build_reward_mix({"preresq": {"weight": 1.0}, "rank": {"weight": 1.0}})(inputs)
    filled = inputs.aspects.clone()
    filled[1, 1] = 3.0
    q = filled.mean(-1)
    torch.testing.assert_close(terms["preresq"], preresq_reward(filled, inputs.mos, dataset_ids=inputs.dataset_ids))
    torch.testing.assert_close(terms["rank"], rank_reward(q, inputs.mos))
    torch.testing.assert_close(total, terms["preresq"] + terms["rank"])
    raw = preresq_reward(inputs.aspects, inputs.mos, dataset_ids=inputs.dataset_ids)
    assert not torch.isfinite(raw[1, 1])  # without the fallback: a NaN reward for the sample itself
    assert not torch.allclose(raw[0], terms["preresq"][0])  # and image 0, its partner, would see another value


# ---------------------------------------------------------------- Hydra composition


def _compose(overrides: list[str], primary: str | None = None) -> dict:
    config_dir = str(CONF) if primary is None else primary
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose(config_name=None if primary is None else "rewards_test", overrides=overrides)
    return OmegaConf.to_container(cfg.reward, resolve=True)


def test_every_reward_file_has_weight_and_builds() -> None:
    presets = {"preresq_iqa", "preresq_vqa"}  # `# @package reward`: several terms
    singles = sorted(p.stem for p in (CONF / "reward").glob("*.yaml") if p.stem not in presets)
    assert {"fidelity", "format", "preresq", "rank"} <= set(singles)
    for stem in singles:
        text = (CONF / "reward" / f"{stem}.yaml").read_text()
        assert text.splitlines()[0].startswith("# @package reward."), stem
        reward = _compose([f"+reward=[{stem}]"])
        ((key, node),) = reward.items()
        assert "weight" in node, stem
        mix = build_reward_mix(reward)
        # the file's weight and every constant reach the built term (a mistyped key would raise or be lost)
        term = mix.terms[key]
        assert type(term) is REWARDS[node.get("name", key)], stem
        assert mix.weights[key] == node["weight"], stem
        for const, value in node.items():
            if const not in ("weight", "name"):
                assert getattr(term, const) == value, (stem, const)


def test_defaults_list_yields_one_key_per_term(tmp_path: Path) -> None:
    # A primary config whose defaults list selects two reward files, like conf/train.yaml does.
    (tmp_path / "rewards_test.yaml").write_text(
        f"defaults:\n  - reward: [fidelity, format]\n  - _self_\nhydra:\n  searchpath:\n    - file://{CONF}\n"
    )
    reward = _compose(["reward.fidelity.variant=prob_avg"], primary=str(tmp_path))
    assert reward == {
        "fidelity": {"weight": 1.0, "variant": "prob_avg", "gamma": 1e-6, "eps": 1e-6, "nan_reward": 0.0},
        "format": {"weight": 1.0},
    }


def test_preresq_iqa_preset_reproduces_released_total() -> None:
    reward = _compose(["+reward=[preresq_iqa,preresq_format]"])
    assert set(reward) == {
        "pairwise_score_rank",
        "response_penalty",
        "response_balance",
        "triplet_rank",
        "rank",
        "preresq_format",
    }
    inputs, _ = _aspect_inputs(task="iqa")
    total, terms = build_reward_mix(reward)(inputs)
    released = preresq_reward(inputs.aspects, inputs.mos, "iqa") + preresq_format_reward(inputs.texts, "iqa").reshape(
        4, 6
    )
    assert terms["preresq_format"].min().item() == 1.0  # the texts are well formed
    torch.testing.assert_close(total, released, atol=1e-6, rtol=0)

    # ablate one term from the command line: the total loses exactly 0.125 / 3 * Trip
    ablated = _compose(["+reward=[preresq_iqa,preresq_format]", "reward.triplet_rank.weight=0"])
    total_ablated, _ = build_reward_mix(ablated)(inputs)
    trip = triplet_rank(inputs.aspects.mean(-1), inputs.mos)
    torch.testing.assert_close(total_ablated, released - 0.125 / 3 * trip, atol=1e-6, rtol=0)


def test_preresq_vqa_preset_and_single_term() -> None:
    reward = _compose(["+reward=[preresq_vqa,preresq_format_vqa]"])
    assert reward["preresq_format"]["task"] == "vqa" and "rank" not in reward
    inputs, _ = _aspect_inputs(task="vqa", seed=1)
    total, terms = build_reward_mix(reward)(inputs)
    released = preresq_reward(inputs.aspects, inputs.mos, "vqa") + 1.0  # every text has the VQA format
    assert terms["preresq_format"].min().item() == 1.0
    torch.testing.assert_close(total, released, atol=1e-6, rtol=0)
    # the one-term form gives the same numbers
    single = _compose(["+reward=[preresq]", "reward.preresq.task=vqa"])
    total_single, _ = build_reward_mix(single)(inputs)
    torch.testing.assert_close(total_single, released - 1.0, atol=1e-6, rtol=0)


def test_preset_weights_are_the_released_fractions() -> None:
    reward = _compose(["+reward=[preresq_iqa]"])
    weights = {k: v["weight"] for k, v in reward.items()}
    expected = {
        "pairwise_score_rank": 0.375 / 3,
        "response_penalty": -1 / 3,
        "response_balance": 0.5 / 3,
        "triplet_rank": 0.125 / 3,
        "rank": 1 / 3,
    }
    assert weights == pytest.approx(expected, abs=1e-15)
