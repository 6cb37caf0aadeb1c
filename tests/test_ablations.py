"""experiments/ablations.py: how the study splits its runs over parallel jobs and which runs share a warm-up."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import compose_config

from prresq import analysis as A

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablations():
    spec = importlib.util.spec_from_file_location("_prresq_ablations", ROOT / "experiments" / "ablations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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
    return compose_config(
        "train", [f"+arm={arm}", f"data.synthetic.fold={fold}", f"seed={seed}", f"paths.root_dir={ROOT}"]
    )


def test_rl2r_arms_share_one_warm_up_per_fold_and_seed(ablations):
    """Every RL2R-format arm keys the same warm-up for a fold and seed; another fold, another seed or PRPO's
    5-aspect answer key a different one."""
    keys = {arm: ablations.warmup_key(_cfg(arm)) for arm in ablations.ARMS}
    assert len({keys[a] for a in ablations.ARMS if a != "prpo"}) == 1
    assert keys["prpo"] != keys["rl2r"]
    assert ablations.warmup_key(_cfg("rl2r", fold=1)) != keys["rl2r"]
    assert ablations.warmup_key(_cfg("rl2r", seed=1)) != keys["rl2r"]


def test_arms_change_only_what_they_name():
    """k4 sets K = 4, binary the fidelity variant, shuffled_mos the control flag; the rest equals the default."""
    base, k4, binary, control = (_cfg(a) for a in ("rl2r", "k4", "binary", "shuffled_mos"))
    assert (base.grpo.k, k4.grpo.k) == (8, 4)
    assert (base.reward.fidelity.variant, binary.reward.fidelity.variant) == ("mean", "binary")
    assert (base.grpo.shuffle_mos, control.grpo.shuffle_mos) == (False, True)
    assert k4.optim == base.optim and binary.grpo == base.grpo and control.reward == base.reward


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
