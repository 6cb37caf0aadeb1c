"""TensorBoard event files and Hydra overrides -> tidy frames: run discovery, `.hydra/overrides.yaml`
parsing, the event-file reader (no TensorFlow), `load_run`, `load_sweep`, `load_texts`. See `prresq.analysis`.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import re
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

log = logging.getLogger(__name__)

EVENT_GLOB = "events.out.tfevents.*"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
TIDY_COLUMNS = ("run", "step", "tag", "value", "wall_time")
TEXT_TAG = "train/completions"
EVAL_RESULT_COLUMNS = ("benchmark", "n", "srcc", "plcc", "plcc_logistic", "parse_fail_rate")
EVAL_PREDICTION_COLUMNS = ("id", "media", "mos", "pred", "n_parsed", "text")
_FIXED_AFTER_OVERRIDES = ("step", "tag", "value", "wall_time", "eval", "benchmark", "text")
_RESERVED = frozenset(
    (*TIDY_COLUMNS, *EVAL_RESULT_COLUMNS, *EVAL_PREDICTION_COLUMNS, *_FIXED_AFTER_OVERRIDES, "smoothed")
)
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_BEFORE_WORDS = ("base", "before", "init", "initial", "pre", "step_0", "step0", "zero_shot", "zeroshot")
_AFTER_WORDS = ("final", "after", "last", "trained", "post")


# ----------------------------------------------------------------------------------------------- discovery


def _is_run_dir(path: Path) -> bool:
    return (path / OVERRIDES_FILE).is_file()


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Every directory at or below `root` holding `.hydra/overrides.yaml`, sorted (hidden dirs are not entered)."""
    root = Path(root)
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if _is_run_dir(here):
            runs.append(here)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(runs)


def event_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Event files below `run_dir`, not entering nested run directories, sorted by (folder, name)."""
    run_dir = Path(run_dir)
    files = []
    for dirpath, dirnames, filenames in os.walk(run_dir):
        here = Path(dirpath)
        files += [here / f for f in filenames if fnmatch.fnmatch(f, EVENT_GLOB)]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _is_run_dir(here / d))
    return sorted(files)


def _run_name(run_dir: Path, root: Path) -> str:
    try:
        rel = run_dir.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = "."
    return run_dir.resolve().name if rel == "." else rel


def _resolve_runs(path: Path) -> list[Path]:
    """`path` itself when it is a run dir (or has no run dirs below), else every run dir below it."""
    if _is_run_dir(path):
        return [path]
    return find_runs(path) or [path]


def _no_events_error(path: Path, searched: Sequence[Path]) -> FileNotFoundError:
    where = ", ".join(str(p) for p in searched[:5]) + (f" and {len(searched) - 5} more" if len(searched) > 5 else "")
    return FileNotFoundError(
        f"no TensorBoard event files ({EVENT_GLOB}) found under {path} "
        f"(searched recursively in: {where}; run dirs are folders holding {OVERRIDES_FILE.as_posix()})"
    )


# ----------------------------------------------------------------------------------------------- overrides


def parse_value(text: str) -> Any:
    """Override value: int or float when it parses as a number, else the string (outer quotes removed)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`["grpo.k=4", "+seed=1", "~x"]` -> `{"grpo.k": 4, "seed": 1, "x": None}` (leading `+`/`~` stripped)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("+~")
        if key:
            out[key] = parse_value(value) if sep else None
    return out


