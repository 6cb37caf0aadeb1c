"""Batch inference: `python -m prresq.infer input=... [output=...] [checkpoint=...]` (Hydra).

    python -m prresq.infer input=photos/ output=scores.csv                      # a folder, recursively
    python -m prresq.infer input=photo.png                                      # one image (or video)
    python -m prresq.infer input=list.txt output=scores.jsonl scoring.mode=both scoring.n=8
    python -m prresq.infer input=items.jsonl checkpoint=outputs/train/RUN/checkpoints/last.ckpt \
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
unreadable file never stops the run: it is listed with its error and skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from prresq.config import to_plain
from prresq.data.collate import PromptCollator, prompt_of
from prresq.data.dataflow import Flow, FlowOutput, build_flows
from prresq.data.records import DataError, Record
from prresq.models import load_scoring_model
from prresq.scoring import ScoringConfig, score_batch

log = logging.getLogger("prresq.infer")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})
JSONL_KEYS = ("path", "media", "image", "video")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# ----------------------------------------------------------------------------- inputs


def _jsonl_paths(path: Path) -> list[str]:
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"input={path}: a JSONL must be UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
        value = next((row[k] for k in JSONL_KEYS if isinstance(row, dict) and row.get(k)), None)
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, str):
            raise DataError(f"{path}:{lineno}: no media path in any of {list(JSONL_KEYS)}")
        out.append(value)
    return out


LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
SNIFF_BYTES = 8192


def _is_image_file(path: Path) -> bool:
    """Whether PIL recognises the file's header (an image without a known extension)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


def input_kind(src: Path) -> str:
    """`media`, `jsonl` or `list` for an input file: by extension, else by content; `DataError` otherwise.

    A known image or video extension is one media file, `.jsonl` a JSONL, `.txt`/`.lst`/`.list` a text
    list. Any other file: an image PIL recognises is one media file; UTF-8 text whose first entry
    starts with `{` is a JSONL, other UTF-8 text a list; anything else is refused.
    """
    suffix = src.suffix.lower()
    if suffix in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
        return "media"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix in LIST_EXTENSIONS:
        return "list"
    if _is_image_file(src):
        return "media"
    with src.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    try:
        text = head.decode("utf-8") if b"\0" not in head else None
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is still text
        text = head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
    if text is None:
        raise DataError(
            f"input={src}: neither an image or video (extensions {sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)}) "
            "nor a text list of paths or a .jsonl: it is binary and PIL does not recognise it as an image"
        )
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
    return "jsonl" if first.startswith("{") else "list"


def _text_lines(src: Path) -> list[str]:
    try:
        text = src.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"input={src}: a list of paths must be UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = (ln.strip() for ln in text.splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def list_inputs(source: str | Path) -> list[str]:
    """The media paths named by a folder (recursive, by extension), one media file, a text list or a JSONL.

    In order, deduplicated; how a file is recognised: `input_kind`.
    """
    src = Path(source).expanduser()
    if src.is_dir():
        exts = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
        return sorted(str(f) for f in src.rglob("*") if f.is_file() and f.suffix.lower() in exts)
    if not src.is_file():
        raise FileNotFoundError(
            f"input={source}: no such folder or file (a folder, an image or video, a .txt list or a .jsonl)"
        )
    kind = input_kind(src)
    if kind == "media":
        return [str(src)]
    names = _jsonl_paths(src) if kind == "jsonl" else _text_lines(src)
    paths = [n if Path(n).expanduser().is_absolute() else str(src.parent / n) for n in names]
    return list(dict.fromkeys(paths))


# ----------------------------------------------------------------------------- output


