"""Batch inference: `python -m prresq.infer input=... [output=...] [checkpoint=...]` (Hydra).

    python -m prresq.infer input=photos/ output=scores.csv                      # a folder, recursively
    python -m prresq.infer input=photo.png                                      # one image (or video)
    python -m prresq.infer input=list.txt output=scores.jsonl scoring.mode=both scoring.n=8
    python -m prresq.infer input=items.jsonl checkpoint=outputs/<experiment>/<date>_<time>/checkpoints/last.ckpt \
        model=qwen2_5_vl_7b prompt=preresq_iqa
    python -m prresq.infer input=clips/ dataflow@video_dataflow=video_native output=clips.csv

Inputs: a folder (every file below it with an image or video extension, sorted), one image or video
file, a text file with one path per line (blank lines and `#` comments ignored), or a JSONL whose
rows name the file in `path`, `media`, `image` or `video` (a list: its first entry). A file is
recognised by its extension, else by its content (`input_kind`); anything else is a clear error. Relative paths in a list or JSONL
are relative to that file's folder. Images go through the `dataflow` flow, videos (by extension)
through `video_dataflow`; both use the prompt group's evaluation text and the shared scoring path
(`prresq.scoring.score_batch`).

Output (`.csv` or `.jsonl`, by the extension of `output`), one row per input: path, status
(`ok`; `no_answer` when no answer parsed, score empty; `error: <reason>` for a file that could not
be read or scored), score, `aspect_<name>` columns when the prompt asks for several aspect scores
(JSONL: an `aspects` mapping), n_parsed, text (the model's answer, reasoning included; in CSV its
line breaks are written as the two characters `\\n`, so that every row is one line). Rows are
appended after each batch; a rerun with the same `output` skips the paths already there (and,
with `retry_errors=true`, scores the error rows again), so an interrupted run resumes. An
unreadable file never stops the run: it is listed with its error and skipped. One process writes an
output at a time (a lock beside it; a second process stops with a clear message), and an output folder
that cannot be written fails before the model is loaded (`prresq.infer_output`).

Several processes (`torchrun --nproc_per_node=N -m prresq.infer ...`): the inputs are cut into batches of
`scoring.batch_size` in input order and dealt to the ranks (each file's sampled answers seeded by the file:
`prresq.row_sampling`); rank 0 holds the lock
and appends every step's rows in input order, so the output equals a one-process run's (`prresq.eval_ranks`).

A checkpoint of `prresq.train` carries the prompt, scoring settings and pixel caps it was validated with
(`prresq.run_record`); they are the defaults here, and a differing `prompt=` on the command line is
used with a warning naming both.

This module is the wiring; inputs are listed by `prresq.infer_inputs`, rows written by
`prresq.infer_output.ResultWriter`, files scored by `prresq.infer_scorer.Scorer`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from prresq.builders import scoring_model
from prresq.config import to_plain
from prresq.data.collate import prompt_of
from prresq.data.dataflow import build_flows
from prresq.eval_ranks import Ranks, close_process_group, launch_processes, work_units
from prresq.infer_inputs import list_inputs
from prresq.infer_output import ResultWriter
from prresq.infer_scorer import MediaFlow, Scorer, aspect_names_of
from prresq.run_record import use_run_record
from prresq.scoring import ScoringConfig

log = logging.getLogger("prresq.infer")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Everything `python -m prresq.infer` does; returns a summary (counts and the output path)."""

    use_run_record(cfg)
    sc = cfg.scoring
    prompt_cfg = to_plain(cfg.prompt)
    scoring = ScoringConfig.from_mapping(to_plain(sc), num_aspects=int(prompt_cfg.get("num_aspects", 1)))
    aspects = aspect_names_of(prompt_cfg)
    ranks = Ranks.from_env(float(cfg.get("collective_timeout_s", 1800)))
    writer = ResultWriter(ranks.broadcast(str(cfg.output)), aspects)  # rank 0's output for every rank
    # before anything is read or loaded: one run per output (rank 0 holds the lock), a writable folder
    lock, error = None, None
    if ranks.is_main:
        try:
            lock = writer.lock()
        except Exception as exc:  # noqa: BLE001 - every rank raises it (Ranks.agree)
            error = exc
    ranks.agree(error, "infer")
    try:
        return _score(cfg, writer, aspects, scoring, ranks)
    finally:
        if lock is not None:
            os.close(lock)


