"""One benchmark scored by a model: its items as collator records, the seeded scoring pass, the predictions
frame (`predictions_<benchmark>.csv` of `python -m prresq.eval`, columns in prresq/eval.py's docstring)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn

from prresq.data.benchmarks import Benchmark
from prresq.data.collate import PromptCollator
from prresq.data.dataflow import Flow
from prresq.data.records import Record
from prresq.models import prompt_token_limit
from prresq.scoring import ScoringConfig, score_loader

PREDICTION_COLUMNS = ["id", "media", "mos", "pred", "n_parsed", "text"]
EXTRA_COLUMNS = ["mos_raw", "greedy", "sample_mean", "expected", "expected_mass", "status"]
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
    model: nn.Module,
    processor: Any,
    flow: Flow,
    prompt: str,
    scoring: ScoringConfig,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    on_bad_sample: str = "raise",
) -> pd.DataFrame:
    """Score one benchmark -> its predictions frame (seeded, file order)."""
    from torch.utils.data import DataLoader

    records = benchmark_records(bench)
    limit = prompt_token_limit(model, scoring.max_new_tokens)  # a longer prompt is a bad item, not a stalled batch
    collator = PromptCollator(
        processor,
        prompt,
        flow,  # type: ignore[arg-type]
        seed=seed,
        on_bad_sample=on_bad_sample,  # type: ignore[arg-type]
        max_prompt_tokens=limit,
    )
    loader = DataLoader(records, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collator)
    L.seed_everything(seed, workers=True, verbose=False)
    scored = score_loader(model, processor, loader, scoring, progress=f"{name} ({len(records)} items)")
    df = predictions_frame(records, scored, collator.skipped)
    if bench.rejected:
        df = pd.concat([df, rejected_frame(bench)], ignore_index=True)
    return df
