"""Does RL2R learn on the embedded default, and is the gain due to the reward?

Runs the `tiny_synthetic` experiment twice from the same warmed-up checkpoint: once as is, once
with the MOS shuffled inside every batch before the reward (`grpo.shuffle_mos=true`, the control:
same data, same number of updates, no information in the reward). Writes the validation curves
(PNG), a Markdown table of held-out test SRCC/PLCC before and after RL, and the raw numbers (JSON).

    python experiments/tiny_learning.py                       # ~2 x (warm-up cached + 5 min RL + eval)
    python experiments/tiny_learning.py --out experiments/results/tiny_learning extra.override=value
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from prresq import strict_json  # noqa: E402
from prresq.analysis import project_relative  # noqa: E402
from prresq.train import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"RL2R (fidelity + format)": "grpo.shuffle_mos=false", "control: shuffled MOS": "grpo.shuffle_mos=true"}


def compose_run(overrides: list[str], out_dir: Path) -> object:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.cache_dir = str(ROOT / ".cache")
        cfg.paths.data_dir = str(ROOT / ".cache" / "data")
        cfg.paths.output_dir = str(out_dir)
    return cfg


def val_curve(run_dir: Path) -> pd.DataFrame:
    frames = [pd.read_csv(f) for f in sorted((run_dir / "csv").glob("version_*/metrics.csv"))]
    df = pd.concat(frames)
    cols = [c for c in ("val/srcc", "val/srcc_greedy", "val/plcc") if c in df]
    return df.dropna(subset=["val/srcc"])[["step", *cols]].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "tiny_learning"))
    parser.add_argument("--replot", action="store_true", help="redraw the figure and table from results.json")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        report(json.loads((out / "results.json").read_text()), out)
        return
    results: dict[str, dict] = {}
    for label, override in RUNS.items():
        run_dir = out / override.split("=")[-1].replace("false", "rl2r").replace("true", "control")
        cfg = compose_run(["experiment=tiny_synthetic", override, *args.overrides], run_dir)
        metrics = run(cfg)
        if "export_dir" in metrics:
            metrics["export_dir"] = project_relative(metrics["export_dir"], ROOT)
        results[label] = {"test": metrics, "val_curve": val_curve(run_dir).to_dict("list")}
    (out / "results.json").write_text(strict_json.dumps(results))  # a NaN metric -> null
    report(results, out)


def _number(value: float | None) -> float:
    """A metric of `results.json` (`null`: NaN, e.g. the SRCC of constant answers, or absent) as a float."""
    return float("nan") if value is None else float(value)


def report(results: dict[str, dict], out: Path) -> None:
    """Curves (PNG) and the held-out table (Markdown) from `results.json`'s content."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, res in results.items():
        curve = pd.DataFrame(res["val_curve"])
        start = res["test"].get("warmup_final_val", {})  # validation scores at the end of the warm-up
        for ax, col, base in ((axes[0], "val/srcc", "srcc_mean"), (axes[1], "val/srcc_greedy", "srcc_greedy")):
            if col in curve:
                steps = [0, *(curve["step"] + 1).tolist()]
                ax.plot(steps, [_number(start.get(base)), *curve[col].tolist()], marker="o", label=label)
    axes[0].set_title("validation SRCC, mean of 8 samples")
    axes[1].set_title("validation SRCC, greedy")
    for ax in axes:
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SRCC")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)

    keys = ["srcc_mean", "plcc_mean", "srcc_greedy", "plcc_greedy"]
    lines = ["| run | when | " + " | ".join(keys) + " |", "|---|---" + "|---" * len(keys) + "|"]
    for label, res in results.items():
        for when in ("before", "after"):
            row = res["test"].get(when, {})
            lines.append(f"| {label} | {when} RL | " + " | ".join(f"{_number(row.get(k)):.3f}" for k in keys) + " |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
