"""The papers' ablations on the tiny proxy: k-fold by photo x seeds, bootstrap CIs, one command.

    python experiments/ablations.py                 # the whole study (plan below), then the table and figures
    python experiments/ablations.py                 # again after a kill: finished runs are skipped
    python experiments/ablations.py --summary-only  # redraw table + figures from the study directory
    python experiments/ablations.py --smoke         # 1 fold x 1 seed x 2 arms, 20 RL steps, tiny warm-up

Arms (`conf/arm/*.yaml`, deltas on `experiment=tiny_synthetic`, the PRPO arms on `tiny_preresq`, all with the
    study's base warm-up `warmup=prior_sft` (to validation SRCC 0.5); nothing is tuned per arm): rl2r (default:
    RL2R fidelity + format, K = 8, mean-variance fidelity), k4, k6 (VisualQuality-R1 Table 3), prob_avg,
    fixed_var, binary (Table 4), prpo (PreResQ-R1 `tiny_preresq`), shuffled_mos (control: MOS permuted inside
    each batch before the reward), and the arms that take the PRPO-vs-RL2R gap apart (`GAP_PARTS`):
    prpo_format01 (PRPO, format reward weight 0.1), prpo_short (PRPO's rewards with the short five-number
    prompt `prompt=tiny_five`, no stage-1 prompt pool), rl2r_prpo_prompt (RL2R with PRPO's five-aspect prompt
    and answer; the fidelity reward reads the aspects' mean), and the levers of the RL2R learning target
    (`RL2R_LEVERS`): rl2r_warm (the warm-up runs to validation SRCC 0.7, not 0.5), rl2r_long (rl2r with 600
    RL updates: its file's `arm_steps`) and rl2r_warm_long (rl2r_warm with 600: `tiny_synthetic`'s recipe
    since this table; rl2r_warm_long - rl2r_long is the evidence), and prpo_warm_long (prpo on that recipe:
    warm-up to 0.7, 600 updates, set beside rl2r_warm_long). Only the three `_long` arms are not at `--steps`.
Units: folds 0, 1, 2 of `data.synthetic.num_folds=5` (2 test photos, 2 val photos, 6 train photos each)
    x seeds 0, 1 = 6 units per arm, 90 runs. One warm-up per fold and seed and per prompt and warm-up
    answer (`warmup_key`): the one-score arms share one (but rl2r_warm and rl2r_warm_long, warmed up longer:
    theirs), prpo, prpo_format01 and rl2r_prpo_prompt (PRPO's prompt and five-line answer) another,
    prpo_short its own, prpo_warm_long its own (PRPO's answer, to 0.7); cached under .cache/warmup and
    computed once under a lock. Its vision phase (a) trains on the prior photos only: it is cached per seed
    (.cache/warmup_vision, `prresq.warmup.cached_vision_phase`), so 2 of the 30 warm-ups train it and the
    others load it.
Scoring: held-out test answers are read by each prompt's answer rule (`scoring.answer_rule`: one-score
    arms the first number of the answer, five-aspect arms the mean of the last five numbers); an answer
    the rule cannot read is NaN, left out of SRCC/PLCC and counted: the table gives each arm's failure
    rates (`fail_greedy`, `fail_mean`) beside its SRCC.
Runs: Hydra multirun with the basic launcher, `--jobs 2` processes in parallel (each a sequential
    multirun over its share of the seeds), one thread each. Every run stops at the same
    `trainer.max_steps` (`--steps` updates for every arm but one whose file sets `arm_steps`;
    `trainer.max_time` is only a safety cap, and a run that hits it is flagged in the table).
Resume: a run is finished once its `study_run.json` says `done` (written after `heldout_metrics.json`);
    a re-run of the command skips those and restarts the others from scratch. An interrupted or killed
    (SIGTERM) command stops its jobs and still adds its wall time to `study_wall.json`.

Budget (measured by the study itself, experiments/results/ablations/README.md): the 48 runs of the 8
    one-score arms (rl2r_warm included) 85 min wall on this 2-core machine, a full CI run sharing its first
    25 min; a five-aspect arm's run costs about twice a one-score arm's, so the whole plan takes about 4.3 h
    (260 min measured over seven invocations, 90 runs). Vision phase about 2 min x 2 (28 loads), supervised
    phase 40-350 s per warm-up, a one-score run of STEPS = 300 updates with held-out scoring before and after
    2.5-6 min, of 600 updates on a cached warm-up 3.2-4 min (rl2r_long, rl2r_warm_long: 11-12 min per arm),
    a prpo_warm_long run with its own warm-up 11-15 min (39 min for the arm; quiet machine).
Outputs: the study directory (default `multirun/ablations`: one folder per `<arm>/fold<f>_seed<s>`,
the layout of prresq/CONTRACTS.md plus `eval/{before,after}/predictions_test.csv`) and
experiments/results/ablations/{table.md, runs.csv, results.json, arms.png (held-out SRCC and parse-failure
    rate per arm with CIs), curves.png, score_std.png, errors.png}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARMS = (
    "rl2r",
    "k4",
    "k6",
    "prob_avg",
    "fixed_var",
    "binary",
    "prpo",
    "prpo_format01",
    "prpo_short",
    "rl2r_prpo_prompt",
    "rl2r_warm",
    "rl2r_long",
    "rl2r_warm_long",
    "prpo_warm_long",
    "shuffled_mos",
)
DEFAULT_ARM = "rl2r"
FOLDS = (0, 1, 2)
SEEDS = (0, 1)
STEPS = 300
MAX_TIME = "00:00:15:00"
STATUS = "study_run.json"
METRICS = ("srcc_mean", "plcc_mean", "srcc_greedy", "plcc_greedy")
# held-out parse-failure rates (`prresq.scoring.correlations`): the share of test images whose greedy answer,
# or all of whose N sampled answers, the prompt's answer rule cannot read
FAILURES = ("fail_greedy", "fail_mean")
# (claim, A, B): the paper's claim is A >= B on held-out SRCC (mean of 8)
ORDERINGS = (
    ("VQ-R1 Table 3: K = 8 >= K = 6", "rl2r", "k6"),
    ("VQ-R1 Table 3: K = 6 >= K = 4", "k6", "k4"),
    ("VQ-R1 Table 3: K = 8 >= K = 4", "rl2r", "k4"),
    ("VQ-R1 Table 4: continuous (mean) >= binary", "rl2r", "binary"),
    ("VQ-R1 Table 4: mean-variance >= probability average", "rl2r", "prob_avg"),
    ("VQ-R1 Table 4: probability average >= fixed variance", "prob_avg", "fixed_var"),
    ("PreResQ-R1: PRPO >= RL2R", "prpo", "rl2r"),
    ("PreResQ-R1: PRPO >= RL2R, make train's recipe (warm-up to 0.7, 600 updates)", "prpo_warm_long", "rl2r_warm_long"),
    ("control: RL2R >= shuffled MOS", "rl2r", "shuffled_mos"),
)
# (what the difference measures, A, B): the PRPO-vs-RL2R gap taken apart, paired A - B on held-out SRCC.
# total = PRPO's rewards with its prompt (prpo - rl2r_prpo_prompt) + the prompt alone (rl2r_prpo_prompt - rl2r).
GAP_PARTS = (
    ("total: PRPO - RL2R", "prpo", "rl2r"),
    ("format weight 0.1 instead of 1 (PRPO)", "prpo_format01", "prpo"),
    ("short five-number prompt, no pool (PRPO rewards)", "prpo_short", "prpo"),
    ("PRPO's prompt alone (RL2R rewards)", "rl2r_prpo_prompt", "rl2r"),
    ("PRPO's rewards and schedule, same prompt", "prpo", "rl2r_prpo_prompt"),
)
# (lever arm, the arms it changes one thing of): the levers of the RL2R learning target (held-out SRCC >= 0.75),
# each reported with its gain over its own warm-up and paired against each base arm (and, in the arms table,
# against the default arm). rl2r_warm_long - rl2r_long is the longer warm-up at 600 updates (`make train`'s).
RL2R_LEVERS = (
    ("rl2r_warm", (DEFAULT_ARM,)),
    ("rl2r_long", (DEFAULT_ARM,)),
    ("rl2r_warm_long", ("rl2r_warm", "rl2r_long")),
)
# the study's fixed deltas on every run (no checkpoints or export: a killed run restarts from scratch)
# `warmup=prior_sft` (to val SRCC 0.5) is the study's base warm-up, the one every arm ran with: `tiny_synthetic`
# now picks `prior_sft_long` (0.7) from this study's own table (rl2r_warm_long - rl2r_long), and the arms stay
# deltas on the base they were measured on (rl2r_warm's 0.7 is set in its file, which Hydra merges after this
# choice). Naming it here also lets Hydra compose the sweep's base config (without the swept `+arm`) when
# overrides touch `warmup.*`.
COMMON = (
    "warmup=prior_sft",
    "data.synthetic.num_folds=5",
    "callbacks.checkpoint=null",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
    "export_dir=null",
)
SMOKE = (
    "data.synthetic.out_dir=${paths.data_dir}/synthetic_iqa_smoke",
    "data.synthetic.crops_per_photo=4",
    "data.val_subset=16",
    "warmup.vision_steps=20",
    "warmup.max_steps=20",
    "warmup.min_steps=10",
    "warmup.eval_every=10",
    "trainer.val_check_interval=10",
)

log = logging.getLogger("ablations")


# ----------------------------------------------------------------------------------------------- one run


def warmup_key(cfg: Any) -> str:
    """What makes two runs share a warm-up: model, warm-up recipe, prompt, data (fold) and seed."""
    from prresq.config import to_plain

    spec = {k: to_plain(cfg.get(k)) for k in ("model", "warmup", "prompt", "data")} | {"seed": cfg.seed}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_finished(run_dir: Path) -> bool:
    path = run_dir / STATUS
    try:
        return json.loads(path.read_text()).get("status") == "done"
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def _steps(run_dir: Path) -> int | None:
    import pandas as pd

    frames = [pd.read_csv(f) for f in sorted((run_dir / "csv").glob("version_*/metrics.csv"))]
    steps = [int(df["step"].max()) + 1 for df in frames if "step" in df and len(df)]
    return max(steps) if steps else None


def run_one(cfg: Any) -> dict[str, Any] | None:
    """One study run (a Hydra job): skip when finished, else warm up (shared, locked), train, score, record."""
    from prresq.config import to_plain
    from prresq.file_lock import file_lock
    from prresq.models import ensure_model_dir
    from prresq.train import run
    from prresq.warmup import run_warmup

    out = Path(cfg.paths.output_dir)
    if is_finished(out):
        log.info("%s: finished earlier, skipped", out)
        return None
    for name in ("tb", "csv", "checkpoints", "eval", "heldout_metrics.json", "heldout_metrics.md", STATUS):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    status: dict[str, Any] = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / STATUS).write_text(json.dumps(status))
    start = time.perf_counter()
    try:
        if cfg.warmup.get("enabled", False):
            model_dir = ensure_model_dir(cfg.model.name_or_path, to_plain(cfg.model.get("tiny")))
            with file_lock(Path(cfg.paths.cache_dir) / "warmup" / f".lock-{warmup_key(cfg)}"):
                run_warmup(cfg, model_dir)  # computed by the first run of this fold and seed, reused after
        status["warmup_s"] = round(time.perf_counter() - start, 1)
        metrics = run(cfg)
    except Exception as e:
        status.update(status="failed", error=f"{type(e).__name__}: {e}", wall_s=round(time.perf_counter() - start, 1))
        (out / STATUS).write_text(json.dumps(status))
        raise
    status.update(status="done", wall_s=round(time.perf_counter() - start, 1), steps=_steps(out))
    (out / STATUS).write_text(json.dumps(status))
    return metrics


def job_main() -> None:
    import hydra

    import prresq  # noqa: F401  registers the typed grpo/scoring groups (prresq.config) before Hydra composes

    hydra.main(version_base="1.3", config_path="../conf", config_name="train")(run_one)()


# ----------------------------------------------------------------------------------------------- the study


def shards(folds: Sequence[int], seeds: Sequence[int], arms: Sequence[str], jobs: int) -> list[dict[str, list]]:
    """Split the runs into `jobs` Cartesian blocks (by seed, else fold, else arm) for parallel multiruns."""
    dims = {"seed": list(seeds), "data.synthetic.fold": list(folds), "+arm": list(arms)}
    for key in dims:
        if len(dims[key]) >= jobs:
            parts = [dims[key][i::jobs] for i in range(jobs)]
            return [dims | {key: p} for p in parts if p]
    return [dims]


def launch(study: Path, blocks: list[dict[str, list]], overrides: Sequence[str]) -> list[int]:
    """Run one Hydra multirun per block in parallel; return their exit codes. Interrupted, it stops them."""
    logs = study / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PRRESQ_ROOT": str(ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    procs = []
    for i, block in enumerate(blocks):
        sweep = [f"{k}={','.join(map(str, v))}" for k, v in block.items()]  # arm varies fastest
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "job",
            "--multirun",
            f"hydra.sweep.dir={study}",
            "hydra.sweep.subdir=${hydra:runtime.choices.arm}/fold${data.synthetic.fold}_seed${seed}",
            *sweep,
            *overrides,
        ]
        with open(logs / f"shard{i}.log", "a") as f:
            f.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n")
            f.flush()
            procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
    try:
        return [p.wait() for p in procs]
    except BaseException:  # interrupted or killed (SIGTERM, see main): stop the jobs too, their runs re-run later
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        raise


def prepare(overrides: Sequence[str]) -> None:
    """Write the tiny model and the data set once, before the parallel jobs start."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from prresq.config import to_plain
    from prresq.models import ensure_model_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"+arm={DEFAULT_ARM}", f"paths.root_dir={ROOT}", *overrides])
    ensure_model_dir(cfg.model.name_or_path, to_plain(cfg.model.get("tiny")))
    instantiate(cfg.data, _recursive_=False).prepare_data()


