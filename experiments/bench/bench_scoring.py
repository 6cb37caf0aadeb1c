"""Benchmark: `prresq.eval` N-sample scoring, plain path vs shared prefix (`scoring.shared_prefix`).

What `python -m prresq.eval scoring.mode=both scoring.n=8` does for the synthetic IQA test split
(tiny model, the eval config's defaults otherwise: batch 8, 256 new tokens, seed 42), timed per
benchmark pass: `prresq.eval.evaluate_benchmark` (collation + greedy answer + N sampled answers +
parsing), once with `scoring.shared_prefix=false` (the plain path: every prompt prefilled N times) and
once with `true` (one prefill per image, N continuations on top; `prresq.prefix`).

The two configurations run in the same process, one after the other, in alternating order over the
repeats (plain, shared, shared, plain, ...), after one untimed warm-up pass each, with
`torch.set_num_threads(1)`. Reported per configuration: median and minimum wall time of a pass,
median CPU time, images/s (items / median wall time), and whether the two paths' predictions
(greedy, sample mean, n_parsed, text) were identical; then the speed-up (plain / shared median).

    PYTHONPATH=$PWD python experiments/bench/bench_scoring.py                        # 3 repeats, full test split
    PYTHONPATH=$PWD python experiments/bench/bench_scoring.py --repeats 2 limit=16   # extra Hydra overrides for eval
    PYTHONPATH=$PWD python experiments/bench/bench_scoring.py scoring.max_new_tokens=64 --out DIR

Writes `results.json` and `results.md` to `--out` (default `experiments/results/bench_scoring/`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
BASE_OVERRIDES = ["scoring.mode=both", "scoring.n=8"]
MODES = {"plain": False, "shared_two_pass": True, "shared": True}  # scoring.shared_prefix of each path
COMPARED = ("greedy", "sample_mean", "n_parsed", "text")


def compose_eval(overrides: list[str]) -> Any:
    """The `prresq.eval` config with the overrides; paths under the repository's `.cache` (as a CLI run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import prresq  # noqa: F401  registers the typed grpo/scoring groups (prresq.config) before Hydra composes

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=[*BASE_OVERRIDES, *overrides])
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.cache_dir = str(ROOT / ".cache")
        cfg.paths.data_dir = str(ROOT / ".cache" / "data")
        cfg.paths.output_dir = str(ROOT / ".cache" / "bench_scoring")
    return cfg


