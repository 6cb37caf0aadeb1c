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

Modules: `events` (run discovery, Hydra overrides, the event-file reader, `load_run` / `load_sweep` /
`load_texts`), `runs` (eval CSVs, transforms, ablation studies, the command line), `plots` (figures).
Every name is re-exported here.

The notebooks `notebooks/reward_curves.ipynb` and `notebooks/score_distribution.ipynb` are built on this package.
"""

from prresq.analysis.events import (
    EVAL_PREDICTION_COLUMNS,
    EVAL_RESULT_COLUMNS,
    EVENT_GLOB,
    OVERRIDES_FILE,
    TEXT_TAG,
    TIDY_COLUMNS,
    event_files,
    find_runs,
    load_run,
    load_sweep,
    load_texts,
    override_columns,
    parse_markdown_table,
    parse_overrides,
    parse_value,
    read_overrides,
    varying_overrides,
)
from prresq.analysis.plots import plot_arm_intervals, plot_bands, plot_curves, plot_error_hists
from prresq.analysis.runs import (
    HELDOUT_FILE,
    STUDY_KEYS,
    STUDY_STATUS,
    EvalData,
    arm_intervals,
    bands,
    default_run_dir,
    find_eval_dirs,
    label_column,
    last_values,
    load_eval,
    load_study,
    main,
    pick_before_after,
    pivot_metric,
    project_relative,
    select_tags,
    smooth,
    study_errors,
)

__all__ = [
    "project_relative",
    "EVAL_PREDICTION_COLUMNS",
    "EVAL_RESULT_COLUMNS",
    "EVENT_GLOB",
    "HELDOUT_FILE",
    "OVERRIDES_FILE",
    "STUDY_KEYS",
    "STUDY_STATUS",
    "TEXT_TAG",
    "TIDY_COLUMNS",
    "EvalData",
    "arm_intervals",
    "bands",
    "default_run_dir",
    "event_files",
    "find_eval_dirs",
    "find_runs",
    "label_column",
    "last_values",
    "load_eval",
    "load_run",
    "load_study",
    "load_sweep",
    "load_texts",
    "main",
    "override_columns",
    "parse_markdown_table",
    "parse_overrides",
    "parse_value",
    "pick_before_after",
    "pivot_metric",
    "plot_arm_intervals",
    "plot_bands",
    "plot_curves",
    "plot_error_hists",
    "read_overrides",
    "select_tags",
    "smooth",
    "study_errors",
    "varying_overrides",
]
