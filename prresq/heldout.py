"""Held-out scoring around RL: the test split scored before and after training, and the report.

`evaluate` scores a `GRPOModule`'s policy on a loader (`prresq.scoring`) and writes the per-image
predictions; `rl_extent` says how far RL went (steps, and whether `trainer.max_time` cut it); `report`
writes `heldout_metrics.json` and prints the before/after table (`heldout_metrics.md`), the table the
README's learning figures come from, with the RL steps behind the "after" row.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer

from prresq import strict_json
from prresq.metrics import DegenerateInputWarning, prediction_hint
from prresq.module import GRPOModule
from prresq.row_sampling import global_rng_kept
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

    With `seed`, each sampled answer draws from its own generator seeded by the seed, its item id and its
    index, as in `prresq.eval` (`prresq.row_sampling`), so `python -m prresq.eval checkpoint=RUN/export`
    (the run record's prompt, scoring and seed) reproduces these numbers. The global random states (torch,
    NumPy, Python) are put back afterwards (`global_rng_kept`): scoring the test split before RL does not
    change the stream RL draws from, so RL's trajectory is the same with and without `eval_before_after`.

    The policy is scored in eval mode and handed back in the mode it came in: Lightning keeps the modes it
    finds at the start of fit, so a policy left in eval mode would train without dropout and without
    gradient checkpointing (transformers checkpoints only in train mode).
    """
    was_training = module.policy.training
    module.policy.eval()
    try:
        with global_rng_kept():
            if seed is not None:  # the loader's worker seeds: the same before and after RL
                L.seed_everything(seed, workers=True, verbose=False)
            scored = score_loader(module.policy, module.processor, loader, scoring, progress=desc, seed=seed)
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


def rl_extent(trainer: L.Trainer) -> dict[str, Any]:
    """RL steps run (rollout batches, `trainer.global_step`), `trainer.max_steps`, and whether the
    `trainer.max_time` safety cap stopped RL before `max_steps`: a cut run's table is not the step count's."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    steps, max_steps = int(trainer.global_step), int(trainer.max_steps)
    short = max_steps < 0 or steps < max_steps
    return {
        "steps": steps,
        "max_steps": max_steps,
        "cut_by_max_time": bool(short and remaining is not None and remaining <= 0),
    }


def _extent_cell(extent: dict[str, Any]) -> str:
    cell = f"{extent['steps']} of {extent['max_steps']}" if extent["max_steps"] >= 0 else str(extent["steps"])
    return cell + (" (cut by trainer.max_time)" if extent["cut_by_max_time"] else "")


def report(results: dict[str, Any], out_dir: Path) -> None:
    """`heldout_metrics.json` (all results; strict JSON: a NaN or infinite metric is `null`) and, with both
    scores, the before/after table: printed and written to `heldout_metrics.md`. With `results["rl"]`
    (`rl_extent`), the table's last column gives the RL steps the "after" row was measured at, and says when
    `trainer.max_time` cut RL short of `max_steps`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "heldout_metrics.json").write_text(strict_json.dumps(results))
    if "before" in results and "after" in results:
        table = heldout_table(results)
        print(table, flush=True)
        (out_dir / "heldout_metrics.md").write_text(table + "\n")


def heldout_table(results: dict[str, Any], whens: tuple[str, ...] = ("before", "after")) -> str:
    """The held-out SRCC/PLCC table (Markdown), one row per entry of `whens` found in `results`; with
    `results["rl"]` (`rl_extent`) a last column gives the RL steps each row was measured at."""
    rows = [w for w in whens if w in results]
    keys = [k for k in results[rows[-1]] if k.startswith(("srcc", "plcc"))]
    extent = results.get("rl")
    steps = {"before": "0", "after": _extent_cell(extent)} if extent else {}
    header = ["held-out test", *keys, *(["RL steps"] if steps else [])]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for when in rows:
        cells = [f"{when} RL", *(f"{results[when].get(k, float('nan')):.3f}" for k in keys)]
        lines.append("| " + " | ".join([*cells, *([steps[when]] if steps else [])]) + " |")
    return "\n".join(lines)
