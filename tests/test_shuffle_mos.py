"""`grpo.shuffle_mos`, the README's control run, through the real training module's rollout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf, open_dict
from PIL import Image

from prresq.data.collate import PromptCollator
from prresq.data.dataflow import ImageFlow
from prresq.data.records import Record
from prresq.module import GRPOModule
from prresq.rewards import register_reward
from prresq.rewards.registry import REWARDS, RewardInputs
from prresq.rollout import Rollout

MOS = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]

if "test_mos_seen" not in REWARDS:

    @register_reward("test_mos_seen")
    class MosSeen:
        """The MOS the reward terms were given, one column per completion: what the reward learns from."""

        def __call__(self, inputs: RewardInputs) -> torch.Tensor:
            return inputs.mos[inputs.local][:, None].expand(-1, inputs.num_samples).float()


@pytest.fixture(scope="module")
def batch_and_config(tiny_model_dir, tmp_path_factory):
    overrides = [
        "experiment=tiny_synthetic",
        "reward=[format]",
        "+reward.mos_seen={name: test_mos_seen, weight: 0.0}",
        "grpo.k=2",
        "grpo.max_new_tokens=3",
        "loss.beta=0",
    ]
    cfg = compose_config("train", overrides, model_dir=tiny_model_dir)
    with open_dict(cfg):
        cfg.model.tiny = None
    keys = ("model", "grpo", "loss", "reward", "optim", "lr_scheduler", "scoring", "prompt")
    plain = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in keys}
    root = tmp_path_factory.mktemp("shuffle")
    rng = np.random.default_rng(0)
    records = []
    for i, mos in enumerate(MOS):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(path)
        records.append(Record(f"r{i}", "toy", path, mos, mos, {}, f"toy.jsonl:{i + 1}"))
    module = GRPOModule(
        **{k: plain[k] for k in ("model", "grpo", "loss", "reward", "optim", "lr_scheduler", "scoring")}
    )
    batch = PromptCollator(module.processor, plain["prompt"]["text"], ImageFlow(), dataset_ids={"toy": 0})(records)
    return batch, plain


def _rollout(plain: dict, batch: dict, **grpo) -> Rollout:
    module = GRPOModule(
        **{k: plain[k] for k in ("model", "loss", "reward", "optim", "lr_scheduler", "scoring")},
        grpo={**plain["grpo"], **grpo},
    )
    torch.manual_seed(0)  # the same sampling RNG for every run
    return module.rollout(batch)


def test_shuffle_mos_permutes_the_mos_the_reward_sees(batch_and_config):
    """Pins `grpo.shuffle_mos` (README control): the reward terms see the batch's MOS permuted within the
    batch (same values, another order), reproducibly for a seed and differently for another seed, while
    the sampled completions stay the same (the control changes what the reward knows, nothing else)."""
    batch, plain = batch_and_config
    given = batch["mos"].float()
    plain_run = _rollout(plain, batch, shuffle_mos=False)
    torch.testing.assert_close(plain_run.terms["mos_seen"][:, 0], given)

    shuffled = _rollout(plain, batch, shuffle_mos=True, seed=1)
    seen = shuffled.terms["mos_seen"][:, 0]
    assert sorted(seen.tolist()) == sorted(given.tolist())  # a permutation of this batch's MOS
    assert not torch.equal(seen, given)
    assert torch.equal(shuffled.terms["mos_seen"][:, 1], seen)  # every completion of an image: same MOS
    assert shuffled.texts == plain_run.texts  # same completions: only what the reward knows changes

    again = _rollout(plain, batch, shuffle_mos=True, seed=1)
    other = _rollout(plain, batch, shuffle_mos=True, seed=2)
    assert torch.equal(again.terms["mos_seen"][:, 0], seen)
    assert not torch.equal(other.terms["mos_seen"][:, 0], seen)