class ResultWriter:
    """Append-only CSV or JSONL of result rows, with resume support."""

    def __init__(self, path: str | Path, aspect_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        if not self.jsonl and self.path.suffix.lower() != ".csv":
            raise ValueError(f"output={path}: expected a .csv or .jsonl file")
        self.aspect_names = list(aspect_names)
        aspect_cols = [f"aspect_{a}" for a in self.aspect_names]
        self.columns = ["path", "status", "score", *aspect_cols, "n_parsed", "text"]

    def _repair_tail(self) -> None:
        """Drop a partial last line left by an interrupted write."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning(
                "%s: dropping a partial last row (%d bytes) left by an interrupted run", self.path, len(data) - cut
            )
            self.path.write_bytes(data[:cut])

    def read(self) -> list[dict[str, Any]]:
        """Rows already written (empty when the file does not exist)."""
        if not self.path.exists():
            return []
        self._repair_tail()
        if self.jsonl:
            rows = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s: ignoring a malformed row", self.path)
                    continue
                if isinstance(row, dict) and "path" in row:
                    rows.append(row)
            return rows
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is not None and list(reader.fieldnames) != self.columns:
                raise ValueError(
                    f"output={self.path} has columns {reader.fieldnames}, this run writes {self.columns} "
                    "(another prompt?): choose another output file"
                )
            return [row for row in reader if row.get("path")]

    def rewrite(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace the file's content with `rows` (as read back)."""
        self.path.unlink(missing_ok=True)
        self.append(rows, raw=True)

    def _encode(self, row: Mapping[str, Any]) -> dict[str, Any]:
        def num(v: Any) -> Any:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        aspects = row.get("aspects") or {}
        if self.jsonl:
            out = {k: num(row.get(k)) for k in ("path", "status", "score")}
            if self.aspect_names:
                out["aspects"] = {a: num(aspects.get(a)) for a in self.aspect_names}
            out.update(n_parsed=row.get("n_parsed"), text=row.get("text", ""))
            return out
        out = {k: row.get(k) for k in ("path", "status", "score", "n_parsed")}
        out["text"] = str(row.get("text", "")).replace("\r", "\\r").replace("\n", "\\n")  # one line per row
        out.update({f"aspect_{a}": aspects.get(a) for a in self.aspect_names})
        return {k: "" if num(v) is None else v for k, v in out.items()}

    def append(self, rows: Iterable[Mapping[str, Any]], raw: bool = False) -> None:
        """Append rows and flush (`raw`: rows already in the file's format)."""
        rows = [dict(r) if raw else self._encode(r) for r in rows]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            if self.jsonl:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            else:
                writer = csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n")
                if new:
                    writer.writeheader()
                writer.writerows(rows)
            f.flush()


# ----------------------------------------------------------------------------- scoring


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
        self.collator = PromptCollator(processor, prompt, flow, seed=seed, on_bad_sample="skip")  # type: ignore[arg-type]
        self.device = next(model.parameters()).device

    def _score(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        records = [_record(p) for p in paths]
        batch = self.collator(records)
        kept: list[str] = [] if batch is None else list(batch["ids"])
        rows: dict[str, dict[str, Any]] = {}
        if batch is not None:
            inputs = {
                k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch["model_inputs"].items()
            }
            out = score_batch(self.model, self.processor, inputs, self.scoring)
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
                rows[rec.id] = _error_row(rec.id, self.flow.errors.get(str(rec.media), "unreadable"))
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Everything `python -m prresq.infer` does; returns a summary (counts and the output path)."""
    from tqdm.auto import tqdm

    sc = cfg.scoring
    prompt_cfg = to_plain(cfg.prompt)
    scoring = ScoringConfig.from_mapping(to_plain(sc), num_aspects=int(prompt_cfg.get("num_aspects", 1)))
    aspects = aspect_names_of(prompt_cfg)
    writer = ResultWriter(cfg.output, aspects)
    paths = list_inputs(cfg.input)
    existing = writer.read()
    if cfg.get("retry_errors", False) and any(str(r.get("status", "")).startswith("error") for r in existing):
        existing = [r for r in existing if not str(r.get("status", "")).startswith("error")]
        writer.rewrite(existing)
    done = {str(r["path"]) for r in existing}
    todo = [p for p in paths if p not in done]
    summary: dict[str, Any] = {"output": str(writer.path), "inputs": len(paths), "already_done": len(paths) - len(todo)}
    counts = {"ok": 0, "no_answer": 0, "error": 0}
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
        )
        flows = build_flows(to_plain(cfg.dataflow), to_plain(cfg.get("video_dataflow")))
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
