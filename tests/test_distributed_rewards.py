"""Reward scope under DDP (2 gloo processes): ``global`` ranks the whole step, ``local`` each process's batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import compose_config
from omegaconf import OmegaConf

from prresq.rewards import build_reward_mix, compute_rewards, group_advantages

MIX = {"fidelity": {"weight": 1.0, "variant": "mean"}, "format": {"weight": 0.5}}
PAPER_RECIPES = ("vq_r1_kadid", "preresq_iqa_kadid", "preresq_vqa_lsvq")


def _reward_node(overrides: list[str]) -> dict:
    cfg = compose_config("train", overrides)
    return OmegaConf.to_container(cfg.reward, resolve=True)


def _global_batch():
    g = torch.Generator().manual_seed(0)
    b, k = 8, 4
    scores = 1 + 4 * torch.rand(b, k, generator=g)
    scores[1, 2] = float("nan")  # an unparseable answer
    mos = 1 + 4 * torch.rand(b, generator=g)
    dataset_ids = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])  # both datasets on both processes
    texts = [
        f"<think>x</think><answer>{s:.2f}</answer>" if n % 3 else "no tags"
        for n, s in enumerate(scores.flatten().tolist())
    ]
    return texts, scores, scores.unsqueeze(-1), mos, dataset_ids


def _worker(rank: int, world: int, port: int, out: str, mixes: dict[str, dict]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    texts, scores, aspects, mos, ids = _global_batch()
    b = scores.shape[0] // world
    k = scores.shape[1]
    rows = slice(rank * b, (rank + 1) * b)
    saved = {}
    for scope, mix in mixes.items():
        total, terms = compute_rewards(
            build_reward_mix(mix),
            texts[rows.start * k : rows.stop * k],
            scores[rows],
            aspects[rows],
            mos[rows],
            ids[rows],
        )
        saved[scope] = {"total": total, "adv": group_advantages(total), "fidelity": terms["fidelity"]}
    torch.save(saved, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_rewards_follow_the_scope(tmp_path):
    """Pins item 7: under a real 2-process gloo group, ``reward.scope=global`` gives each process its rows
    of the single-process ranking of all 8 images, and ``reward.scope=local`` (composed from the Hydra
    config, as the training module receives it) gives each process the ranking of its own 4 images only,
    as the released code does per device."""
    mixes = {scope: {**_reward_node([f"reward.scope={scope}"]), **MIX} for scope in ("local", "global")}
    assert {scope: mix["scope"] for scope, mix in mixes.items()} == {"local": "local", "global": "global"}
    texts, scores, aspects, mos, ids = _global_batch()
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), mixes), nprocs=2, start_method="spawn")
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    whole, whole_terms = compute_rewards(build_reward_mix(mixes["global"]), texts, scores, aspects, mos, ids)
    whole_adv = group_advantages(whole)
    for key, expected in (("total", whole), ("adv", whole_adv), ("fidelity", whole_terms["fidelity"])):
        torch.testing.assert_close(torch.cat([p["global"][key] for p in parts]), expected)

    for rank, part in enumerate(parts):
        rows = slice(4 * rank, 4 * rank + 4)
        own, own_terms = compute_rewards(
            build_reward_mix(mixes["local"]),
            texts[16 * rank : 16 * rank + 16],
            scores[rows],
            aspects[rows],
            mos[rows],
            ids[rows],
        )
        torch.testing.assert_close(part["local"]["total"], own)
        torch.testing.assert_close(part["local"]["adv"], group_advantages(own))
        torch.testing.assert_close(part["local"]["fidelity"], own_terms["fidelity"])
        # The two scopes differ here: 1 partner of the same dataset per image locally, 3 globally.
        assert not torch.allclose(part["local"]["fidelity"], part["global"]["fidelity"])


@pytest.mark.parametrize("recipe", PAPER_RECIPES)
def test_paper_recipes_rank_per_device(recipe):
    """Pins item 7's default: each paper recipe composes to ``reward.scope=local`` (the released per-device
    ranking), and the mix the module builds from that node carries it."""
    node = _reward_node([f"experiment={recipe}"])
    assert node["scope"] == "local"
    assert build_reward_mix(node).scope == "local"


def test_unknown_scope_is_a_clear_error():
    """Pins: a mistyped ``reward.scope`` names the key and the allowed values instead of silently gathering."""
    with pytest.raises(ValueError, match=r"reward\.scope must be one of \('local', 'global'\), got 'device'"):
        build_reward_mix({**MIX, "scope": "device"})
