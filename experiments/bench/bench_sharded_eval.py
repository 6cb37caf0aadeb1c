"""Benchmark: `prresq.eval` on 1 and on 2 processes (torchrun, gloo on CPU), items per second.

Runs, as a user would,

    python -m prresq.eval scoring.mode=both scoring.n=8 limit=32 plots=false hydra.run.dir=...
    torchrun --standalone --nproc_per_node=2 -m prresq.eval <the same overrides>

on the synthetic IQA test split with the tiny model (written to `.cache/` on first use), each process
with one thread (`OMP_NUM_THREADS=1`), into a fresh output folder each time, in alternating order over
the repeats after one untimed warm-up run of each. Reported: items/s of the scoring loop (the line
`prresq.eval` prints: from the first batch to the gathered predictions, without start-up and model
loading), items per CPU-second of that loop summed over the ranks (the work per item, whatever other
load the machine carries), the command's wall time, and whether the 1- and 2-process predictions files
are identical.

    PYTHONPATH=$PWD python experiments/bench/bench_sharded_eval.py                 # 3 repeats
    PYTHONPATH=$PWD python experiments/bench/bench_sharded_eval.py --repeats 1 limit=16

Writes `results.json` and `results.md` to `--out` (default `experiments/results/bench_sharded_eval/`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BASE_OVERRIDES = ["scoring.mode=both", "scoring.n=8", "limit=32", "plots=false"]
RATE = re.compile(
    r"scored (\d+) items in ([\d.]+) s on (\d+) process\(es\): ([\d.]+) items/s; CPU ([\d.]+) s over all ranks"
)


def command(processes: int, out: Path, overrides: list[str]) -> list[str]:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        if processes > 1
        else [sys.executable]
    )
    return [*launcher, "-m", "prresq.eval", f"hydra.run.dir={out}", *BASE_OVERRIDES, *overrides]


def one_run(processes: int, overrides: list[str], scratch: Path) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(dir=scratch))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(command(processes, out, overrides), cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    match = RATE.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no throughput line in the output:\n{done.stdout[-2000:]}")
    preds = next((out / "eval").glob("predictions_*.csv")).read_text()
    return {"items": int(match[1]), "scoring_s": float(match[2]), "items_per_s": float(match[4]), "wall_s": wall,
            "items_per_cpu_s": int(match[1]) / float(match[5]), "predictions": preds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per process count")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_sharded_eval"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides of the eval config")
    args = parser.parse_args()
    counts = (1, 2)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        first = {p: one_run(p, args.overrides, scratch) for p in counts}  # warm-up (caches), untimed
        identical = first[1]["predictions"] == first[2]["predictions"]
        runs: dict[int, list[dict[str, Any]]] = {p: [] for p in counts}
        for r in range(args.repeats):
            for p in counts[:: 1 if r % 2 == 0 else -1]:
                result = one_run(p, args.overrides, scratch)
                identical &= result["predictions"] == first[1]["predictions"]
                runs[p].append(result)
                print(
                    f"repeat {r}, {p} process(es): {result['items_per_s']:.2f} items/s, {result['wall_s']:.1f} s wall"
                )
    rows = {
        p: {
            "items": runs[p][0]["items"],
            "items_per_s_median": statistics.median(x["items_per_s"] for x in runs[p]),
            "items_per_s": [x["items_per_s"] for x in runs[p]],
            "wall_s_median": statistics.median(x["wall_s"] for x in runs[p]),
            "items_per_cpu_s_median": statistics.median(x["items_per_cpu_s"] for x in runs[p]),
        }
        for p in counts
    }
    speedup = rows[2]["items_per_s_median"] / rows[1]["items_per_s_median"]
    result = {
        "command": "python experiments/bench/bench_sharded_eval.py " + " ".join(sys.argv[1:]),
        "eval_overrides": [*BASE_OVERRIDES, *args.overrides],
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "identical_predictions": identical,
        "processes": rows,
        "speedup_2_vs_1": speedup,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| processes | items | items/s (median) | items per CPU-second (median) | command wall time (median) |",
        "|---|---|---|---|---|",
        *(
            f"| {p} | {rows[p]['items']} | {rows[p]['items_per_s_median']:.2f} | "
            f"{rows[p]['items_per_cpu_s_median']:.2f} | {rows[p]['wall_s_median']:.1f} s |"
            for p in counts
        ),
        "",
        f"2 vs 1 process: {speedup:.2f}x; predictions identical: {identical}",
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
