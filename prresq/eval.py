"""Benchmark evaluation: `python -m prresq.eval [benchmark=[a,b]] [checkpoint=...] [overrides...]` (Hydra).

    python -m prresq.eval                                             # tiny model on the synthetic test split
    python -m prresq.eval model=qwen2_5_vl_7b benchmark=[kadid10k,spaq] scoring.mode=both scoring.n=8
    python -m prresq.eval checkpoint=outputs/<experiment>/<date>_<time>/checkpoints/last.ckpt model=qwen2_5_vl_7b
    python -m prresq.eval checkpoint=outputs/<experiment>/<date>_<time>/export benchmark=[konvid1k] \
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
- `predictions_<benchmark>.txt`: one `name score` line per item with a prediction, the form the anchors'
  `SRCC.py` reads (`name` as the label file writes it); items without one are left out, as that script
  counts missing names.
- `results_vs_paper.{csv,md}` (with `paper=VisualQuality-R1` or `VisualQuality-R1-dagger`): the table beside the
  paper's reported SRCC/PLCC (`prresq/data/paper_results.csv`, `prresq.paper_results`); also printed.
- `error_hist_<benchmark>.png` (prediction minus MOS) and `scatter_<benchmark>.png` (prediction vs
  MOS with the fitted logistic curve), from `prresq.plots`.

Several processes (`torchrun --nproc_per_node=N -m prresq.eval ...`; gloo on CPUs, NCCL on GPUs): the items
are cut into batches of `scoring.batch_size` in file order and dealt to the ranks (each sampled answer is
seeded by its item id and index, `prresq.row_sampling`, whatever its batch or rank); rank 0 gathers the
predictions in item order and writes the files and metrics once (`prresq.eval_ranks`). Under
`hydra/launcher=slurm` each SLURM task is one rank (SLURM_PROCID / SLURM_NTASKS). Every scored batch is
appended to `eval/progress/<benchmark>/` at once: a rerun into
the same folder (`hydra.run.dir=...`) scores only the batches missing there, and stops before the model
loads if its settings differ from those the predictions were made with (`prresq.eval_progress`).

Model: `checkpoint=null` loads `model.name_or_path`; a directory is an exported `save_pretrained`
policy; a `.ckpt` file is a Lightning checkpoint of `prresq.train` whose `policy.*` weights are
loaded into a policy built from the checkpoint's `model.name_or_path` hyperparameter (or
`base_model`). dtype and attention come from the `model` group in every case.

A checkpoint of `prresq.train` (export or `.ckpt`) carries its run record (`prresq.run_record`): the
prompt, scoring settings, batch size, seed and pixel caps the run was validated with, and its synthetic
set and fold. They are this command's defaults, so `python -m prresq.eval checkpoint=RUN/export`
reproduces the run's held-out table; a `prompt=` given on the command line wins, with a warning naming
both prompts when it differs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from prresq.benchmark_scoring import evaluate_benchmark, logistic_fittable
from prresq.benchmark_scoring import predictions_frame as predictions_frame
from prresq.builders import scoring_model
from prresq.config import to_plain
from prresq.data.benchmarks import load_benchmark_config
from prresq.data.collate import prompt_of
from prresq.data.dataflow import build_flows
from prresq.eval_progress import BenchmarkProgress
from prresq.eval_ranks import Ranks, close_process_group, launch_processes, work_units
from prresq.metrics import DegenerateInputWarning, correlation_table, prediction_hint, summary_table, write_results
from prresq.paper_results import beside_paper
from prresq.run_record import use_run_record
from prresq.scoring import ScoringConfig
from prresq.write_errors import ensure_writable_folder

log = logging.getLogger("prresq.eval")


# ----------------------------------------------------------------------------- data


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


def checkpoint_stamp(path: str | None) -> list[Any] | None:
    """(name, size, mtime) of a checkpoint file or of an export folder's files: a retrained checkpoint at
    the same path is another checkpoint (`prresq.eval_progress` settings)."""
    if not path or not Path(path).exists():
        return None
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return [[str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def benchmark_settings(cfg: DictConfig, bcfg: Mapping[str, Any], prompt: str) -> dict[str, Any]:
    """What a benchmark's predictions depend on (a resume must match them: `prresq.eval_progress`)."""
    return {
        "checkpoint": cfg.get("checkpoint"),
        "checkpoint_files": checkpoint_stamp(cfg.get("checkpoint")),
        "base_model": cfg.get("base_model"),
        "model": to_plain(cfg.model),
        "prompt": {"name": cfg.prompt.get("name"), "text": prompt, "num_aspects": int(cfg.prompt.num_aspects)},
        "scoring": to_plain(cfg.scoring),
        "benchmark": dict(bcfg),
        "on_bad_sample": str(cfg.get("on_bad_sample", "raise")),
        "limit": cfg.get("limit"),
        "dataflow": to_plain(cfg.dataflow),
        "video_dataflow": to_plain(cfg.get("video_dataflow")),
    }


