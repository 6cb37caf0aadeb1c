"""Under DDP the rewards see the whole global batch: 2 gloo processes == 1 process on the same batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from prresq.rewards import build_reward_mix, compute_rewards

MIX = {"fidelity": {"weight": 1.0, "variant": "mean"}, "format": {"weight": 0.5}}


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


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    texts, scores, aspects, mos, ids = _global_batch()
    b = scores.shape[0] // world
    k = scores.shape[1]
    rows = slice(rank * b, (rank + 1) * b)
    total, terms, adv = compute_rewards(
        build_reward_mix(MIX), texts[rows.start * k : rows.stop * k], scores[rows], aspects[rows], mos[rows], ids[rows]
    )
    torch.save({"total": total, "adv": adv, "fidelity": terms["fidelity"]}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_rewards_equal_single_process(tmp_path):
    texts, scores, aspects, mos, ids = _global_batch()
    total, terms, adv = compute_rewards(build_reward_mix(MIX), texts, scores, aspects, mos, ids)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([p["total"] for p in parts]), total)
    torch.testing.assert_close(torch.cat([p["adv"] for p in parts]), adv)
    torch.testing.assert_close(torch.cat([p["fidelity"] for p in parts]), terms["fidelity"])
    # Not vacuous: ranking against the local half only (no gather) gives other rewards.
    half, _, _ = compute_rewards(build_reward_mix(MIX), texts[:16], scores[:4], aspects[:4], mos[:4], ids[:4])
    assert not torch.allclose(half, total[:4])
