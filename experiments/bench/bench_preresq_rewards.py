"""Benchmark: vectorised PreResQ-R1 reward terms vs the Python-loop reference.

Times every term of :mod:`prresq.rewards.preresq` and the combined :func:`preresq_reward` against
the loop reference ``tests/preresq_reference.py`` (the tests' oracle) on random IQA batches (D = 5
aspects, two-decimal values like the model writes, so ties and exact-tolerance gaps occur), checks
that the values agree within 1e-6, and prints a Markdown table. CPU, one thread. The loop reference
is timed on a single call (it takes seconds at B = 64, K = 12); the vectorised one on the median of
repeated calls.

Run: ``.venv/bin/python experiments/bench/bench_preresq_rewards.py [--device cuda]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from prresq.rewards import preresq as vec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the loop reference lives with the tests
import preresq_reference as ref  # noqa: E402

BATCHES = (8, 32, 64)
SAMPLES = (6, 8, 12)
ASPECTS = 5
ATOL = 1e-6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_vectorised(fn: Callable[[], torch.Tensor], device: torch.device, budget_s: float = 0.2) -> float:
    """Median seconds per call over repeated calls (at least 5, about ``budget_s`` in all)."""
    fn()  # warm-up
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget_s and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_once(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _case(B: int, K: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    aspects = (1 + 4 * torch.rand(B, K, ASPECTS, generator=g)).round(decimals=2)
    mos = 1 + 4 * torch.rand(B, generator=g)
    return aspects, mos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device of the vectorised terms (the reference is CPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)

    rows = []
    for B in BATCHES:
        for K in SAMPLES:
            aspects, mos = _case(B, K, seed=B * 100 + K)
            q = aspects.mean(-1)
            preds, g = q.tolist(), mos.tolist()
            a_d, q_d, m_d = aspects.to(device), q.to(device), mos.to(device)
            terms: dict[str, tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]] = {
                "response_penalty": (
                    partial(vec.response_penalty, a_d),
                    partial(ref.response_penalty_ref, aspects),
                ),
                "response_balance": (
                    partial(vec.triplet_response_balance, a_d),
                    partial(ref.triplet_response_balance_ref, aspects),
                ),
                "pairwise_score_rank": (
                    partial(vec.pairwise_score_rank, q_d, m_d),
                    partial(ref.pairwise_score_rank_ref, preds, g),
                ),
                "triplet_rank": (partial(vec.triplet_rank, q_d, m_d), partial(ref.triplet_rank_ref, preds, g)),
                "rank": (partial(vec.rank_reward, q_d, m_d), partial(ref.rank_reward_ref, preds, g)),
                "preresq_reward": (
                    partial(vec.preresq_reward, a_d, m_d, "iqa"),
                    partial(ref.preresq_reward_ref, aspects, mos, "iqa"),
                ),
            }
            for name, (fast, slow) in terms.items():
                loop_s, expected = _time_once(slow)
                vec_s = _time_vectorised(fast, device)
                diff = (fast().cpu() - expected).abs().max().item()
                if diff > ATOL:
                    raise AssertionError(f"{name} B={B} K={K}: max abs diff {diff:.2e} > {ATOL}")
                rows.append((B, K, name, loop_s * 1e3, vec_s * 1e3, loop_s / vec_s, diff))

    print(f"Device: {device} (vectorised), cpu (loop), torch threads: {torch.get_num_threads()}, D = {ASPECTS}\n")
    print("| B | K | term | loop ms | vectorised ms | speed-up | max abs diff |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for B, K, name, loop_ms, vec_ms, speedup, diff in rows:
        print(f"| {B} | {K} | {name} | {loop_ms:.2f} | {vec_ms:.3f} | {speedup:.0f}x | {diff:.1e} |")
    combined = [r for r in rows if r[2] == "preresq_reward"]
    print(
        f"\npreresq_reward speed-up: min {min(r[5] for r in combined):.0f}x, "
        f"max {max(r[5] for r in combined):.0f}x; all terms within {ATOL:g} of the reference."
    )


if __name__ == "__main__":
    main()
