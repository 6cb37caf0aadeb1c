"""experiments/ablations.py: how the study splits its runs over parallel jobs, which runs share a warm-up, what
each arm changes, and how the five-aspect arms' answers are scored and rewarded."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from prresq import analysis as A
from prresq.builders import scoring_config
from prresq.config import to_plain
from prresq.rewards import build_reward_mix, compute_rewards, parse_answers
from prresq.rewards.parse import score_answers
from prresq.scoring import correlations

ROOT = Path(__file__).resolve().parents[1]


def _load_ablations():
    spec = importlib.util.spec_from_file_location("_prresq_ablations", ROOT / "experiments" / "ablations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ABLATIONS = _load_ablations()


@pytest.fixture(scope="module")
def ablations():
    return ABLATIONS


def _runs(block: dict[str, list]) -> set[tuple]:
    return set(itertools.product(block["+arm"], block["data.synthetic.fold"], block["seed"]))


def test_shards_partition_the_runs_and_keep_a_warm_up_in_one_job(ablations):
    """The full study splits by seed: every run in exactly one of the 2 jobs, and each (fold, seed) warm-up is
    needed by one job only; with one seed and one fold the arms are split instead."""
    blocks = ablations.shards([0, 1, 2], [0, 1], list(ablations.ARMS), jobs=2)
    runs = [_runs(b) for b in blocks]
    assert len(blocks) == 2 and not runs[0] & runs[1]
    assert runs[0] | runs[1] == set(itertools.product(ablations.ARMS, [0, 1, 2], [0, 1]))
    assert {s for _, _, s in runs[0]}.isdisjoint({s for _, _, s in runs[1]})
    small = ablations.shards([0], [0], ["rl2r", "shuffled_mos"], jobs=2)
    assert [b["+arm"] for b in small] == [["rl2r"], ["shuffled_mos"]]


def _cfg(arm: str, fold: int = 0, seed: int = 0):
    """An arm's run config as the study composes it: its fixed deltas (`COMMON`: the base warm-up) first."""
    overrides = [*ABLATIONS.COMMON, f"+arm={arm}", f"data.synthetic.fold={fold}", f"seed={seed}"]
    return compose_config("train", [*overrides, f"paths.root_dir={ROOT}"])


ONE_SCORE_ARMS = [
    *("rl2r", "k4", "k6", "prob_avg", "fixed_var", "binary", "shuffled_mos", "rl2r_warm", "rl2r_long", "rl2r_warm_long")
]
FIVE_ASPECT_ARMS = ["prpo", "prpo_format01", "prpo_short", "rl2r_prpo_prompt", "prpo_warm_long"]
WARMED_UP_TO_07 = ("rl2r_warm", "rl2r_warm_long", "prpo_warm_long")  # the arms whose file sets target_srcc 0.7


def test_arms_with_the_same_prompt_and_warm_up_answer_share_one_warm_up(ablations):
    """A fold and seed's warm-up is shared by the arms whose prompt and warm-up (answer template) are equal: the
    one-score arms but rl2r_warm and rl2r_warm_long (their longer warm-up is theirs); prpo, prpo_format01 and
    rl2r_prpo_prompt (PRPO's prompt and five-line answer); prpo_short (its short prompt) and prpo_warm_long (its
    0.7 target) alone. Another fold or seed keys a different one."""
    cfgs = {arm: _cfg(arm) for arm in ablations.ARMS}
    keys = {arm: ablations.warmup_key(cfg) for arm, cfg in cfgs.items()}
    assert sorted(ablations.ARMS) == sorted(ONE_SCORE_ARMS + FIVE_ASPECT_ARMS)
    for a, b in itertools.combinations(ablations.ARMS, 2):
        same = all(to_plain(cfgs[a][k]) == to_plain(cfgs[b][k]) for k in ("prompt", "warmup"))
        assert (keys[a] == keys[b]) == same, (a, b)
    groups = sorted(sorted(a for a in ablations.ARMS if keys[a] == key) for key in set(keys.values()))
    shared = sorted(a for a in ONE_SCORE_ARMS if not a.startswith("rl2r_warm"))
    warm = ["rl2r_warm", "rl2r_warm_long"]
    five = [["prpo", "prpo_format01", "rl2r_prpo_prompt"], ["prpo_short"], ["prpo_warm_long"]]
    assert groups == sorted([shared, *five, warm])
    assert ablations.warmup_key(_cfg("rl2r", fold=1)) != keys["rl2r"]
    assert ablations.warmup_key(_cfg("rl2r", seed=1)) != keys["rl2r"]


