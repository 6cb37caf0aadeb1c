"""One benchmark scored by a model: its items as collator records, the seeded scoring pass, the predictions
frame (`predictions_<benchmark>.csv` of `python -m prresq.eval`, columns in prresq/eval.py's docstring)."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from prresq.data.benchmarks import Benchmark
from prresq.data.collate import PromptCollator
from prresq.data.dataflow import Flow
from prresq.data.records import Record
from prresq.eval_progress import BenchmarkProgress, SettingsMismatch, rows_of
from prresq.eval_ranks import Ranks, work_units
from prresq.models import prompt_token_limit
from prresq.scoring import ScoringConfig, score_loader

PREDICTION_COLUMNS = ["id", "media", "mos", "pred", "n_parsed", "text"]
EXTRA_COLUMNS = ["mos_raw", "greedy", "sample_mean", "expected", "expected_mass", "status"]
SINGLE_PROCESS = Ranks()
LOGISTIC_MIN_PAIRS = 4  # parameters of the logistic; with fewer pairs plcc_logistic is NaN


def benchmark_records(bench: Benchmark) -> list[Record]:
    """Benchmark items as collator records; `mos_mapped` is the MOS mapped to [1, 5]."""
    mapped = bench.mapped_mos()
    return [
        Record(
            id=it.id,
            dataset=bench.name,
            media=Path(it.media),
            mos=float(it.mos),
            mos_mapped=float(m),
            extra={"media_type": "video" if bench.task == "vqa" else "image"},
            source=str(it.media),
        )
        for it, m in zip(bench.items, mapped)
    ]


def _values(scored: dict[str, Any], key: str, n: int) -> np.ndarray:
    value = scored.get(key)
    if value is None:
        return np.full(n, np.nan)
    return value.double().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float64)


def predictions_frame(records: Sequence[Record], scored: dict[str, Any], skipped: Sequence[str] = ()) -> pd.DataFrame:
    """One row per record, aligned by order; records the collator skipped get NaN and their reason."""
    ids = scored.get("ids") or []
    n = len(ids)
    cols = {k: _values(scored, k, n) for k in ("pred", "greedy", "sample_mean", "expected", "expected_mass")}
    n_parsed = _values(scored, "n_parsed", n)
    texts = scored.get("texts") or [""] * n
    rows, j = [], 0
    for rec in records:
        row: dict[str, Any] = {"id": rec.id, "media": str(rec.media), "mos": rec.mos_mapped}
        if j < n and ids[j] == rec.id:
            status = "ok" if math.isfinite(cols["pred"][j]) else "no_answer"  # unreadable by scoring.answer_rule
            row.update({k: v[j] for k, v in cols.items()}, n_parsed=n_parsed[j], text=texts[j], status=status)
            j += 1
        else:
            reason = next((s for s in skipped if s.startswith(f"{rec.source}:")), "unreadable")
            row.update({k: math.nan for k in cols}, n_parsed=0, text="", status=f"error: {reason}")
        row["mos_raw"] = rec.mos
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*PREDICTION_COLUMNS, *EXTRA_COLUMNS])
    df["n_parsed"] = df["n_parsed"].fillna(0).astype(int)
    return df


def rejected_frame(bench: Benchmark) -> pd.DataFrame:
    """Label rows the adapter left out (`on_bad_sample=skip`: media missing, MOS not a number or out
    of range), as prediction rows with no prediction and status `skipped: <reason>`; they count in
    `n_failed`."""
    lo, hi = bench.mos_range
    rows = [
        {
            "id": r.id,
            "media": str(r.media),
            "mos": 1.0 + (r.mos - lo) * 4.0 / (hi - lo) if math.isfinite(r.mos) and hi > lo else math.nan,
            "pred": math.nan,
            "n_parsed": 0,
            "text": "",
            "mos_raw": r.mos,
            "status": f"skipped: {r.reason}",
        }
        for r in bench.rejected
    ]
    return pd.DataFrame(rows, columns=[*PREDICTION_COLUMNS, *EXTRA_COLUMNS])


def logistic_fittable(pred: np.ndarray, mos: np.ndarray) -> bool:
    """Enough valid pairs for the 4-parameter logistic (scipy's curve_fit raises below 4 points)."""
    return int((np.isfinite(pred) & np.isfinite(mos)).sum()) >= LOGISTIC_MIN_PAIRS


def evaluate_benchmark(
    name: str,
    bench: Benchmark,
    model: nn.Module | None,
    processor: Any,
    flow: Flow,
    prompt: str,
    scoring: ScoringConfig,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    on_bad_sample: str = "raise",
    progress: BenchmarkProgress | None = None,
    ranks: Ranks = SINGLE_PROCESS,
) -> pd.DataFrame | None:
    """Score one benchmark -> its predictions frame (file order) on rank 0, None on the other ranks.

    The items are cut into work units of `batch_size` (`prresq.eval_ranks`) dealt to the ranks round-robin
    (each sampled answer seeded by its item: `prresq.row_sampling`); units already in `progress` are not scored again, and each unit
    scored is appended to it. A failure on any rank stops every rank with the same message.
    """
    from torch.utils.data import DataLoader

    records = benchmark_records(bench)
    units = work_units(len(records), batch_size)
    done: dict[int, dict[str, Any]] = {}  # rank 0: the batches on disk; the other ranks only learn their numbers

    def read_done() -> list[int]:
        done.update(_checked_done(progress, units, records))
        return sorted(done)

    done_units = set(ranks.run_on_main(read_done, f"benchmark {name} (resume)"))
    todo = [u for u in range(len(units)) if u not in done_units]
    mine = todo[ranks.rank :: ranks.world]
    if ranks.is_main and done_units:
        print(f"{name}: resuming, {len(done_units)} of {len(units)} batches already scored", flush=True)
    batches: Iterator[Any] = iter(())
    collator: PromptCollator | None = None
    if mine:
        if model is None:
            raise ValueError(f"benchmark {name}: {len(mine)} batches to score and no model")
        limit = prompt_token_limit(model, scoring.max_new_tokens)  # a longer prompt is a bad item, not a stall
        collator = PromptCollator(
            processor,
            prompt,
            flow,  # type: ignore[arg-type]
            seed=seed,
            on_bad_sample=on_bad_sample,  # type: ignore[arg-type]
            max_prompt_tokens=limit,
        )
        loader = DataLoader(
            records,
            batch_sampler=[list(units[u]) for u in mine],
            num_workers=num_workers,
            collate_fn=collator,
        )
        batches = iter(loader)
    scored_units: dict[int, list[dict[str, Any]]] = {}
    steps = -(-len(todo) // ranks.world)
    bar = tqdm(total=len(mine), desc=f"{name} ({len(records)} items)", disable=not ranks.is_main, leave=False)
    started, cpu_started = time.perf_counter(), time.process_time()
    for step in range(steps):
        error: BaseException | None = None
        if step < len(mine):
            unit = mine[step]
            try:
                unit_records = [records[i] for i in units[unit]]
                ids = [r.id for r in unit_records]
                batch = next(batches)
                assert collator is not None and model is not None
                scored = score_loader(model, processor, [] if batch is None else [batch], scoring, seed=seed)
                rows = rows_of(predictions_frame(unit_records, scored, collator.skipped))
                if progress is not None:
                    progress.append(ranks.rank, unit, ids, rows)
                scored_units[unit] = rows
                _stop_for_test(len(scored_units))
            except Exception as exc:  # noqa: BLE001 - every rank raises it (Ranks.agree)
                error = exc
            bar.update(1)
        ranks.agree(error, f"benchmark {name}")
    bar.close()
    parts = ranks.gather((scored_units, time.process_time() - cpu_started))
    if parts is None:
        return None
    gathered = [part for part, _ in parts]
    n_new = sum(len(units[u]) for part in gathered for u in part)
    if n_new:
        seconds, cpu = time.perf_counter() - started, sum(c for _, c in parts)
        print(
            f"{name}: scored {n_new} items in {seconds:.2f} s on {ranks.world} process(es): "
            f"{n_new / seconds:.2f} items/s; CPU {cpu:.2f} s over all ranks: {n_new / cpu:.2f} items per CPU-second",
            flush=True,
        )
    by_unit = {u: entry["rows"] for u, entry in done.items()}
    for part in gathered:
        by_unit.update(part)
    missing = [u for u in range(len(units)) if u not in by_unit]
    if missing:  # pragma: no cover - every unit is dealt to one rank
        raise RuntimeError(f"benchmark {name}: batches {missing} were scored by no rank")
    rows = [row for u in range(len(units)) for row in by_unit[u]]
    df = pd.DataFrame(rows, columns=[*PREDICTION_COLUMNS, *EXTRA_COLUMNS])
    df["n_parsed"] = df["n_parsed"].fillna(0).astype(int)
    if bench.rejected:
        df = pd.concat([df, rejected_frame(bench)], ignore_index=True)
    return df


def _checked_done(
    progress: BenchmarkProgress | None, units: Sequence[range], records: Sequence[Record]
) -> dict[int, dict[str, Any]]:
    """Units already scored, each checked against the items it holds now (labels changed: an error)."""
    if progress is None:
        return {}
    done = progress.done()
    for unit, entry in sorted(done.items()):
        now = [records[i].id for i in units[unit]] if unit < len(units) else []
        if list(entry["ids"]) != now:
            raise SettingsMismatch(
                f"{progress.folder}: batch {unit} was scored for items {entry['ids'][:4]}... but holds "
                f"{now[:4]}... now (the label file or its rows changed); evaluate into another folder or "
                f"remove that one"
            )
    return done


def _stop_for_test(units_scored: int) -> None:
    """Test hook: PRRESQ_EVAL_KILL_AFTER=N kills this process (SIGKILL) after its N-th scored batch."""
    after = os.environ.get("PRRESQ_EVAL_KILL_AFTER")
    if after and units_scored >= int(after):
        os.kill(os.getpid(), signal.SIGKILL)
