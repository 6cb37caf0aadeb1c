"""Training and evaluation logs -> pandas: TensorBoard events, Hydra overrides, eval CSVs, plots.

Reads the run directory layout of prresq/CONTRACTS.md (`.hydra/overrides.yaml`, `tb/**/events.out.tfevents.*`,
`eval/results.csv`, `eval/predictions_<benchmark>.csv`) without TensorFlow and returns tidy frames with one
column per Hydra override, so that sweeps can be grouped and coloured by what was varied.

    from prresq import analysis as A
    df = A.load_sweep("multirun/2025-01-01/12-00-00")        # run, <overrides>, step, tag, value, wall_time
    A.plot_curves(df, ["train/reward_total_mean", "val/srcc"], hue=A.varying_overrides(df))
    texts = A.load_texts("multirun/2025-01-01/12-00-00/0")   # run, step, text (train/completions)
    ev = A.load_eval("multirun/2025-01-01/12-00-00")         # ev.results, ev.predictions

    python -m prresq.analysis RUN_OR_SWEEP_DIR [--tags val/srcc ...]   # last logged value per run and tag

The notebooks `notebooks/reward_curves.ipynb` and `notebooks/score_distribution.ipynb` are built on this module.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import os
import re
import struct
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import yaml

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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


# ----------------------------------------------------------------------------------------------- eval CSVs


class EvalData(NamedTuple):
    """Evaluation tables: `results` (run, <overrides>, eval, benchmark, n, srcc, plcc, ...) and `predictions`
    (run, <overrides>, eval, benchmark, id, media, mos, pred, n_parsed, text); `eval` is the eval folder
    relative to its run dir (usually "eval")."""

    results: pd.DataFrame
    predictions: pd.DataFrame


def find_eval_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """Folders at or below `path` holding `results.csv` or `predictions_*.csv`, sorted."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(Path(path)):
        if "results.csv" in filenames or any(fnmatch.fnmatch(f, "predictions_*.csv") for f in filenames):
            out.add(Path(dirpath))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(out)


def _owning_run(eval_dir: Path) -> Path | None:
    eval_dir = eval_dir.resolve()
    for d in [eval_dir, *eval_dir.parents]:
        if _is_run_dir(d):
            return d
    return None


def load_eval(run_dir_or_sweep: str | os.PathLike[str]) -> EvalData:
    """`results.csv` and `predictions_<benchmark>.csv` of every eval folder at or below the path.

    The path may be a sweep, a run dir or an eval folder itself; overrides come from the nearest enclosing
    run dir (searched upwards too). Raises FileNotFoundError, naming the path, when no eval CSV is found.
    """
    root = Path(run_dir_or_sweep)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    dirs = find_eval_dirs(root)
    if not dirs:
        raise FileNotFoundError(
            f"no evaluation CSVs (results.csv, predictions_<benchmark>.csv) found at or below {root}"
        )
    results, predictions = [], []
    for d in dirs:
        run = _owning_run(d)
        name = _run_name(run, root) if run is not None else _run_name(d.resolve().parent, root)
        overrides = read_overrides(run) if run is not None else {}
        where = d.resolve().relative_to(run.resolve()).as_posix() if run is not None else d.name
        front = ("eval", "benchmark")
        if (d / "results.csv").is_file():
            res = pd.read_csv(d / "results.csv")
            res.insert(0, "eval", where)
            results.append(_with_overrides(res, name, overrides, front))
        for p in sorted(d.glob("predictions_*.csv")):
            pred = pd.read_csv(p, keep_default_na=True)
            pred.insert(0, "benchmark", p.stem.removeprefix("predictions_"))
            pred.insert(0, "eval", where)
            predictions.append(_with_overrides(pred, name, overrides, front))
    empty = pd.DataFrame(columns=["run", "eval", "benchmark"])
    return EvalData(
        results=pd.concat(results, ignore_index=True, sort=False) if results else empty,
        predictions=pd.concat(predictions, ignore_index=True, sort=False) if predictions else empty.copy(),
    )