def _leaves(cfg, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value of every leaf of a composed config, interpolations unresolved."""
    node = OmegaConf.to_container(cfg, resolve=False) if not isinstance(cfg, dict) else cfg
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _changed(arm: str, base: str) -> set[str]:
    a, b = _leaves(_cfg(arm)), _leaves(_cfg(base))
    return {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}


def test_arms_change_only_what_they_name():
    """k4 sets K = 4, binary the fidelity variant, shuffled_mos the control flag; the rest equals the default."""
    base, k4, binary, control = (_cfg(a) for a in ("rl2r", "k4", "binary", "shuffled_mos"))
    assert (base.grpo.k, k4.grpo.k) == (8, 4)
    assert (base.reward.fidelity.variant, binary.reward.fidelity.variant) == ("mean", "binary")
    assert (base.grpo.shuffle_mos, control.grpo.shuffle_mos) == (False, True)
    assert k4.optim == base.optim and binary.grpo == base.grpo and control.reward == base.reward


def _study_cfg(ablations, arm: str, steps: int, smoke: bool = False):
    overrides = [*ablations.COMMON, f"+arm={arm}", ablations.steps_override(steps, smoke)]
    return compose_config("train", [*overrides, f"paths.root_dir={ROOT}"])


def test_the_study_keeps_its_base_warm_up_while_tiny_synthetic_runs_the_longer_one(ablations):
    """`tiny_synthetic` (`make train`) warms up to val SRCC 0.7 (`warmup=prior_sft_long`, chosen from the study's
    rl2r_warm_long - rl2r_long), and only the target differs from `prior_sft`; every arm of the study keeps the
    warm-up it was measured with: the base 0.5 (`COMMON`'s `warmup=prior_sft`), rl2r_warm, rl2r_warm_long and
    prpo_warm_long their file's 0.7. Without the base choice in `COMMON` every arm would move to 0.7 and the
    table's runs would no longer be what the command runs."""
    make_train = compose_config("train", ["experiment=tiny_synthetic", f"paths.root_dir={ROOT}"])
    short = compose_config("train", ["experiment=tiny_synthetic", "warmup=prior_sft", f"paths.root_dir={ROOT}"])
    assert make_train.warmup.target_srcc == 0.7 and short.warmup.target_srcc == 0.5
    long_w, short_w = to_plain(make_train.warmup), to_plain(short.warmup)
    assert {k for k in long_w.keys() | short_w.keys() if long_w.get(k) != short_w.get(k)} == {"target_srcc"}
    targets = {arm: _cfg(arm).warmup.target_srcc for arm in ablations.ARMS}
    assert targets == {arm: 0.7 if arm in WARMED_UP_TO_07 else 0.5 for arm in ablations.ARMS}


def test_study_steps_are_the_commands_unless_an_arm_file_sets_its_own(ablations):
    """The study's `--steps` reaches every arm's `trainer.max_steps` but the `_long` arms' (their files: 600
    updates, the only change from rl2r and rl2r_warm; prpo_warm_long is prpo with rl2r_warm_long's two changes);
    a smoke study gives every arm `--steps`."""
    assert _changed("rl2r_warm_long", "rl2r_warm") == {"arm_steps"}
    assert _changed("rl2r_long", "rl2r") == {"arm_steps"}
    assert _changed("rl2r_warm", "rl2r") == {"warmup.target_srcc"}
    assert _changed("prpo_warm_long", "prpo") == {"warmup.target_srcc", "arm_steps"}
    arms = ("rl2r", "rl2r_warm", "rl2r_long", "rl2r_warm_long", "prpo", "prpo_warm_long")
    steps = {arm: _study_cfg(ablations, arm, 300).trainer.max_steps for arm in arms}
    assert steps == dict(zip(arms, (300, 300, 600, 600, 300, 600), strict=True))
    assert _study_cfg(ablations, "k4", 120).trainer.max_steps == 120
    assert _study_cfg(ablations, "rl2r_warm_long", 20, smoke=True).trainer.max_steps == 20
    assert {base for arm, bases in ablations.RL2R_LEVERS for base in bases} <= set(ablations.ARMS)


def test_gap_arms_change_only_what_they_name():
    """Against their base arm: prpo_format01 changes the format weight only (1 -> 0.1); prpo_short the prompt and
    the stage-1 pool only; rl2r_prpo_prompt takes prpo's prompt, warm-up answer and answer length, nothing else."""
    prpo, fmt, short, rl2r, mixed = (
        _cfg(a) for a in ("prpo", "prpo_format01", "prpo_short", "rl2r", "rl2r_prpo_prompt")
    )
    assert _changed("prpo_format01", "prpo") == {"reward.preresq_format.weight"}
    assert (prpo.reward.preresq_format.weight, fmt.reward.preresq_format.weight) == (1.0, 0.1)
    assert _changed("prpo_short", "prpo") == {
        "prompt.name",
        "prompt.text",
        "prompt.pool",
        "schedule.stage1.prompt_pool",
    }
    assert short.prompt.name == "tiny_five" and short.prompt.pool is None
    assert (prpo.schedule.stage1.prompt_pool, short.schedule.stage1.prompt_pool) == (True, False)
    assert (short.prompt.num_aspects, short.scoring.answer_rule) == (5, "aspect_mean")
    changed = _changed("rl2r_prpo_prompt", "rl2r")
    assert {k for k in changed if not k.startswith("prompt.")} == {"warmup.answer_template", "grpo.max_new_tokens"}
    assert to_plain(mixed.prompt) == to_plain(prpo.prompt) and mixed.warmup == prpo.warmup
    assert mixed.grpo.max_new_tokens == prpo.grpo.max_new_tokens and mixed.reward == rl2r.reward
    assert mixed.schedule == rl2r.schedule and mixed.grpo.k == rl2r.grpo.k == 8


def test_short_five_number_prompt_is_about_the_tiny_prompts_length(tiny_model_dir):
    """prompt=tiny_five: within 1.5x prompt=tiny's tokens, less than half of PRPO's prompt."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    n = {arm: len(tok.encode(str(_cfg(arm).prompt.text))) for arm in ("rl2r", "prpo_short", "prpo")}
    assert n["prpo_short"] <= 1.5 * n["rl2r"] and n["prpo_short"] < n["prpo"] / 2, n


@pytest.mark.parametrize("arm", FIVE_ASPECT_ARMS)
def test_five_aspect_arms_score_unreadable_answers_as_failures(arm: str):
    """Held-out scoring of every five-aspect arm (the `ScoringConfig` training builds) reads the mean of the five
    numbers and counts an answer with fewer as a failure (NaN, in `fail_greedy`), where the training reward's
    released parser pads it (4.5 -> 4.5 x 5) or falls back to 3.0."""
    scoring = scoring_config(_cfg(arm))
    five = "<think>ok</think><answer>{}</answer>"
    texts = [five.format("\n".join(v)) for v in (["4", "4", "4", "4", "2"], ["1", "2", "3", "2", "2"], ["5"] * 5)]
    texts += [five.format("4.5"), "no answer"]
    scores, _ = score_answers(texts, scoring.answer_rule, scoring.num_aspects)
    assert scores[:3].tolist() == pytest.approx([3.6, 2.0, 5.0]) and torch.isnan(scores[3:]).all()
    metrics = correlations({"greedy": scores, "mos": torch.tensor([3.0, 2.0, 4.0, 1.0, 5.0])})
    assert metrics["fail_greedy"] == pytest.approx(2 / 5) and metrics["srcc_greedy"] == pytest.approx(1.0, abs=1e-5)
    assert parse_answers(texts[3:], 5)[0].tolist() == [4.5, 3.0]


def test_rl2r_with_prpo_prompt_rewards_the_aspect_mean():
    """rl2r_prpo_prompt's RL2R rewards read one score per five-line answer, the aspects' mean: its fidelity equals
    the default arm's fidelity on one-number answers holding those means, and the five-line answer meets the
    VisualQuality-R1 format."""
    mixed, rl2r = _cfg("rl2r_prpo_prompt"), _cfg("rl2r")
    aspects = [
        ["4", "4", "4", "4", "2"],
        ["1", "2", "3", "2", "2"],
        ["5", "4", "5", "4", "5"],
        ["2", "2", "2", "2", "2"],
    ]
    means = [3.6, 2.0, 4.6, 2.0]
    five = [f"<think>ok</think><answer>{chr(10).join(a)}</answer>" for a in aspects]
    one = [f"<think>ok</think><answer>{m}</answer>" for m in means]
    mos, ids = torch.tensor([3.0, 2.5]), torch.zeros(2, dtype=torch.long)  # 2 images x K = 2

    def rewards(cfg, texts):
        scores, asp = parse_answers(texts, int(cfg.prompt.num_aspects))
        return scores, compute_rewards(
            build_reward_mix(cfg.reward), texts, scores.view(2, 2), asp.view(2, 2, -1), mos, ids
        )

    scores, (_, terms) = rewards(mixed, five)
    one_scores, (_, one_terms) = rewards(rl2r, one)
    assert scores.tolist() == pytest.approx(means) and one_scores.tolist() == pytest.approx(means)
    assert torch.allclose(terms["fidelity"], one_terms["fidelity"])
    assert terms["format"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_bands_are_mean_min_max_over_the_runs_of_an_arm():
    """Two runs of arm a at steps 0 and 1 (values 1, 3 then 2, 6): mean 2 and 4, band [1, 3] and [2, 6]."""
    df = pd.DataFrame(
        {
            "run": ["r0", "r0", "r1", "r1", "r2"],
            "arm": ["a", "a", "a", "a", "b"],
            "step": [0, 1, 0, 1, 0],
            "tag": ["val/srcc"] * 5,
            "value": [1.0, 2.0, 3.0, 6.0, 9.0],
        }
    )
    b = A.bands(df, "val/srcc").set_index(["arm", "step"])
    assert b.loc[("a", 0)].tolist() == [2.0, 1.0, 3.0, 2] and b.loc[("a", 1)].tolist() == [4.0, 2.0, 6.0, 2]
    assert b.loc[("b", 0)].tolist() == [9.0, 9.0, 9.0, 1]
