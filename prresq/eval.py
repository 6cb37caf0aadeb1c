"""Benchmark evaluation: `python -m prresq.eval [benchmark=[a,b]] [checkpoint=...] [overrides...]` (Hydra).

    python -m prresq.eval                                             # tiny model on the synthetic test split
    python -m prresq.eval model=qwen2_5_vl_7b benchmark=[kadid10k,spaq] scoring.mode=both scoring.n=8
    python -m prresq.eval checkpoint=outputs/train/RUN/checkpoints/last.ckpt model=qwen2_5_vl_7b
    python -m prresq.eval checkpoint=outputs/train/RUN/export benchmark=[konvid1k] \
        dataflow@video_dataflow=video_native scoring.mode=expected

For each selected benchmark (`conf/benchmark/*.yaml`): the items are read by the benchmark's
adapter (`prresq.data.benchmarks`), batched by the project's collator (`PromptCollator`) with the
configured flow (`dataflow` for IQA benchmarks, `video_dataflow` for VQA ones) and the prompt's
evaluation text, and scored by the shared scoring path (`prresq.scoring.score_loader`). The
random generators are seeded (`scoring.seed`) before each benchmark, so two runs give the same
numbers. Written under `<paths.output_dir>/eval/`:

- `results.csv` / `results.md`: benchmark, n, n_failed, parse_fail_rate, srcc, plcc, plcc_logistic,
  one row per benchmark plus the average (`prresq.metrics.summary_table`); the Markdown table is printed.
- `predictions_<benchmark>.csv`: id, media, mos (mapped to [1, 5]), pred, n_parsed, text, then
  mos_raw, greedy, sample_mean, expected, expected_mass, status. With `on_bad_sample=skip`, items
  whose media are missing or unreadable (or whose MOS is bad) are listed with no prediction and
  status `skipped: <label file row and reason>` / `error: <reason>`, and count in `n_failed`.
- `error_hist_<benchmark>.png` (prediction minus MOS) and `scatter_<benchmark>.png` (prediction vs
  MOS with the fitted logistic curve), from `prresq.plots`.

Model: `checkpoint=null` loads `model.name_or_path`; a directory is an exported `save_pretrained`
policy; a `.ckpt` file is a Lightning checkpoint of `prresq.train` whose `policy.*` weights are
loaded into a policy built from the checkpoint's `model.name_or_path` hyperparameter (or
`base_model`). dtype and attention come from the `model` group in every case.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prresq.data.benchmarks import Benchmark, load_benchmark_config
from prresq.data.collate import PromptCollator, prompt_of
from prresq.data.dataflow import Flow, build_flows
from prresq.data.records import Record
from prresq.metrics import correlation_table, summary_table, write_results
from prresq.models import load_scoring_model
from prresq.scoring import ScoringConfig, score_loader

log = logging.getLogger("prresq.eval")

PREDICTION_COLUMNS = ["id", "media", "mos", "pred", "n_parsed", "text"]
EXTRA_COLUMNS = ["mos_raw", "greedy", "sample_mean", "expected", "expected_mass", "status"]
LOGISTIC_MIN_PAIRS = 4  # parameters of the logistic; with fewer pairs plcc_logistic is NaN


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


# ----------------------------------------------------------------------------- data


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


def prepare_synthetic(name: str, bcfg: Mapping[str, Any]) -> None:
    """Write a synthetic benchmark that is not on disk yet into its `root`.

    The benchmark's `synthetic` node is the generator (`_target_`) and its options, composed from the
    training data's `conf/synthetic/*.yaml` (see `conf/benchmark/synthetic_iqa.yaml`), so the test
    split is the training run's. Benchmarks without one are left alone.
    """
    spec = bcfg.get("synthetic")
    if not spec:
        return
    root = Path(bcfg["root"])
    labels = (bcfg.get("options") or {}).get("labels")
    if (root / labels if labels else root).exists():
        return
    log.info("benchmark %s: writing the synthetic set to %s", name, root)
    instantiate(spec, out_dir=str(root), _convert_="all")


# ----------------------------------------------------------------------------- evaluation


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
            row.update({k: v[j] for k, v in cols.items()}, n_parsed=n_parsed[j], text=texts[j], status="ok")
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


def _fittable(pred: np.ndarray, mos: np.ndarray) -> bool:
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
    collator = PromptCollator(processor, prompt, flow, seed=seed, on_bad_sample=on_bad_sample)  # type: ignore[arg-type]
    loader = DataLoader(records, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collator)
    L.seed_everything(seed, workers=True, verbose=False)
    scored = score_loader(model, processor, loader, scoring, progress=f"{name} ({len(records)} items)")
    df = predictions_frame(records, scored, collator.skipped)
    if bench.rejected:
        df = pd.concat([df, rejected_frame(bench)], ignore_index=True)
    return df


def run(cfg: DictConfig) -> pd.DataFrame:
    """Everything `python -m prresq.eval` does; returns the results table (with the average row)."""
    from prresq.plots import error_histogram, prediction_scatter

    sc = cfg.scoring
    scoring = ScoringConfig.from_mapping(_container(sc), num_aspects=int(cfg.prompt.num_aspects))
    seed = int(sc.get("seed", cfg.get("seed", 0)))
    out_dir = Path(cfg.paths.output_dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    benchmarks = _container(cfg.get("benchmark")) or {}
    if not benchmarks:
        raise ValueError("no benchmark selected: pass benchmark=[name,...] (conf/benchmark/*.yaml)")
    L.seed_everything(seed, workers=True, verbose=False)
    model, processor = load_scoring_model(
        _container(cfg.model),
        cfg.get("checkpoint"),
        cfg.get("base_model"),
        sc.get("min_pixels"),
        sc.get("max_pixels"),
        cfg.get("device", "auto"),
    )
    flows = build_flows(_container(cfg.dataflow), _container(cfg.get("video_dataflow")))
    prompt = prompt_of(_container(cfg.prompt))
    logistic = bool(sc.get("logistic", True))
    on_bad_sample = str(cfg.get("on_bad_sample", "raise"))
    overrides: dict[str, Any] = {"on_bad_sample": on_bad_sample}
    if cfg.get("limit"):
        overrides["limit"] = int(cfg.limit)
    rows = []
    for key, bcfg in benchmarks.items():
        name = str(bcfg.get("name", key))
        prepare_synthetic(name, bcfg)
        bench = load_benchmark_config(bcfg, **overrides)
        df = evaluate_benchmark(
            name,
            bench,
            model,
            processor,
            flows[bench.task],
            prompt,
            scoring,
            batch_size=int(sc.get("batch_size", 8)),
            seed=seed,
            num_workers=int(cfg.get("num_workers", 0)),
            on_bad_sample=on_bad_sample,
        )
        df.to_csv(out_dir / f"predictions_{name}.csv", index=False)
        pred, mos = df["pred"].to_numpy(), df["mos"].to_numpy()
        row = {"benchmark": name, **correlation_table(pred, mos, logistic=logistic and _fittable(pred, mos))}
        rows.append(row)
        if cfg.get("plots", True):
            error_histogram(pred, mos, out_dir / f"error_hist_{name}.png", title=name)
            prediction_scatter(pred, mos, out_dir / f"scatter_{name}.png", title=name, logistic=logistic)
        log.info("%s: %s", name, {k: v for k, v in row.items() if k != "benchmark"})
    table = summary_table(rows)
    _, md = write_results(table, out_dir)
    print(md.read_text(), flush=True)
    return table


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    run(cfg)


if __name__ == "__main__":
    main()