# ----------------------------------------------------------------------------------------------- summary


def steps_override(steps: int, smoke: bool = False) -> str:
    """The study's `trainer.max_steps` override: `steps` for every arm, except an arm file that sets `arm_steps`
    (e.g. `conf/arm/rl2r_warm_long.yaml`); a smoke study gives every arm `steps`."""
    return f"trainer.max_steps={steps}" if smoke else f"trainer.max_steps=${{oc.select:arm_steps,{steps}}}"


def signed(d: Any, sep: str = " ") -> str:
    """A paired difference `+mean [+low, +high]` (a `prresq.stats.Interval`); `sep=" | "` for two table cells."""
    return f"{d.mean:+.3f}{sep}[{d.low:+.3f}, {d.high:+.3f}]"


def _sign(d: Any) -> str:
    """Where the paired CI of a difference lies: above 0, below 0, contains 0 (or why there is no CI)."""
    from prresq.stats import verdict

    v = verdict(d)
    return {"reproduced": "above 0", "contradicted": "below 0", "unresolved": "contains 0"}.get(v, v)


def warmup_target(study: Path, arm: str) -> float | None:
    """The validation SRCC an arm's warm-up ran to (`warmup.target_srcc` of its first run's `run_config.yaml`)."""
    import yaml

    from prresq.resume_config import RUN_CONFIG

    for config in sorted(study.glob(f"{arm}/*/{RUN_CONFIG}")):
        return (yaml.safe_load(config.read_text()).get("warmup") or {}).get("target_srcc")
    return None