def pick_before_after(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(before, after) eval folders inside one run dir: a folder named like base/before/init/step_0 is
    "before", one named like final/after/last is "after"; otherwise the older and the newer by mtime.
    Raises ValueError unless there are two or more eval folders, all in the same run."""
    run_dir = Path(run_dir)
    dirs = find_eval_dirs(run_dir)
    owners = {str(_owning_run(d)) for d in dirs}
    if len(dirs) < 2 or len(owners) > 1:
        found = ", ".join(d.relative_to(run_dir).as_posix() for d in dirs) or "none"
        raise ValueError(
            f"need two eval folders of one run below {run_dir} to compare before/after training; "
            f"found {len(dirs)} in {len(owners)} run(s): {found}"
        )

    def named(d: Path, words: Sequence[str]) -> bool:
        parts = re.split(r"[/.\-]", d.relative_to(run_dir).as_posix().lower())
        return any(p == w or p.startswith(w + "_") for p in parts for w in words)

    by_time = sorted(dirs, key=lambda d: (d.stat().st_mtime, str(d)))
    before = next((d for d in dirs if named(d, _BEFORE_WORDS)), by_time[0])
    rest = [d for d in by_time if d != before]
    after = next((d for d in rest if named(d, _AFTER_WORDS)), rest[-1])
    return before, after


# ----------------------------------------------------------------------------------------------- transforms


def smooth(df: pd.DataFrame, alpha: float = 0.6, *, column: str = "value", out: str = "smoothed") -> pd.DataFrame:
    """Copy of `df` sorted by (run, tag, step) with `out` = TensorBoard's debiased EMA of `column` per (run, tag).

    `alpha` is the weight of the past (0 = no smoothing, as TensorBoard's slider); non-finite values are passed
    through and do not enter the average.
    """
    from scipy.signal import lfilter

    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    df = df.sort_values([c for c in ("run", "tag", "step") if c in df.columns], kind="stable").copy()
    keys = [c for c in ("run", "tag") if c in df.columns]
    vals = df[column].to_numpy(dtype=np.float64)
    res = vals.copy()
    groups = df.groupby(keys, sort=False).indices.values() if keys else [np.arange(len(df))]
    for pos in groups:
        pos = np.asarray(pos)[np.isfinite(vals[pos])]
        if alpha > 0 and len(pos):
            ema = lfilter([1.0 - alpha], [1.0, -alpha], vals[pos])
            res[pos] = ema / (1.0 - alpha ** np.arange(1, len(pos) + 1))
    df[out] = res
    return df


_ema = smooth  # plot_curves has a parameter named `smooth`


def pivot_metric(
    df: pd.DataFrame, tag: str, by: str | Sequence[str] | None = None, *, aggfunc: str = "mean", column: str = "value"
) -> pd.DataFrame:
    """One tag as a step x group table: columns are the values of `by` (override columns; default `run`),
    cells the `aggfunc` over the runs sharing them (e.g. seeds)."""
    sub = df[df["tag"] == tag]
    if sub.empty:
        raise KeyError(f"tag {tag!r} not in the frame; logged tags: {sorted(df['tag'].unique())}")
    by = [by] if isinstance(by, str) else list(by or ["run"])
    return sub.pivot_table(index="step", columns=by, values=column, aggfunc=aggfunc, dropna=False)


def last_values(df: pd.DataFrame, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """Last logged value of each tag per run: one row per run (with its overrides), one column per tag."""
    sub = df if tags is None else df[df["tag"].isin(tags)]
    last = sub.sort_values("step", kind="stable").groupby(["run", "tag"], sort=True).tail(1)
    table = last.pivot(index="run", columns="tag", values="value")
    over = df.drop_duplicates("run").set_index("run")[override_columns(df)]
    return over.join(table).reset_index()


def select_tags(df: pd.DataFrame, patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """(present tags matching `patterns` (fnmatch globs), patterns that matched nothing)."""
    logged = sorted(df["tag"].unique())
    present: list[str] = []
    missing: list[str] = []
    for p in patterns:
        hits = [t for t in logged if fnmatch.fnmatchcase(t, p) and t not in present]
        present += hits
        if not hits and not any(fnmatch.fnmatchcase(t, p) for t in present):
            missing.append(p)
    return present, missing


def _labels(col: pd.Series) -> pd.Series:
    return col.map(lambda v: "default" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))


def label_column(df: pd.DataFrame, cols: str | Sequence[str] | None) -> pd.Series:
    """Group label per row: `run` (None or []), one column's values, or "a=1, b=x" for several columns.
    A missing override (the run kept the config default) reads "default"."""
    cols = [cols] if isinstance(cols, str) else list(cols or [])
    if not cols:
        return df["run"].astype(str)
    if len(cols) == 1:
        return _labels(df[cols[0]])
    parts = [c + "=" + _labels(df[c]) for c in cols]
    out = parts[0]
    for p in parts[1:]:
        out = out + ", " + p
    return out


def _sort_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


# ----------------------------------------------------------------------------------------------- plotting


def plot_curves(
    df: pd.DataFrame,
    tags: str | Sequence[str],
    hue: str | Sequence[str] | None = None,
    smooth: float = 0.6,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    ncols: int = 3,
    raw_alpha: float = 0.2,
) -> Figure:
    """One panel per tag: value against step, one line per run, coloured by `hue` (an override column, a list
    of them, or None for per-run colours). Smoothed (EMA `smooth`) solid, raw values faint.

    `ax`: an Axes for a single tag, or one Axes per tag; a new figure otherwise. Tags that were not
    logged get an empty panel saying so. Returns the figure.
    """
    import matplotlib.pyplot as plt

    tags = [tags] if isinstance(tags, str) else list(tags)
    if not tags:
        raise ValueError("no tags to plot")
    if ax is None:
        ncols = min(ncols, len(tags))
        nrows = math.ceil(len(tags) / ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[len(tags) :]:
            extra.set_visible(False)
    else:
        axes = list(np.ravel(ax)) if isinstance(ax, Sequence | np.ndarray) else [ax]
        if len(axes) < len(tags):
            raise ValueError(f"{len(tags)} tags but {len(axes)} axes")
        fig = axes[0].figure
    sub = df[df["tag"].isin(tags)]
    data = _ema(sub, smooth) if smooth > 0 and not sub.empty else sub.assign(smoothed=sub["value"])
    data = data.assign(_hue=label_column(data, hue).to_numpy()) if not data.empty else data.assign(_hue="")
    levels = sorted(data["_hue"].unique(), key=_sort_key)
    cmap = plt.get_cmap("tab10" if len(levels) <= 10 else "viridis")
    colours = {h: cmap(i if len(levels) <= 10 else i / max(1, len(levels) - 1)) for i, h in enumerate(levels)}
    hue_name = hue if isinstance(hue, str) else ", ".join(hue) if hue else "run"
    for tag, a in zip(tags, axes):
        part = data[data["tag"] == tag]
        a.set_title(tag, fontsize=10)
        a.set_xlabel("step")
        if part.empty:
            a.text(0.5, 0.5, "not logged", ha="center", va="center", transform=a.transAxes, color="grey")
            continue
        labelled = set()
        for (h, _run), g in part.groupby(["_hue", "run"], sort=False):
            c = colours[h]
            if raw_alpha > 0 and smooth > 0:
                a.plot(g["step"], g["value"], color=c, alpha=raw_alpha, lw=0.8)
            a.plot(g["step"], g["smoothed"], color=c, lw=1.5, label=None if h in labelled else h)
            labelled.add(h)
        a.grid(alpha=0.3)
    shown = [a for a, t in zip(axes, tags) if a.get_legend_handles_labels()[0]]
    if shown:
        handles, labels = shown[0].get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: _sort_key(labels[i]))
        handles, labels = [handles[i] for i in order], [labels[i] for i in order]
        if ax is None:  # own figure: one legend right of the panels
            fig.tight_layout()
            fig.legend(handles, labels, title=hue_name, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
            return fig
        shown[0].legend(handles, labels, title=hue_name, fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- studies

STUDY_STATUS = "study_run.json"
STUDY_KEYS = ("arm", "data.synthetic.fold", "seed")
HELDOUT_FILE = "heldout_metrics.json"


def load_study(root: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per run of an ablation study directory (`experiments/ablations.py`).

    Columns: run, arm, fold, seed, status (`done` | `running` | `failed` | `missing`), wall_s, warmup_s,
    steps, error, then `warmup_<metric>` (validation at the end of the warm-up), `before_<metric>` and
    `after_<metric>` (held-out test before/after RL: srcc_mean, plcc_mean, srcc_greedy, plcc_greedy, ...).
    Runs are the folders holding `.hydra/overrides.yaml`; the arm is the `+arm=` override.
    """
    root = Path(root)
    rows = []
    for run in find_runs(root):
        over = read_overrides(run)
        status_path = run / STUDY_STATUS
        status = json.loads(status_path.read_text()) if status_path.is_file() else {"status": "missing"}
        row: dict[str, Any] = {
            "run": _run_name(run, root),
            "arm": over.get("arm"),
            "fold": over.get("data.synthetic.fold"),
            "seed": over.get("seed"),
            **{k: status.get(k) for k in ("status", "wall_s", "warmup_s", "steps", "error")},
        }
        held = run / HELDOUT_FILE
        if held.is_file():
            metrics = json.loads(held.read_text())
            for when, key in (("warmup", "warmup_final_val"), ("before", "before"), ("after", "after")):
                for k, v in (metrics.get(key) or {}).items():
                    if isinstance(v, int | float):
                        row[f"{when}_{k}"] = float(v)
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no runs (folders holding {OVERRIDES_FILE.as_posix()}) below {root}")
    return pd.DataFrame(rows).sort_values(["arm", "fold", "seed"], kind="stable").reset_index(drop=True)


def bands(df: pd.DataFrame, tag: str, by: str = "arm") -> pd.DataFrame:
    """Mean, min and max of one tag over the runs of each `by` group at each step (the folds x seeds of an arm):
    columns `by`, step, mean, low, high, n."""
    sub = df[df["tag"] == tag]
    if sub.empty:
        return pd.DataFrame(columns=[by, "step", "mean", "low", "high", "n"])
    sub = sub.assign(_by=_labels(sub[by]) if by in sub.columns else "all")
    g = sub.groupby(["_by", "step"])["value"]
    out = pd.DataFrame({"mean": g.mean(), "low": g.min(), "high": g.max(), "n": g.count()}).reset_index()
    return out.rename(columns={"_by": by})


def plot_bands(
    df: pd.DataFrame, tags: str | Sequence[str], by: str = "arm", smooth: float = 0.0, *, ncols: int = 3
) -> Figure:
    """One panel per tag: per `by` group the mean over its runs (line) and their min..max (band) against the
    step; `smooth` applies TensorBoard's EMA to each run first. Tags not logged get a panel saying so."""
    import matplotlib.pyplot as plt

    tags = [tags] if isinstance(tags, str) else list(tags)
    ncols = min(ncols, len(tags))
    nrows = math.ceil(len(tags) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    axes = list(grid.ravel())
    for extra in axes[len(tags) :]:
        extra.set_visible(False)
    data = df[df["tag"].isin(tags)]
    if smooth > 0 and not data.empty:
        data = _ema(data, smooth).drop(columns="value").rename(columns={"smoothed": "value"})
    groups = sorted(_labels(df[by]).unique(), key=_sort_key) if by in df.columns else ["all"]
    cmap = plt.get_cmap("tab10")
    for tag, a in zip(tags, axes):
        a.set_title(tag, fontsize=10)
        a.set_xlabel("step")
        b = bands(data, tag, by)
        if b.empty:
            a.text(0.5, 0.5, "not logged", ha="center", va="center", transform=a.transAxes, color="grey")
            continue
        for i, group in enumerate(groups):
            part = b[b[by] == group]
            if part.empty:
                continue
            c = cmap(i % 10)
            a.plot(part["step"], part["mean"], color=c, lw=1.5, label=f"{group} (n={int(part['n'].max())})")
            a.fill_between(part["step"], part["low"], part["high"], color=c, alpha=0.15, lw=0)
        a.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout()
    if handles:
        fig.legend(handles, labels, title=by, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def study_errors(root: str | os.PathLike[str], when: str = "after") -> pd.DataFrame:
    """Per-image answer errors (pred - mos) of every run of a study at `eval/<when>`, with the run's arm."""
    ev = load_eval(root)
    pred = ev.predictions
    if pred.empty:
        return pred.assign(error=pd.Series(dtype=float))
    pred = pred[pred["eval"] == f"eval/{when}"]
    return pred.assign(error=pred["pred"] - pred["mos"])


def plot_error_hists(root: str | os.PathLike[str], by: str = "arm", bins: int = 40) -> Figure:
    """Histograms of held-out answer errors after RL, one panel per `by` group (all its folds x seeds pooled),
    with the errors of the same runs before RL (the warm-up) in grey; unparseable answers are counted."""
    import matplotlib.pyplot as plt

    after, before = study_errors(root, "after"), study_errors(root, "before")
    if after.empty:
        raise FileNotFoundError(f"no eval/after/predictions_*.csv below {root}")
    groups = sorted(_labels(after[by]).unique(), key=_sort_key)
    ncols = min(4, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.0 * nrows), squeeze=False, sharex=True)
    axes = list(grid.ravel())
    for extra in axes[len(groups) :]:
        extra.set_visible(False)
    finite = pd.concat([after["error"], before["error"]]).dropna()
    edges = np.linspace(finite.min(), finite.max(), bins + 1) if len(finite) and finite.min() < finite.max() else bins
    for a, group in zip(axes, groups):
        for frame, label, style in ((before, "before RL", dict(color="grey", alpha=0.35)), (after, "after RL", {})):
            part = frame[_labels(frame[by]) == group] if not frame.empty else frame
            vals = part["error"].dropna()
            if vals.empty:
                continue
            text = f"{label}: MAE {vals.abs().mean():.2f}, fail {int(part['error'].isna().sum())}/{len(part)}"
            if style:
                a.hist(vals, bins=edges, label=text, **style)
            else:
                a.hist(vals, bins=edges, histtype="step", lw=1.6, label=text)
        a.axvline(0, color="k", lw=0.8, ls="--")
        a.set_title(str(group), fontsize=10)
        a.set_xlabel("predicted - MOS")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=6)
        else:
            a.text(0.5, 0.5, "no parsed answers", ha="center", va="center", transform=a.transAxes, color="grey")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- defaults / CLI


def default_run_dir(repo_root: str | os.PathLike[str] = "..") -> Path:
    """The newest `<repo_root>/multirun/<date>/<time>` sweep if any, else `<repo_root>/outputs`."""
    root = Path(repo_root)
    sweeps = [p for p in root.glob("multirun/*/*") if p.is_dir()]
    if sweeps:
        return max(sweeps, key=lambda p: (p.stat().st_mtime, str(p)))
    return root / "outputs"


def main(argv: Sequence[str] | None = None) -> None:
    """Print the last logged value of each tag per run of a run or sweep directory."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--tags", nargs="*", default=None, help="fnmatch patterns (default: all tags)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    df = load_sweep(args.path, workers=args.workers)
    tags = select_tags(df, args.tags)[0] if args.tags else None
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(last_values(df, tags).to_string(index=False))
    print(f"{df['run'].nunique()} runs, {len(df)} scalars in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