def _todo(cfg: DictConfig, writer: ResultWriter, paths: list[str], size: int) -> tuple[list[list[str]], int]:
    """(the paths still to score, per work unit of `size` inputs; how many are already done) (rank 0)."""
    existing = writer.read()
    if cfg.get("retry_errors", False) and any(str(r.get("status", "")).startswith("error") for r in existing):
        existing = [r for r in existing if not str(r.get("status", "")).startswith("error")]
        writer.rewrite(existing)
    done = {str(r["path"]) for r in existing}
    units = [[paths[i] for i in unit if paths[i] not in done] for unit in work_units(len(paths), size)]
    return [u for u in units if u], sum(p in done for p in paths)


def _score(
    cfg: DictConfig, writer: ResultWriter, aspects: list[str], scoring: ScoringConfig, ranks: Ranks
) -> dict[str, Any]:
    """Score the inputs not in the output yet: work units of `scoring.batch_size` inputs (in input order,
    each file's answers seeded by the file: `prresq.row_sampling`) dealt to the ranks; rank 0 appends each step's rows in
    input order."""
    from tqdm.auto import tqdm

    sc = cfg.scoring
    prompt_cfg = to_plain(cfg.prompt)
    size = int(sc.get("batch_size", 8))
    paths = ranks.run_on_main(lambda: list_inputs(cfg.input), "infer")
    units, already = ranks.run_on_main(lambda: _todo(cfg, writer, paths, size), "infer")
    n_todo = sum(len(u) for u in units)
    summary: dict[str, Any] = {"output": str(writer.path), "inputs": len(paths), "already_done": already}
    counts = {"ok": 0, "no_answer": 0, "error": 0}
    if ranks.is_main:
        print(
            f"infer: {n_todo} of {len(paths)} inputs to score with {cfg.get('checkpoint') or cfg.model.name_or_path} "
            f"(prompt {prompt_cfg.get('name', '?')!r}){f' on {ranks.world} processes' if ranks.world > 1 else ''}; "
            f"rows go to {writer.path}",
            flush=True,
        )
    if units:
        seed = int(sc.get("seed", cfg.get("seed", 0)))
        L.seed_everything(seed, workers=True, verbose=False)
        model, processor = scoring_model(cfg, ranks.device(str(cfg.get("device", "auto"))))
        flows = build_flows(to_plain(cfg.dataflow), to_plain(cfg.get("video_dataflow")), processor)
        flow = MediaFlow(flows["iqa"], flows["vqa"])
        scorer = Scorer(model, processor, flow, prompt_of(prompt_cfg), scoring, aspects, seed=seed)
        with tqdm(total=n_todo, desc="scoring", unit="file", disable=not ranks.is_main) as bar:
            for step in range(0, len(units), ranks.world):
                mine = step + ranks.rank
                rows, error = [], None
                if mine < len(units):
                    try:
                        rows = scorer(units[mine])
                    except Exception as exc:  # noqa: BLE001 - every rank raises it (Ranks.agree)
                        error = exc
                ranks.agree(error, "infer")
                parts = ranks.gather(rows)
                if parts is None:
                    continue
                for part in parts:
                    writer.append(part)
                    for row in part:
                        counts[str(row["status"]).split(":")[0]] += 1
                    bar.update(len(part))
    summary.update(counts)
    if ranks.is_main:
        print(
            f"{summary['inputs']} inputs: {counts['ok']} scored, {counts['no_answer']} without a parsable answer, "
            f"{counts['error']} unreadable, {summary['already_done']} already in {writer.path}",
            flush=True,
        )
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    if launch_processes(int(cfg.get("devices", 1)), "prresq.infer"):  # devices=N: N processes ran this job
        return
    try:
        run(cfg)
    finally:
        close_process_group()


if __name__ == "__main__":
    main()
