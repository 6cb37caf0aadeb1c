"""Runs, sweeps and studies: eval CSVs (`load_eval`, `pick_before_after`), transforms of the tidy frame
(`smooth`, `pivot_metric`, `last_values`, `select_tags`), ablation studies (`load_study`, `bands`,
`study_errors`), `default_run_dir` and the command line. See `prresq.analysis`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from prresq.analysis.events import (
    _AFTER_WORDS,
    _BEFORE_WORDS,
    EVENT_GLOB,
    OVERRIDES_FILE,
    _is_run_dir,
    _labels,
    _run_name,
    _with_overrides,
    find_runs,
    load_sweep,
    override_columns,
    read_overrides,
)

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


# ----------------------------------------------------------------------------------------------- studies

STUDY_STATUS = "study_run.json"
STUDY_KEYS = ("arm", "data.synthetic.fold", "seed")
HELDOUT_FILE = "heldout_metrics.json"


def load_study(root: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per run of an ablation study directory (`experiments/ablations.py`).

    Columns: run, arm, fold, seed, status (`done` | `running` | `failed` | `missing`), wall_s, warmup_s,
    steps, error, then `warmup_<metric>` (validation at the end of the warm-up), `before_<metric>` and
    `after_<metric>` (held-out test before/after RL: srcc_mean, plcc_mean, srcc_greedy, plcc_greedy, ...), and
    `rl_steps`, `rl_max_steps`, `rl_cut_by_max_time` (1.0 when the `trainer.max_time` safety cap stopped RL).
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
            for when, key in (("warmup", "warmup_final_val"), ("before", "before"), ("after", "after"), ("rl", "rl")):
                for k, v in (metrics.get(key) or {}).items():
                    if v is None or isinstance(v, int | float):  # null: a NaN metric (strict JSON)
                        row[f"{when}_{k}"] = float("nan") if v is None else float(v)
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no runs (folders holding {OVERRIDES_FILE.as_posix()}) below {root}")
    return pd.DataFrame(rows).sort_values(["arm", "fold", "seed"], kind="stable").reset_index(drop=True)


def arm_intervals(study: pd.DataFrame, columns: Sequence[str], order: Sequence[str] = ()) -> pd.DataFrame:
    """Per arm and column of a `load_study` frame: the mean over the arm's finished runs (its folds x seeds) with
    its 95% percentile-bootstrap CI (`prresq.stats.bootstrap_ci`), e.g. `after_srcc_mean`, `after_fail_mean`.

    Columns: arm, column, mean, low, high, n (finite values), nan (runs whose value is NaN, e.g. an SRCC of
    constant answers). Runs that did not finish are left out; arms follow `order`, then the rest sorted.
    """
    from prresq.stats import bootstrap_ci

    done = study[study["status"] == "done"]
    arms = [a for a in order if a in set(done["arm"])] + sorted(set(done["arm"]) - set(order))
    rows = []
    for arm in arms:
        sub = done[done["arm"] == arm]
        for col in columns:
            values = pd.to_numeric(sub[col], errors="coerce") if col in sub else pd.Series(dtype=float)
            ci = bootstrap_ci(values.dropna().to_numpy())
            rows.append({"arm": arm, "column": col, **ci._asdict(), "nan": int(len(sub) - ci.n)})
    return pd.DataFrame(rows, columns=["arm", "column", "mean", "low", "high", "n", "nan"])


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


def study_errors(root: str | os.PathLike[str], when: str = "after") -> pd.DataFrame:
    """Per-image answer errors (pred - mos) of every run of a study at `eval/<when>`, with the run's arm."""
    ev = load_eval(root)
    pred = ev.predictions
    if pred.empty:
        return pred.assign(error=pd.Series(dtype=float))
    pred = pred[pred["eval"] == f"eval/{when}"]
    return pred.assign(error=pred["pred"] - pred["mos"])


# ----------------------------------------------------------------------------------------------- defaults / CLI


def project_relative(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    """`path` relative to `root` when it lies inside it, else as given: committed results and docs name paths a
    reader's checkout has (`multirun/ablations`), never the machine they were made on."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else str(path)


def default_run_dir(repo_root: str | os.PathLike[str] = "..", contains: str = "events") -> Path:
    """The newest run or sweep below `<repo_root>` that holds what a notebook reads; `<repo_root>/outputs` if none.

    Candidates are the sweeps `multirun/<date>/<time>` and the runs `outputs/<task>/<date>_<time>` (what
    `make train` writes); `contains` is `events` (TensorBoard event files: the curves) or `eval` (eval CSVs:
    results.csv / predictions_<benchmark>.csv, e.g. a training's `eval/before` and `eval/after`). A newer folder
    without them (a sweep that wrote no eval) is passed over.
    """
    if contains not in ("events", "eval"):
        raise ValueError(f"contains={contains!r}: expected 'events' or 'eval'")
    root = Path(repo_root)
    candidates = [p for pattern in ("multirun/*/*", "outputs/*/*") for p in root.glob(pattern) if p.is_dir()]

    def holds(path: Path) -> bool:
        if contains == "eval":
            return bool(find_eval_dirs(path))
        return any(path.rglob(EVENT_GLOB))

    usable = [p for p in candidates if holds(p)]
    if usable:
        return max(usable, key=lambda p: (p.stat().st_mtime, str(p)))
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
