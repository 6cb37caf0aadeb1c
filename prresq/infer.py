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

from prresq.config import to_plain
from prresq.data.collate import prompt_of
from prresq.data.dataflow import build_flows
from prresq.infer_inputs import list_inputs
from prresq.infer_output import ResultWriter
from prresq.infer_scorer import MediaFlow, Scorer, aspect_names_of
from prresq.models import load_scoring_model
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
    writer = ResultWriter(cfg.output, aspects)
    lock = writer.lock()  # before anything is read or loaded: one process per output, a writable folder
    try:
        return _score(cfg, writer, aspects, scoring)
    finally:
        os.close(lock)


def _score(cfg: DictConfig, writer: ResultWriter, aspects: list[str], scoring: ScoringConfig) -> dict[str, Any]:
    from tqdm.auto import tqdm

    sc = cfg.scoring
    prompt_cfg = to_plain(cfg.prompt)
    paths = list_inputs(cfg.input)
    existing = writer.read()
    if cfg.get("retry_errors", False) and any(str(r.get("status", "")).startswith("error") for r in existing):
        existing = [r for r in existing if not str(r.get("status", "")).startswith("error")]
        writer.rewrite(existing)
    done = {str(r["path"]) for r in existing}
    todo = [p for p in paths if p not in done]
    summary: dict[str, Any] = {"output": str(writer.path), "inputs": len(paths), "already_done": len(paths) - len(todo)}
    counts = {"ok": 0, "no_answer": 0, "error": 0}
    print(
        f"infer: {len(todo)} of {len(paths)} inputs to score with {cfg.get('checkpoint') or cfg.model.name_or_path} "
        f"(prompt {prompt_cfg.get('name', '?')!r}); rows go to {writer.path}",
        flush=True,
    )
    if todo:
        seed = int(sc.get("seed", cfg.get("seed", 0)))
        L.seed_everything(seed, workers=True, verbose=False)
        model, processor = load_scoring_model(
            to_plain(cfg.model),
            cfg.get("checkpoint"),
            cfg.get("base_model"),
            sc.get("min_pixels"),
            sc.get("max_pixels"),
            cfg.get("device", "auto"),
            sc.get("max_pixels_cap"),
        )
        flows = build_flows(to_plain(cfg.dataflow), to_plain(cfg.get("video_dataflow")), processor)
        flow = MediaFlow(flows["iqa"], flows["vqa"])
        scorer = Scorer(model, processor, flow, prompt_of(prompt_cfg), scoring, aspects, seed=seed)
        size = int(sc.get("batch_size", 8))
        with tqdm(total=len(todo), desc="scoring", unit="file") as bar:
            for start in range(0, len(todo), size):
                chunk = todo[start : start + size]
                rows = scorer(chunk)
                writer.append(rows)
                for row in rows:
                    counts[str(row["status"]).split(":")[0]] += 1
                bar.update(len(chunk))
    summary.update(counts)
    print(
        f"{summary['inputs']} inputs: {counts['ok']} scored, {counts['no_answer']} without a parsable answer, "
        f"{counts['error']} unreadable, {summary['already_done']} already in {writer.path}",
        flush=True,
    )
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    run(cfg)


if __name__ == "__main__":
    main()