def same_predictions(a: Any, b: Any) -> bool:
    """Two predictions frames agree on every compared column (NaN equal to NaN)."""
    for col in COMPARED:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            if not np.array_equal(x.astype(float), y.astype(float), equal_nan=True):
                return False
        elif not (x == y).all():
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_scoring"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides of the eval config")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import lightning as L

    from prresq.config import to_plain
    from prresq.data.benchmarks import load_benchmark_config
    from prresq.data.collate import prompt_of
    from prresq.data.dataflow import build_flows
    from prresq.eval import evaluate_benchmark, prepare_synthetic
    from prresq.models import load_scoring_model
    from prresq.scoring import ScoringConfig

    cfg = compose_eval(args.overrides)
    sc = cfg.scoring
    scoring = ScoringConfig.from_mapping(to_plain(sc), num_aspects=int(cfg.prompt.num_aspects))
    seed = int(sc.get("seed", cfg.get("seed", 0)))
    L.seed_everything(seed, workers=True, verbose=False)
    model, processor = load_scoring_model(
        to_plain(cfg.model), None, None, sc.get("min_pixels"), sc.get("max_pixels"), cfg.get("device", "auto")
    )
    flows = build_flows(to_plain(cfg.dataflow), to_plain(cfg.get("video_dataflow")))
    prompt = prompt_of(to_plain(cfg.prompt))
    bcfg = to_plain(cfg.benchmark)["synthetic_iqa"]
    prepare_synthetic("synthetic_iqa", bcfg)
    options = {"limit": int(cfg.limit)} if cfg.get("limit") else {}
    bench = load_benchmark_config(bcfg, **options)
    configs = {name: dataclasses.replace(scoring, shared_prefix=flag) for name, flag in MODES.items()}

    import prresq.scoring as scoring_module
    from prresq.prefix import generate_completions_shared
    from prresq.rollout import generate_completions

    one_prefill = scoring_module.generate_greedy_and_samples

    def two_pass(model: Any, inputs: Any, n: int, tokens: Any, sampling: Any, generators: Any = None) -> Any:
        """`scoring.mode=both` before prresq.one_prefill: a greedy pass, then the N samples (two prefills)."""
        greedy = generate_completions(model, inputs, 1, tokens, sampling, do_sample=False)
        return greedy, generate_completions_shared(model, inputs, n, tokens, sampling, generators=generators)

    def one_pass(name: str) -> tuple[float, float, Any]:
        scoring_module.generate_greedy_and_samples = two_pass if name == "shared_two_pass" else one_prefill
        t0, c0 = time.perf_counter(), time.process_time()
        df = evaluate_benchmark(
            "synthetic_iqa", bench, model, processor, flows[bench.task], prompt, configs[name],
            batch_size=int(sc.get("batch_size", 8)), seed=seed, num_workers=int(cfg.get("num_workers", 0)),
        )  # fmt: skip
        return time.perf_counter() - t0, time.process_time() - c0, df

    frames = {name: one_pass(name)[2] for name in MODES}  # warm-up, untimed
    wall: dict[str, list[float]] = {name: [] for name in MODES}
    cpu: dict[str, list[float]] = {name: [] for name in MODES}
    identical = same_predictions(frames["plain"], frames["shared"]) and same_predictions(
        frames["shared_two_pass"], frames["shared"]
    )
    for r in range(args.repeats):
        for name in list(MODES)[:: 1 if r % 2 == 0 else -1]:
            w, c, df = one_pass(name)
            wall[name].append(w)
            cpu[name].append(c)
            identical &= same_predictions(df, frames[name])
            print(f"repeat {r} {name}: {w:.2f} s wall, {c:.2f} s CPU", flush=True)

    n_items = len(bench.items)
    rows = {
        name: {
            "median_s": statistics.median(wall[name]),
            "min_s": min(wall[name]),
            "median_cpu_s": statistics.median(cpu[name]),
            "images_per_s": n_items / statistics.median(wall[name]),
            "wall_s": wall[name],
            "cpu_s": cpu[name],
        }
        for name in MODES
    }
    result = {
        "command": "python experiments/bench/bench_scoring.py "
        + " ".join([f"--repeats {args.repeats}", f"--out {args.out}", *args.overrides]),
        "eval_overrides": [*BASE_OVERRIDES, *args.overrides],
        "items": n_items,
        "batch_size": int(sc.get("batch_size", 8)),
        "scoring": dataclasses.asdict(scoring),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "predictions_identical": bool(identical),
        "speedup_median": rows["plain"]["median_s"] / rows["shared"]["median_s"],
        "speedup_cpu": rows["plain"]["median_cpu_s"] / rows["shared"]["median_cpu_s"],
        "speedup_one_prefill": rows["shared_two_pass"]["median_s"] / rows["shared"]["median_s"],
        "results": rows,
        "host": f"{platform.machine()}, {torch.__version__}",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Scoring benchmark: `prresq.eval` {' '.join(result['eval_overrides'])}, synthetic IQA test split",
        "",
        f"{n_items} items, batch {result['batch_size']}, max_new_tokens {scoring.max_new_tokens}, "
        f"{args.repeats} interleaved repeats after a warm-up, 1 thread; predictions identical: {identical}.",
        "",
        "| path | median s / pass | min s | median CPU s | images/s |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {v['median_s']:.2f} | {v['min_s']:.2f} | {v['median_cpu_s']:.2f} | {v['images_per_s']:.2f} |"
            for name, v in rows.items()
        ),
        "",
        f"Speed-up (plain / shared): {result['speedup_median']:.2f}x wall, {result['speedup_cpu']:.2f}x CPU; "
        f"one prefill for greedy and samples (shared_two_pass / shared): {result['speedup_one_prefill']:.2f}x wall.",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
