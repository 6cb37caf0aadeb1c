"""Scoring files for `python -m prresq.infer`: each file routed to the image or video flow, a failing
batch retried file by file, an unreadable file listed with its reason and never fatal."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prresq.data.collate import PromptCollator
from prresq.data.dataflow import Flow, FlowOutput
from prresq.data.records import DataError, Record
from prresq.infer_inputs import is_video
from prresq.models import prompt_token_limit
from prresq.scoring import ScoringConfig, score_batch

log = logging.getLogger("prresq.infer")


class MediaFlow:
    """Route a file to the image or the video flow by extension; remember why a file failed."""

    def __init__(self, image_flow: Flow, video_flow: Flow) -> None:
        self.image_flow, self.video_flow = image_flow, video_flow
        self.errors: dict[str, str] = {}

    def __call__(self, media_path: Path, prompt: str) -> FlowOutput:
        flow = self.video_flow if is_video(media_path) else self.image_flow
        try:
            return flow(media_path, prompt)
        except Exception as exc:  # any decoder error: the file is listed and skipped
            reason = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            reason = reason.replace("\n", " ")
            self.errors[str(media_path)] = reason
            raise DataError(reason) from exc


def _record(path: str) -> Record:
    return Record(
        id=path,
        dataset="infer",
        media=Path(path).expanduser(),
        mos=math.nan,
        mos_mapped=math.nan,
        extra={"media_type": "video" if is_video(path) else "image"},
        source=path,
    )


def _error_row(path: str, reason: str) -> dict[str, Any]:
    return {"path": path, "status": f"error: {reason}", "score": math.nan, "n_parsed": 0, "text": ""}


class Scorer:
    """Scores lists of paths with one model; a failing batch is retried file by file."""

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        flow: MediaFlow,
        prompt: str,
        scoring: ScoringConfig,
        aspect_names: Sequence[str],
        seed: int = 0,
    ) -> None:
        self.model, self.processor, self.flow, self.scoring = model, processor, flow, scoring
        self.aspect_names = list(aspect_names)
        limit = prompt_token_limit(model, scoring.max_new_tokens)
        self.collator = PromptCollator(
            processor,
            prompt,
            flow,  # type: ignore[arg-type]
            seed=seed,
            on_bad_sample="skip",
            max_prompt_tokens=limit,
        )
        self.device = next(model.parameters()).device
        self.seed = seed

    def _score(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        records = [_record(p) for p in paths]
        batch = self.collator(records)
        kept: list[str] = [] if batch is None else list(batch["ids"])
        rows: dict[str, dict[str, Any]] = {}
        if batch is not None:
            inputs = {
                k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch["model_inputs"].items()
            }
            # each file's answers depend on the seed and the file only (prresq.row_sampling)
            out = score_batch(self.model, self.processor, inputs, self.scoring, seed=self.seed, ids=kept)
            primary = out.primary.cpu().double()
            n_parsed = out.n_parsed.cpu() if out.n_parsed is not None else torch.zeros(len(kept), dtype=torch.long)
            aspects = out.aspects.cpu().double() if out.aspects is not None else None
            for i, path in enumerate(kept):
                score = float(primary[i])
                row: dict[str, Any] = {
                    "path": path,
                    "status": "ok" if math.isfinite(score) else "no_answer",
                    "score": score,
                    "n_parsed": int(n_parsed[i]),
                    "text": out.texts[i] if i < len(out.texts) else "",
                }
                if self.aspect_names and aspects is not None:
                    row["aspects"] = {a: float(aspects[i, j]) for j, a in enumerate(self.aspect_names)}
                rows[path] = row
        for rec in records:
            if rec.id not in rows:
                skipped = next(
                    (r[len(rec.source) + 2 :] for r in self.collator.skipped if r.startswith(f"{rec.source}: ")), None
                )
                rows[rec.id] = _error_row(rec.id, self.flow.errors.get(str(rec.media)) or skipped or "unreadable")
        return [rows[p] for p in paths]

    def __call__(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """One row per path, in order; never raises for a bad file."""
        try:
            return self._score(paths)
        except Exception as exc:
            if len(paths) == 1:
                log.warning("%s: %s", paths[0], exc)
                return [_error_row(paths[0], f"{type(exc).__name__}: {exc}".replace("\n", " "))]
            log.warning("a batch of %d files failed (%s); scoring them one by one", len(paths), exc)
            return [row for p in paths for row in self([p])]


def aspect_names_of(prompt_cfg: Mapping[str, Any]) -> list[str]:
    """Names of the aspect scores (none for a single-score prompt)."""
    d = int(prompt_cfg.get("num_aspects", 1))
    if d <= 1:
        return []
    names = list(prompt_cfg.get("aspects") or [])
    return [str(a) for a in names] if len(names) == d else [str(i + 1) for i in range(d)]