def read_overrides(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parsed `<run_dir>/.hydra/overrides.yaml` ({} when absent)."""
    path = Path(run_dir) / OVERRIDES_FILE
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a YAML list of overrides, got {type(items).__name__}")
    return parse_overrides(items)


def _override_key(key: str, taken: Sequence[str] = ()) -> str:
    return f"override.{key}" if key in _RESERVED or key in taken else key


def override_columns(df: pd.DataFrame) -> list[str]:
    """Override columns of a frame from this module: those between `run` and the first fixed column."""
    cols = list(df.columns)
    if "run" not in cols:
        return []
    out = []
    for c in cols[cols.index("run") + 1 :]:
        if c in _FIXED_AFTER_OVERRIDES:
            break
        out.append(c)
    return out


def _labels(col: pd.Series) -> pd.Series:
    return col.map(lambda v: "default" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))


def varying_overrides(df: pd.DataFrame, ignore: Sequence[str] = ()) -> list[str]:
    """Override columns whose value differs between runs (what a sweep varied), except those whose last
    dotted component is in `ignore` (e.g. `("seed",)` to group seeds of one configuration together)."""
    cols = [c for c in override_columns(df) if c.rsplit(".", 1)[-1] not in ignore]
    per_run = df.drop_duplicates("run")[cols] if "run" in df.columns else df[cols]
    return [c for c in cols if _labels(per_run[c]).nunique() > 1]


def _with_overrides(df: pd.DataFrame, run: str, overrides: dict[str, Any], front: Sequence[str]) -> pd.DataFrame:
    head = {"run": run} | {_override_key(k, list(df.columns)): v for k, v in overrides.items()}
    extra = pd.DataFrame({k: [v] * len(df) for k, v in head.items()}, index=df.index)
    body = df.drop(columns=[c for c in ("run",) if c in df.columns])
    cols = list(head) + [c for c in front if c in body.columns] + [c for c in body.columns if c not in front]
    return pd.concat([extra, body], axis=1)[cols]


# ----------------------------------------------------------------------------------------------- event files


def _records(path: Path, verify_crc: bool) -> Iterator[bytes]:
    """Serialized Event records of one TFRecord file.

    `verify_crc=True` goes through tensorboard's `event_file_loader.RawEventFileLoader`, whose CRC32C is pure
    Python without TensorFlow (reading is about 12x slower); the default reads the length-prefixed framing
    directly and leaves the checksums unchecked.
    A truncated last record (a run still writing) ends the file quietly in both cases.
    """
    if verify_crc:
        from tensorboard.backend.event_processing import event_file_loader

        yield from event_file_loader.RawEventFileLoader(str(path)).Load()
        return
    data = memoryview(path.read_bytes())
    i, n = 0, len(data)
    while i + 12 <= n:
        (length,) = struct.unpack_from("<Q", data, i)
        start = i + 12
        if start + length + 4 > n:
            break
        yield data[start : start + length].tobytes()
        i = start + length + 4


def _parse_events(files: Sequence[Path], *, text_tags: Sequence[str] | None, verify_crc: bool) -> pd.DataFrame:
    """Scalars (`text_tags=None`) or text summaries of the given tags, as columns step, tag, value|text, wall_time."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    steps: list[int] = []
    tags: list[str] = []
    values: list[Any] = []
    walls: list[float] = []
    want_text = text_tags is not None
    wanted = set(text_tags or ()) | {f"{t}/text_summary" for t in text_tags or ()}
    needles = [t.encode() for t in text_tags or ()]
    parse = event_pb2.Event.FromString
    for path in files:
        plugins: dict[str, str] = {}  # plugin metadata comes with the first value of each tag only
        try:
            for record in _records(path, verify_crc):
                if want_text and not any(n in record for n in needles):  # cheap skip of scalar events
                    continue
                event = parse(record)
                for v in event.summary.value:
                    tag = v.tag
                    plugin = plugins.get(tag)
                    if plugin is None:
                        plugin = plugins[tag] = v.metadata.plugin_data.plugin_name
                    kind = v.WhichOneof("value")
                    if want_text:
                        if kind != "tensor" or plugin != "text" or tag not in wanted:
                            continue
                        value: Any = "\n".join(s.decode("utf-8", "replace") for s in v.tensor.string_val)
                        tag = tag.removesuffix("/text_summary")
                    elif kind == "simple_value":
                        value = v.simple_value
                    elif kind == "tensor" and plugin == "scalars":
                        value = float(tensor_util.make_ndarray(v.tensor).reshape(-1)[0])
                    else:
                        continue
                    steps.append(event.step)
                    tags.append(tag)
                    values.append(value)
                    walls.append(event.wall_time)
        except Exception as e:  # a corrupt file must not hide the others
            log.warning("stopped reading %s: %s: %s", path, type(e).__name__, e)
    col = "text" if want_text else "value"
    return pd.DataFrame(
        {
            "step": np.asarray(steps, dtype=np.int64),
            "tag": pd.Series(tags, dtype="str"),
            col: pd.Series(values, dtype="str" if want_text else np.float64),
            "wall_time": np.asarray(walls, dtype=np.float64),
        }
    )


def _finish(df: pd.DataFrame, dedupe: bool) -> pd.DataFrame:
    df = df.sort_values(["tag", "step", "wall_time"], kind="stable")
    if dedupe:  # a resumed run writes a new version_N folder that may repeat steps: keep the latest write
        df = df.drop_duplicates(["tag", "step"], keep="last")
    return df.reset_index(drop=True)


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    dedupe: bool = True,
    verify_crc: bool = False,
) -> pd.DataFrame:
    """Every scalar of every event file below `run_dir` as a tidy frame.

    Columns: run, <one per Hydra override in `.hydra/overrides.yaml`>, step, tag, value, wall_time (seconds
    since the epoch). All values are kept (no reservoir sampling). `run` is `name` or the folder name.
    With `dedupe`, a (tag, step) logged twice (a resumed run) keeps its latest write.
    Raises FileNotFoundError, naming what was searched, when there is no event file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    files = event_files(run_dir)
    if not files:
        nested = [r for r in find_runs(run_dir) if r != run_dir]
        if nested:
            raise FileNotFoundError(
                f"{run_dir} holds no event files of its own but {len(nested)} run dirs below it: use load_sweep"
            )
        raise _no_events_error(run_dir, [run_dir])
    df = _finish(_parse_events(files, text_tags=None, verify_crc=verify_crc), dedupe)
    return _with_overrides(df, name or run_dir.resolve().name, read_overrides(run_dir), TIDY_COLUMNS)


def _load_run_job(args: tuple[Path, str, bool, bool]) -> pd.DataFrame:
    run_dir, name, dedupe, verify_crc = args
    return load_run(run_dir, name=name, dedupe=dedupe, verify_crc=verify_crc)


def load_sweep(
    sweep_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    executor: Literal["process", "thread"] = "process",
    dedupe: bool = True,
    verify_crc: bool = False,
) -> pd.DataFrame:
    """`load_run` for every run dir at or below `sweep_dir` (folders holding `.hydra/overrides.yaml` and event
    files), concatenated; `run` is the path relative to `sweep_dir`. Override keys missing in a run are NaN.

    Runs are parsed in parallel (`workers`, default min(#runs, CPU count); `workers=1` is serial; with the
    default `workers=None` no pool is started below 4 runs). Cost is about 3 us of CPU per scalar: 0.13-0.2 s
    for a run of 25 tags x 2,000 steps, about 20 ms serially for the 3-run fake sweep of tests/test_analysis.py
    (a process pool costs about 0.1 s to start). Protobuf parsing holds the GIL, so processes scale with free
    cores and threads do not; on the 2 shared cores where this was measured, 24 such runs (1.2 M scalars, 65 MB)
    took 3-7 s serial, threaded or with 2 processes alike (noise-dominated). `verify_crc=True` (tensorboard's
    pure-Python CRC32C) is about 4-6x slower per run.
    A folder with event files but no run dir below it is loaded as one run without overrides.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    candidates = _resolve_runs(sweep_dir)
    runs = [r for r in candidates if event_files(r)]
    for r in sorted(set(candidates) - set(runs)):
        log.warning("skipping %s: no event files", r)
    if not runs:
        raise _no_events_error(sweep_dir, candidates)
    jobs = [(r, _run_name(r, sweep_dir), dedupe, verify_crc) for r in runs]
    auto = workers is None
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1 or (auto and len(jobs) < 4):
        frames = [_load_run_job(j) for j in jobs]
    else:
        pool: Executor = (ProcessPoolExecutor if executor == "process" else ThreadPoolExecutor)(workers)
        with pool:
            frames = list(pool.map(_load_run_job, jobs))
    return _concat(frames, TIDY_COLUMNS)


def _concat(frames: Sequence[pd.DataFrame], tail: Sequence[str]) -> pd.DataFrame:
    df = pd.concat(frames, ignore_index=True, sort=False)
    cols = ["run"] + [c for c in df.columns if c not in tail and c != "run"] + [c for c in tail if c != "run"]
    return df[[c for c in cols if c in df.columns]]


def load_texts(run_dir: str | os.PathLike[str], tag: str = TEXT_TAG, *, verify_crc: bool = False) -> pd.DataFrame:
    """Text summaries (tensor events of plugin 'text') logged under `tag` as columns run, step, text.

    `add_text(tag, ...)` stores the tag as `<tag>/text_summary`; both spellings match. A sweep dir gives
    every run below it. Empty frame when the tag was never logged; FileNotFoundError without event files.
    """
    root = Path(run_dir)
    runs = _resolve_runs(root)
    frames, searched = [], []
    for r in runs:
        files = event_files(r)
        searched.append(r)
        if not files:
            continue
        df = _parse_events(files, text_tags=[tag], verify_crc=verify_crc)
        df = df.sort_values(["step", "wall_time"], kind="stable").drop_duplicates("step", keep="last")
        df.insert(0, "run", _run_name(r, root))
        frames.append(df[["run", "step", "text"]])
    if not frames:
        raise _no_events_error(root, searched)
    return pd.concat(frames, ignore_index=True)


def parse_markdown_table(text: str) -> pd.DataFrame | None:
    """A markdown pipe table (as logged in train/completions) as a frame of strings; None if `text` is not one."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) < 2 or not lines[0].startswith("|") or "-" not in lines[1] or set(lines[1]) - set("|:- "):
        return None

    def cells(line: str) -> list[str]:
        line = line.removeprefix("|")
        if line.endswith("|") and not line.endswith("\\|"):
            line = line[:-1]
        return [c.strip().replace("\\|", "|").replace("<br>", "\n") for c in re.split(r"(?<!\\)\|", line)]

    header, rows = cells(lines[0]), [cells(ln) for ln in lines[2:]]
    rows = [(r + [""] * len(header))[: len(header)] for r in rows]
    return pd.DataFrame(rows, columns=header)
