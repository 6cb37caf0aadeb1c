"""Held-out scoring around RL: the test split scored before and after training, and the report.

`evaluate` scores a `GRPOModule`'s policy on a loader (`prresq.scoring`) and writes the per-image
predictions; `report` writes `heldout_metrics.json` and prints the before/after table
(`heldout_metrics.md`), the table the README's learning figures come from.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L

from prresq.metrics import DegenerateInputWarning, prediction_hint
from prresq.module import GRPOModule
from prresq.scoring import ScoringConfig, correlations, score_loader


def evaluate(
    module: GRPOModule,
    loader: Any,
    scoring: ScoringConfig,
    desc: str,
    save_dir: Path | None = None,
    seed: int | None = None,
) -> dict[str, float]:
    """Held-out correlations; with `save_dir`, also `predictions_test.csv` + `results.csv` (CONTRACTS.md).

    With `seed`, the generators are seeded first, as `prresq.eval` seeds them before a benchmark, so
    `python -m prresq.eval checkpoint=RUN/export` (the run record's prompt, scoring, batch size and seed)
    reproduces these numbers.

    The policy is scored in eval mode and handed back in the mode it came in: Lightning keeps the modes it
    finds at the start of fit, so a policy left in eval mode would train without dropout and without
    gradient checkpointing (transformers checkpoints only in train mode).
    """
    was_training = module.policy.training
    module.policy.eval()
    if seed is not None:
        L.seed_everything(seed, workers=True, verbose=False)
    try:
        scored = score_loader(module.policy, module.processor, loader, scoring, progress=desc)
    finally:
        module.policy.train(was_training)
    hint = prediction_hint(scored["pred"], desc) if scored.get("pred") is not None else None
    if hint is None and scored.get("greedy") is not None:
        hint = prediction_hint(scored["greedy"], f"{desc}, greedy")
    with warnings.catch_warnings():
        if hint:  # one line per cause: the hint, not also a NaN-correlation warning per metric
            warnings.simplefilter("ignore", DegenerateInputWarning)
        metrics = correlations(scored)
    if hint:
        print(hint, flush=True)
    if save_dir is not None:
        import pandas as pd

        save_dir.mkdir(parents=True, exist_ok=True)
        cols = {
            k: scored[k].double().numpy() for k in ("mos", "pred", "greedy", "sample_mean") if scored[k] is not None
        }
        pd.DataFrame({"id": scored["ids"], "media": scored["media"], **cols, "text": scored["texts"]}).to_csv(
            save_dir / "predictions_test.csv", index=False
        )
        pd.DataFrame([{"benchmark": "test", "n": len(scored["ids"] or []), **metrics}]).to_csv(
            save_dir / "results.csv", index=False
        )
    return metrics


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinite float (in nested dicts and lists) replaced by None (JSON `null`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def report(results: dict[str, Any], out_dir: Path) -> None:
    """`heldout_metrics.json` (all results; strict JSON: a NaN or infinite metric is `null`) and, with both
    scores, the before/after table: printed and written to `heldout_metrics.md`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "heldout_metrics.json").write_text(json.dumps(finite_or_null(results), indent=2, allow_nan=False))
    if "before" in results and "after" in results:
        table = heldout_table(results)
        print(table, flush=True)
        (out_dir / "heldout_metrics.md").write_text(table + "\n")


def heldout_table(results: dict[str, Any], whens: tuple[str, ...] = ("before", "after")) -> str:
    """The held-out SRCC/PLCC table (Markdown), one row per entry of `whens` found in `results`."""
    rows = [w for w in whens if w in results]
    keys = [k for k in results[rows[-1]] if k.startswith(("srcc", "plcc"))]
    lines = ["| held-out test | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for when in rows:
        lines.append(f"| {when} RL | " + " | ".join(f"{results[when].get(k, float('nan')):.3f}" for k in keys) + " |")
    return "\n".join(lines)