def run(cfg: DictConfig) -> pd.DataFrame | None:
    """Everything `python -m prresq.eval` does; returns the results table (with the average row) on rank 0,
    None on the other ranks (several processes: `prresq.eval_ranks`)."""
    ranks = Ranks.from_env(float(cfg.get("collective_timeout_s", 1800)))
    use_run_record(cfg)
    model_name = cfg.get("checkpoint") or cfg.model.name_or_path
    sc = cfg.scoring
    scoring = ScoringConfig.from_mapping(to_plain(sc), num_aspects=int(cfg.prompt.num_aspects))
    seed = int(sc.get("seed", cfg.get("seed", 0)))
    out_dir = ranks.run_on_main(  # before the model; rank 0's folder for every rank
        lambda: ensure_writable_folder(Path(cfg.paths.output_dir) / "eval", "paths.output_dir"), "eval"
    )
    benchmarks = to_plain(cfg.get("benchmark")) or {}
    if not benchmarks:
        raise ValueError("no benchmark selected: pass benchmark=[name,...] (conf/benchmark/*.yaml)")
    prompt = prompt_of(to_plain(cfg.prompt))
    progress = {}
    for key, bcfg in benchmarks.items():  # a resume with other settings stops here, before the model loads
        name = str(bcfg.get("name", key))
        progress[key] = BenchmarkProgress(out_dir, name, benchmark_settings(cfg, bcfg, prompt))
        ranks.run_on_main(progress[key].start, f"benchmark {name}")
    if ranks.is_main:
        print(
            f"eval: {model_name} with prompt {cfg.prompt.get('name', '?')!r}, scoring.mode={sc.mode}"
            f"{f' on {ranks.world} processes' if ranks.world > 1 else ''}; results go to {out_dir}",
            flush=True,
        )
    on_bad_sample = str(cfg.get("on_bad_sample", "raise"))
    overrides: dict[str, Any] = {"on_bad_sample": on_bad_sample}
    if cfg.get("limit"):
        overrides["limit"] = int(cfg.limit)
    batch_size = int(sc.get("batch_size", 8))
    loaded = {}
    to_score = False
    for key, bcfg in benchmarks.items():  # labels before the model: a bad label file stops at once
        name = str(bcfg.get("name", key))
        ranks.run_on_main(lambda: prepare_synthetic(name, bcfg), f"benchmark {name}")  # noqa: B023 - called now
        bench, error = None, None
        try:
            bench = load_benchmark_config(bcfg, **overrides)
        except Exception as exc:  # noqa: BLE001 - every rank raises it (Ranks.agree)
            error = exc
        ranks.agree(error, f"benchmark {name}")
        assert bench is not None
        loaded[key] = bench
        total = len(work_units(len(bench.items), batch_size))
        to_score |= ranks.run_on_main(lambda: len(progress[key].done()) < total, f"benchmark {name}")  # noqa: B023
    L.seed_everything(seed, workers=True, verbose=False)
    model, processor = None, None
    if not to_score and ranks.is_main:
        print("every batch of every benchmark is on disk: the model is not loaded", flush=True)
    if to_score:  # a rerun whose batches are all on disk rewrites the files without loading the model
        model, processor = scoring_model(cfg, ranks.device(str(cfg.get("device", "auto"))))
    flows = build_flows(to_plain(cfg.dataflow), to_plain(cfg.get("video_dataflow")), processor)
    rows = []
    for key, bench in loaded.items():
        name = bench.name
        df = evaluate_benchmark(
            name,
            bench,
            model,
            processor,
            flows[bench.task],
            prompt,
            scoring,
            batch_size=batch_size,
            seed=seed,
            num_workers=int(cfg.get("num_workers", 0)),
            on_bad_sample=on_bad_sample,
            progress=progress[key],
            ranks=ranks,
        )
        if df is not None:
            rows.append(_write_benchmark(cfg, name, df, out_dir))
    if not ranks.is_main:
        return None
    table = summary_table(rows)
    _, md = write_results(table, out_dir)
    print(md.read_text(), flush=True)
    if cfg.get("paper"):
        _, paper_md = write_results(beside_paper(table, str(cfg.paper)), out_dir, stem="results_vs_paper")
        print(paper_md.read_text(), flush=True)
    print(f"results: {md.with_suffix('.csv')}, predictions and plots per benchmark in {out_dir}", flush=True)
    return table


def _write_benchmark(cfg: DictConfig, name: str, df: pd.DataFrame, out_dir: Path) -> dict[str, Any]:
    """Predictions, metrics row and plots of one benchmark (rank 0)."""
    from prresq.plots import error_histogram, prediction_scatter

    logistic = bool(cfg.scoring.logistic)
    df.to_csv(out_dir / f"predictions_{name}.csv", index=False)
    write_name_scores(df, out_dir / f"predictions_{name}.txt")
    pred, mos = df["pred"].to_numpy(), df["mos"].to_numpy()
    hint = prediction_hint(pred, name)
    with warnings.catch_warnings():
        if hint:  # one line per cause: the hint, not also a NaN-correlation warning per metric
            warnings.simplefilter("ignore", DegenerateInputWarning)
        fit = logistic and logistic_fittable(pred, mos)
        row = {"benchmark": name, **correlation_table(pred, mos, logistic=fit)}
    if cfg.get("plots", True):
        error_histogram(pred, mos, out_dir / f"error_hist_{name}.png", title=name)
        prediction_scatter(pred, mos, out_dir / f"scatter_{name}.png", title=name, logistic=logistic)
    log.info("%s: %s", name, {k: v for k, v in row.items() if k != "benchmark"})
    if hint:
        print(hint, flush=True)
    return row


def write_name_scores(df: pd.DataFrame, path: Path) -> int:
    """`name score` lines (the anchors' prediction files) for the rows with a finite prediction; returns their count."""
    kept = df[np.isfinite(df["pred"].to_numpy(dtype=float))]
    path.write_text("".join(f"{name} {score!r}\n" for name, score in zip(kept["id"], kept["pred"].astype(float))))
    return len(kept)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    if launch_processes(int(cfg.get("devices", 1)), "prresq.eval"):  # devices=N: N processes ran this job
        return
    try:
        run(cfg)
    finally:
        close_process_group()


if __name__ == "__main__":
    main()