def summarize(study: Path, out: Path, wall_s: float | None) -> str:
    """Table (Markdown), per-run rows (CSV/JSON) and figures from a study directory.

    A partial study (the command run for some arms, or killed) is summarised as far as it goes: an arm of
    `ARMS` without a finished run is listed as `not run` (no run folder) or `none finished`, and every
    comparison that needs it says `no data`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from prresq import analysis as A
    from prresq import strict_json
    from prresq.stats import Interval, bootstrap_ci, paired_bootstrap, verdict

    out.mkdir(parents=True, exist_ok=True)
    runs = A.load_study(study)
    runs.to_csv(out / "runs.csv", index=False)
    runs["steps"] = pd.to_numeric(runs["steps"], errors="coerce")
    done = runs[runs["status"] == "done"]
    lines = [f"Study directory: `{A.project_relative(study, ROOT)}`; {len(done)} of {len(runs)} runs finished."]
    if wall_s is not None:
        lines.append(f"Study wall time (all invocations of the command): {wall_s / 60:.1f} min.")
    planned = (
        done.dropna(subset=["rl_max_steps"]).groupby("arm")["rl_max_steps"].max() if "rl_max_steps" in done else []
    )
    if len(planned):
        usual = int(planned.mode().max())
        other = ", ".join(f"{arm} {int(n)}" for arm, n in planned.items() if n != usual)
        lines.append(
            f"RL updates per run (`trainer.max_steps`): {usual}"
            + (f"; {other}" if other else "")
            + " (every run reaches them unless `trainer.max_time` cut it: listed below)."
        )
    units = ["fold", "seed"]
    no_units = pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=units))

    def per_unit(arm: str, col: str) -> pd.Series:
        sub = done[done["arm"] == arm]
        return sub.set_index(units)[col] if col in sub and len(sub) else no_units

    def paired(a_arm: str, b_arm: str, col: str = "after_srcc_mean") -> Interval | None:
        """A - B over the units where both arms have a finite value (None when there is none)."""
        a, b = per_unit(a_arm, col).dropna(), per_unit(b_arm, col).dropna()
        both = a.index.intersection(b.index)
        return paired_bootstrap(a[both], b[both]) if len(both) else None

    columns = ("srcc_mean", "fail_mean", "srcc_greedy", "fail_greedy", "plcc_mean", "plcc_greedy")
    lines += [
        "",
        "Held-out test after RL: mean [95% bootstrap CI] over folds x seeds (n finished runs; NaN = SRCC/PLCC",
        "undefined, e.g. constant answers); `vs default` = paired difference from the default arm over the units",
        f"both finished (`{DEFAULT_ARM}`). Rows `warm-up (...)`: the same runs' test scores before RL.",
        "Each answer is read by its prompt's answer rule; one it cannot read is left out of SRCC/PLCC and counted:",
        "`fail_mean` = share of the test images whose N sampled answers all failed (`srcc_mean` scores the rest),",
        "`fail_greedy` = share whose greedy answer failed (`srcc_greedy`).",
        "",
        "| arm | n | " + " | ".join(columns) + " | srcc_mean vs default | plcc_mean vs default |",
        "|---|---|" + "---|" * len(columns) + "---|---|",
    ]
    results: dict[str, Any] = {"arms": {}, "orderings": [], "gap_parts": []}

    def cell(values: pd.Series) -> tuple[str, Any]:
        """'mean [low, high]' over the finite values, naming how many were NaN (e.g. constant answers)."""
        ci = bootstrap_ci(values.dropna())
        nan = len(values) - ci.n
        return (str(ci) if ci.n else "n/a") + (f" ({nan} NaN)" if nan else ""), ci._asdict()

    finished = set(done["arm"])
    warm_rows = [  # one row per warm-up (`warmup_key`): its arms' runs share the before-RL scores
        ("warm-up (RL2R answer", DEFAULT_ARM),
        ("warm-up (PRPO answer", "prpo"),
        ("warm-up (PRPO answer, short prompt", "prpo_short"),
        ("warm-up (RL2R answer", "rl2r_warm"),
        ("warm-up (PRPO answer", "prpo_warm_long"),
    ]
    arms = [a for a in ARMS if a in finished] + sorted(finished - set(ARMS))
    usual_target = warmup_target(study, DEFAULT_ARM)
    for label, arm in warm_rows:
        if arm in arms:
            target = warmup_target(study, arm)  # named when it is not the default arm's (e.g. rl2r_warm's 0.7)
            label += f", to val SRCC {target})" if target != usual_target else ")"
            cells = [cell(per_unit(arm, f"before_{m}")) for m in columns]
            n = len(per_unit(arm, "status"))
            lines.append(f"| {label} | {n} | " + " | ".join(c for c, _ in cells) + " | | |")
            results["arms"][label] = {m: c for m, (_, c) in zip(columns, cells)}
    for arm in arms:
        cells = [cell(per_unit(arm, f"after_{m}")) for m in columns]
        diffs = [paired(arm, DEFAULT_ARM, f"after_{m}") if arm != DEFAULT_ARM else None for m in METRICS[:2]]
        lines.append(
            f"| {arm} | {len(per_unit(arm, 'status'))} | "
            + " | ".join(c for c, _ in cells)
            + " | "
            + " | ".join("" if d is None else signed(d) for d in diffs)
            + " |"
        )
        results["arms"][arm] = {m: c for m, (_, c) in zip(columns, cells)}
    for arm in (a for a in ARMS if a not in finished):
        state = "none finished" if arm in set(runs["arm"]) else "not run"
        lines.append(f"| {arm} | 0 | {state} |" + " |" * (len(columns) + 1))
        results["arms"][arm] = {"status": state}
    lines += [
        "",
        "Orderings the papers claim (A >= B on held-out SRCC, mean of 8): paired A - B with its 95% CI;",
        "`reproduced` = CI above 0, `contradicted` = CI below 0, `unresolved` = CI contains 0 (no verdict from",
        "fewer than 3 paired units).",
        "",
        "| claim | A - B | 95% CI | n | verdict |",
        "|---|---|---|---|---|",
    ]
    for claim, a_arm, b_arm in ORDERINGS:
        d = paired(a_arm, b_arm)
        if d is None:
            lines.append(f"| {claim} | | | 0 | no data |")
            continue
        lines.append(f"| {claim} | {signed(d, ' | ')} | {d.n} | {verdict(d)} |")
        results["orderings"].append({"claim": claim, **d._asdict(), "verdict": verdict(d)})
    total = paired(*GAP_PARTS[0][1:])
    lines += [
        "",
        "The PRPO - RL2R gap taken apart (held-out SRCC, mean of 8): paired A - B over the units both arms",
        "finished, its 95% CI and where the CI lies; `of total` = A - B as a share of the total's mean. The last",
        "two rows add up to the total over their common units (the prompt alone + PRPO's rewards on that prompt).",
        "",
        "| difference | A | B | A - B | 95% CI | n | CI | of total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for what, a_arm, b_arm in GAP_PARTS:
        d = paired(a_arm, b_arm)
        if d is None:
            lines.append(f"| {what} | {a_arm} | {b_arm} | | | 0 | no data | |")
            continue
        share = f"{d.mean / total.mean:.0%}" if total is not None and total.mean != 0 else ""
        lines.append(f"| {what} | {a_arm} | {b_arm} | {signed(d, ' | ')} | {d.n} | {_sign(d)} | {share} |")
        results["gap_parts"].append({"what": what, "a": a_arm, "b": b_arm, **d._asdict(), "ci": _sign(d)})
    results["learning_target"] = {}
    for arm, bases in ((DEFAULT_ARM, ()), *RL2R_LEVERS):
        after, before = per_unit(arm, "after_srcc_mean").dropna(), per_unit(arm, "before_srcc_mean").dropna()
        both = after.index.intersection(before.index)
        if not len(both):
            continue
        gain, level = paired_bootstrap(after[both], before[both]), bootstrap_ci(after[both])
        target = "met" if level.mean >= 0.75 and gain.low > 0 else "not met"
        entry = {"after": level._asdict(), "gain": gain._asdict(), "verdict": target}
        line = (
            f"Learning target (`{arm}` test SRCC mean-of-8 >= 0.75, CI of the gain over its warm-up excluding 0): "
            f"{target}; after RL {level}, gain over the warm-up {signed(gain)}"
        )
        for base in bases:
            lever = paired(arm, base)
            if lever is not None:
                line += f"; vs `{base}` {signed(lever)} (n {lever.n})"
                entry.setdefault("vs_base", []).append({"base": base, **lever._asdict()})
        lines += ["", line + "."]
        results["learning_target"][arm] = entry
    flagged = done[done["rl_cut_by_max_time"] == 1] if "rl_cut_by_max_time" in done else done.iloc[:0]
    if len(flagged):
        lines.append(f"Runs cut by max_time: {', '.join(flagged['run'])}.")
    failed = runs[runs["status"] != "done"]
    if len(failed):
        lines.append("Unfinished runs: " + ", ".join(f"{r.run} ({r.status})" for r in failed.itertuples()) + ".")
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    results["wall_s"] = wall_s
    (out / "results.json").write_text(strict_json.dumps(results))  # a NaN metric -> null

    intervals = A.arm_intervals(runs, [f"after_{m}" for m in columns[:4]], order=ARMS)
    if len(intervals):  # held-out SRCC and parse-failure rate per arm, with their CIs
        fig = A.plot_arm_intervals(intervals)
        fig.savefig(out / "arms.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    try:
        scalars = A.load_sweep(study)
        fig = A.plot_bands(scalars, ["val/srcc", "train/reward_total_mean", "train/parse_fail_rate"], by="arm")
        fig.savefig(out / "curves.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fig = A.plot_bands(scalars, ["train/score_std_per_image"], by="arm", smooth=0.6)
        fig.savefig(out / "score_std.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fig = A.plot_error_hists(study, by="arm")
        fig.savefig(out / "errors.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    except FileNotFoundError as e:  # nothing logged yet: the table still says what is missing
        log.warning("figures skipped: %s", e)
    return table


# ----------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study-dir", default=str(ROOT / "multirun" / "ablations"))
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "ablations"))
    p.add_argument("--arms", nargs="+", default=list(ARMS))
    p.add_argument("--folds", nargs="+", type=int, default=list(FOLDS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument(
        "--steps",
        type=int,
        default=STEPS,
        help="RL steps of every run (trainer.max_steps) but an arm's own `arm_steps`",
    )
    p.add_argument("--max-time", default=MAX_TIME, help="safety cap per RL run (trainer.max_time)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="1 fold x 1 seed x rl2r + control, 20 steps, tiny warm-up")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    study, out = Path(a.study_dir).resolve(), Path(a.out).resolve()
    clock = study / "study_wall.json"
    spent = json.loads(clock.read_text())["wall_s"] if clock.is_file() else 0.0
    codes: list[int] = []
    if not a.summary_only:
        if a.smoke:
            a.folds, a.seeds, a.steps = a.folds[:1], a.seeds[:1], min(a.steps, 20)
            a.arms = [DEFAULT_ARM, "shuffled_mos"] if a.arms == list(ARMS) else a.arms
        unknown = [arm for arm in a.arms if not (ROOT / "conf" / "arm" / f"{arm}.yaml").is_file()]
        if unknown:
            raise SystemExit(f"unknown arm(s) {unknown}: each arm is a file conf/arm/<arm>.yaml")
        overrides = [
            *COMMON,
            steps_override(a.steps, a.smoke),
            f"trainer.max_time={a.max_time}",
            *(SMOKE if a.smoke else ()),
            *a.overrides,
        ]
        start = time.perf_counter()
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # a kill runs the finally
        try:
            prepare(overrides)
            codes = launch(study, shards(a.folds, a.seeds, a.arms, a.jobs), overrides)
        finally:  # the wall time of every invocation counts, a killed or interrupted one too
            spent += time.perf_counter() - start
            study.mkdir(parents=True, exist_ok=True)
            clock.write_text(json.dumps({"wall_s": round(spent, 1)}))
        if any(codes):
            log.warning("some jobs failed (exit codes %s): see %s/logs and the runs' study_run.json", codes, study)
    try:
        table = summarize(study, out, spent or None)
    except FileNotFoundError as e:  # no run folder yet (e.g. --summary-only before any run started)
        raise SystemExit(f"no study to summarise: {e}") from None
    print(table)
    if not a.summary_only and any(codes):
        raise SystemExit(f"runs failed (job exit codes {codes}); re-run the same command to retry only those")


if __name__ == "__main__":
    if sys.argv[1:2] == ["job"]:
        sys.argv.pop(1)
        job_main()
    else:
        main()
