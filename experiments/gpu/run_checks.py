"""The GPU validation kit's checks: run them, write `report.md`, `report.json` and `logs.tar.gz`.

    python experiments/gpu/run_checks.py --out OUT [--budget-s 450] [--jobs 6] [--only NAME,...]

Called by `experiments/gpu/run_kit.sh` (which installs the carried wheels first). Every check that
needs CUDA is skipped, and named in the report with the reason, where `torch.cuda.is_available()`
is False. The checks (README.md beside this file says what each proves):

| check | what passes |
|---|---|
| `imports` | prresq.train, prresq.module, hydra, submitit launcher, av, deepspeed, trl import |
| `pytest_gpu` | `pytest -m gpu`: no failure (the shared-prefix CUDA tests among them) |
| `train_*` | 20 steps each: every step's loss finite, grad norm > 0 and finite, reward logged and finite |
| `prefix_cuda` | shared prefix vs per-completion path on CUDA in bf16 (from `pytest_gpu`'s figures) |
| `deepspeed_clipping` | ZeRO-2, max_grad_norm=1e-10: max parameter change <= steps * lr * clip / eps, an unclipped control run moves further, and the logged norm (DeepSpeed's) is > 0 and finite |
| `resume` | a run killed after its step-4 checkpoint, resumed with `ckpt_path=last`: steps 4-7 log the same loss, KL, completion length and reward as the uninterrupted run |
| `bench_small` | `experiments/bench/bench_grpo_step.py` on CUDA, small model, prresq shared prefix vs TRL: step time, peak GPU memory |

Training runs are independent processes (`experiments/gpu/train_case.py`), run `--jobs` at a time
(the GPU has room for all of them); the benchmark runs alone afterwards, so its timings are its own.
`--cpu-dry-run` runs the training checks' code paths on CPU instead (strategy single, fp32, 8
steps, tiny model; DeepSpeed cases as `single`): a test of this script, not a GPU result.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PY = sys.executable
STEPS = 20
KILL_AT, RESUME_TO = 4, 8  # the resume check: killed when global_step reaches 4, resumed up to step 8
DRY_STEPS = RESUME_TO  # --cpu-dry-run: enough steps for the uninterrupted run to cover the resumed ones
GPU_ONLY_MODULES = ("deepspeed", "trl", "datasets")  # needed by the CUDA checks alone
CLIP, CLIP_STEPS, LR, ADAM_EPS = 1e-10, 3, 1e-4, 1e-8


def _small_spec() -> dict[str, int]:
    """The "small" model sizes, from the benchmark script (one place for them)."""
    spec = importlib.util.spec_from_file_location("bench_grpo_step", ROOT / "experiments/bench/bench_grpo_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.MODEL_SIZES["small"])


# Every kit run: the tiny experiment without warm-up, validation, export or time limit; a constant
# learning rate (so runs of different lengths take the same steps); a reward a random model earns.
BASE = [
    "experiment=tiny_synthetic",
    "warmup=none",
    "eval_before_after=false",
    "export_dir=null",
    "lr_scheduler.decay=constant",
    f"optim.lr={LR}",
    f"optim.eps={ADAM_EPS}",
    "trainer.max_time=null",
    "trainer.val_check_interval=null",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress",
    "grpo.log_completions_every=0",
    "+reward.length={name: kit_char_count, weight: 1.0}",
]
GPU = ["precision=bf16-mixed", "model.attn_implementation=sdpa"]
DETERMINISTIC = ["trainer.deterministic=warn", "callbacks.checkpoint.every_n_train_steps=2"]


def small_overrides() -> list[str]:
    sizes = [f"+model.tiny.{k}={v}" for k, v in _small_spec().items()]
    return ["model.name_or_path=${paths.cache_dir}/small-qwen2.5-vl", *sizes]


def _trainer_precision(overrides: list[str]) -> list[str]:
    return [o.replace("precision=", "trainer.precision=", 1) if o.startswith("precision=") else o for o in overrides]


# ----------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One `train_case.py` process."""

    name: str
    overrides: list[str]
    expect_rc: int = 0
    run_dir: str = ""  # directory under work/runs (default: the name); a resumed run reuses the killed one's
    checkpoints: list[str] = field(default_factory=list)  # in out_dir/checkpoints when the process ended
    rc: int | None = None
    wall_s: float = float("nan")
    out_dir: Path = Path()
    log: Path = Path()
    error: str = ""


@dataclass
class Kit:
    out: Path
    work: Path
    deadline: float
    cuda: bool
    dry: bool
    prepared: bool = False
    only: tuple[str, ...] = ()
    runs: dict[str, Run] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_process(kit: Kit, name: str, cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> Run:
    run = Run(name=name, overrides=[], log=kit.logs / f"{name}.log")
    t0 = time.monotonic()
    limit = max(1.0, min(timeout, kit.left()))
    with open(run.log, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=limit, env=env)
            run.rc = proc.returncode
        except subprocess.TimeoutExpired:
            run.rc, run.error = 124, f"timed out after {limit:.0f} s"
    run.wall_s = time.monotonic() - t0
    return run


def train(kit: Kit, run: Run, port: int) -> Run:
    """Run one training case (its overrides already final) into work/<name>."""
    run.out_dir = kit.work / "runs" / (run.run_dir or run.name)
    overrides = [*run.overrides, f"hydra.run.dir={run.out_dir}"]
    env = dict(os.environ, MASTER_PORT=str(port), CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONUNBUFFERED="1")
    done = run_process(kit, run.name, [PY, str(HERE / "train_case.py"), *overrides], timeout=300, env=env)
    run.rc, run.wall_s, run.log, run.error = done.rc, done.wall_s, done.log, done.error
    if (run.out_dir / "checkpoints").is_dir():
        run.checkpoints = sorted(p.name for p in (run.out_dir / "checkpoints").iterdir())
    if run.rc != run.expect_rc and not run.error:
        run.error = f"exit code {run.rc} (expected {run.expect_rc})"
    return run


def dry(overrides: list[str]) -> list[str]:
    """CPU stand-ins for `--cpu-dry-run`: single strategy, fp32, tiny model, DRY_STEPS steps."""
    out = []
    for o in overrides:
        if o.startswith("strategy=deepspeed"):
            o = "strategy=single"
        elif o.startswith("trainer.precision="):
            o = "trainer.precision=32-true"
        elif o.startswith("trainer.max_steps=") and int(o.split("=")[1]) == STEPS:
            o = f"trainer.max_steps={DRY_STEPS}"
        elif o.startswith(("model.name_or_path=", "+model.tiny.", "'model.lora")) or o.startswith("model.lora"):
            continue
        out.append(o)
    return [*out, "data.batch_size=2", "grpo.k=3", "grpo.max_new_tokens=8"]


def plan(kit: Kit) -> list[list[Run]]:
    """The training runs, as sequences (a sequence runs in order; sequences run side by side)."""

    def case(name: str, *extra: str, steps: int = STEPS, expect_rc: int = 0, run_dir: str = "") -> Run:
        overrides = _trainer_precision([*BASE, *extra, f"trainer.max_steps={steps}"])
        if kit.dry:
            overrides = dry(overrides)
        return Run(name=name, overrides=overrides, expect_rc=expect_rc, run_dir=run_dir)

    small = small_overrides()
    kill = f"+callbacks.kill={{_target_: kit_plugins.KillAtStep, step: {KILL_AT}}}"
    clip = ["strategy=deepspeed_zero2", "precision=32-true", "export_dir=${paths.output_dir}/export"]
    sequences = [
        [case("train_tiny_single_bf16_sdpa", *GPU, *DETERMINISTIC)],
        [case("train_small_single_bf16_sdpa", *GPU, *small)],
        [case("train_tiny_zero2", *GPU, "strategy=deepspeed_zero2")],
        [case("train_tiny_zero3", *GPU, "strategy=deepspeed_zero3")],
        [case("train_small_zero2", *GPU, *small, "strategy=deepspeed_zero2")],
        [case("train_small_zero3", *GPU, *small, "strategy=deepspeed_zero3")],
        [case("train_tiny_lora_single_bf16", *GPU, "model.lora={r:16}")],
        [case("clip_tiny_zero2", *clip, f"grpo.max_grad_norm={CLIP}", steps=CLIP_STEPS)],
        [case("clip_control_tiny_zero2", *clip, "grpo.max_grad_norm=0", steps=CLIP_STEPS)],
        [
            case("resume_killed", *GPU, *DETERMINISTIC, kill, steps=RESUME_TO, expect_rc=137),
            case("resume_resumed", *GPU, *DETERMINISTIC, "ckpt_path=last", steps=RESUME_TO, run_dir="resume_killed"),
        ],
    ]
    if kit.dry:  # LoRA and the small model are GPU-only configurations; the dry run keeps the code paths
        sequences = [s for s in sequences if s[0].name not in ("train_tiny_lora_single_bf16",)]
    if kit.only:
        sequences = [s for s in sequences if any(o in r.name for r in s for o in kit.only)]
    return sequences


def run_sequences(kit: Kit, sequences: list[list[Run]], jobs: int) -> None:
    def go(index: int, seq: list[Run]) -> None:
        for i, run in enumerate(seq):
            if not kit.prepared:
                run.error = "not started: prepare failed (see prepare.log)"
            elif i and seq[i - 1].error:
                run.error = f"not started: {seq[i - 1].name} failed"
            elif kit.left() < 20:
                run.error = "not started: time budget spent"
            else:
                train(kit, run, 29500 + 10 * index + i)

    for seq in sequences:
        for run in seq:
            kit.runs[run.name] = run
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda a: go(*a), enumerate(sequences)))


# ----------------------------------------------------------------------------- reading a run's metrics
def metrics(run_dir: Path) -> Any:
    """All CSV-logged rows of a run directory (every version: a resumed run writes a new one), by step."""
    import pandas as pd

    files = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    if not files:
        raise FileNotFoundError(f"no metrics.csv under {run_dir / 'csv'}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def step_rows(df: Any, column: str) -> Any:
    return df.dropna(subset=[column]).drop_duplicates("step", keep="last").set_index("step")[column]


def training_verdict(run: Run, steps: int) -> tuple[bool, str]:
    """Every step: loss finite, grad norm > 0 and finite, reward logged and finite."""
    if run.error:
        return False, run.error
    df = metrics(run.out_dir)
    loss, norm = step_rows(df, "train/loss"), step_rows(df, "train/grad_norm")
    reward = step_rows(df, "train/reward_total_mean")
    problems = []
    if len(loss) != steps:
        problems.append(f"{len(loss)} steps logged, expected {steps}")
    if not all(math.isfinite(x) for x in loss):
        problems.append("non-finite loss")
    bad_norm = [int(s) for s, x in norm.items() if not (math.isfinite(x) and x > 0)]
    if bad_norm or len(norm) != len(loss):
        problems.append(f"grad norm zero or non-finite at steps {bad_norm[:5]} ({len(norm)} logged)")
    if len(reward) != len(loss) or not all(math.isfinite(x) for x in reward):
        problems.append(f"reward logged at {len(reward)} of {len(loss)} steps or non-finite")
    figure = (
        f"{len(loss)} steps in {run.wall_s:.0f} s; loss {loss.min():.3g}..{loss.max():.3g}; "
        f"grad norm median {norm.median():.3g} (min {norm.min():.3g}); reward mean {reward.mean():.3g}"
    )
    return not problems, "; ".join([*problems, figure])


def max_param_change(export_dir: Path, initial_dir: Path) -> float:
    """max |theta_after - theta_before| over the tensors both safetensors checkpoints hold."""
    from safetensors.torch import load_file

    def load(d: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in sorted(d.glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    after, before = load(export_dir), load(initial_dir)
    common = [k for k in after if k in before and after[k].shape == before[k].shape]
    if not common:
        raise ValueError(f"no common tensors between {export_dir} and {initial_dir}")
    return max(float((after[k].double() - before[k].double()).abs().max()) for k in common)


# ----------------------------------------------------------------------------- checks
def record(kit: Kit, name: str, status: str, figure: str, needs_cuda: bool = True, log: str = "") -> None:
    kit.results.append({"check": name, "status": status, "figure": figure, "needs_cuda": needs_cuda, "log": log})
    print(f"[{status:>4}] {name}: {figure}", flush=True)


def check_imports(kit: Kit) -> None:
    modules = ["prresq.train", "prresq.module", "hydra", "omegaconf", "hydra_plugins.hydra_submitit_launcher"]
    modules += ["submitit", "av", "deepspeed", "trl", "peft", "datasets"]
    code = (
        "import importlib, json, sys\nout = {}\n"
        f"for m in {modules!r}:\n"
        "    try:\n        mod = importlib.import_module(m); out[m] = getattr(mod, '__version__', 'ok')\n"
        "    except Exception as e:\n        out[m] = 'FAILED: ' + type(e).__name__ + ': ' + str(e)[:200]\n"
        "import torch\nout['torch'] = torch.__version__ + ' cuda ' + str(torch.version.cuda)\n"
        "print('@@' + json.dumps(out))\n"
    )
    run = run_process(kit, "imports", [PY, "-c", code], timeout=180)
    text = run.log.read_text()
    found = [line for line in text.splitlines() if line.startswith("@@")]
    if not found:
        record(kit, "imports", "fail", f"no result (exit {run.rc})", needs_cuda=False, log=run.log.name)
        return
    versions = json.loads(found[-1][2:])
    failed = {m: v for m, v in versions.items() if str(v).startswith("FAILED")}
    kit.results.append({"check": "_versions", "versions": versions})
    figure = "; ".join(f"{m} {v}" for m, v in versions.items())
    if failed and not kit.cuda and set(failed) <= set(GPU_ONLY_MODULES):
        why = f"{', '.join(sorted(failed))} not installed here (needed by the CUDA checks alone; carried there); "
        record(kit, "imports", "skip", why + figure, needs_cuda=False, log=run.log.name)
        return
    record(kit, "imports", "fail" if failed else "pass", figure, needs_cuda=False, log=run.log.name)


def environment() -> dict[str, str]:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}"
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            env["driver"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = "unknown"
    else:
        env["gpu"] = "none (torch.cuda.is_available() is False)"
    for name in ("lightning", "transformers", "deepspeed", "trl", "peft", "hydra"):
        try:
            env[name] = __import__(name).__version__
        except Exception as e:  # noqa: BLE001 - reported, not raised
            env[name] = f"not importable ({type(e).__name__})"
    return env


def prepare(kit: Kit) -> bool:
    """Write the tiny and small model directories and the synthetic set once, before runs share them."""
    code = (
        "import sys; sys.path.insert(0, 'experiments/gpu')\n"
        "from hydra import compose, initialize_config_dir\n"
        "from hydra.utils import instantiate\n"
        "from prresq.models import ensure_model_dir\n"
        "import kit_plugins  # noqa\n"
        f"for extra in ([], {small_overrides()!r}):\n"
        "    with initialize_config_dir(config_dir='" + str(ROOT / "conf") + "', version_base='1.3'):\n"
        f"        cfg = compose('train', overrides={BASE!r} + extra + ['paths.root_dir={kit.work}'])\n"
        "    print(ensure_model_dir(cfg.model.name_or_path, dict(cfg.model.tiny)))\n"
        "    instantiate(cfg.data, _recursive_=False).prepare_data()\n"
    )
    run = run_process(kit, "prepare", [PY, "-c", code], timeout=240)
    status = "pass" if run.rc == 0 else "fail"
    record(kit, "prepare", status, f"models + synthetic set in {run.wall_s:.0f} s", needs_cuda=False, log=run.log.name)
    return run.rc == 0


def check_pytest_gpu(kit: Kit) -> dict[str, dict[str, str]]:
    """`pytest -m gpu`; returns each test's recorded properties (figures) by test name."""
    xml = kit.work / "pytest_gpu.xml"
    cmd = [PY, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", f"--junitxml={xml}", "tests"]
    run = run_process(kit, "pytest_gpu", cmd, timeout=300)
    if not xml.exists():
        record(kit, "pytest_gpu", "fail", f"no junit report (exit {run.rc}; {run.error})", False, run.log.name)
        return {}
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    props: dict[str, dict[str, str]] = {}
    skip_reasons = set()
    for case in suite.iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        props[name] = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = tag
                if tag == "skipped":
                    skip_reasons.add((node.get("message") or "").split(":")[-1].strip()[:80])
        props[name]["outcome"] = outcome
    ok = run.rc in (0, 5) and counts["failures"] == counts["errors"] == 0  # 5: nothing collected
    figure = f"{passed} passed, {counts['skipped']} skipped, {counts['failures'] + counts['errors']} failed"
    if not kit.cuda and skip_reasons:
        figure += f" (skip reasons: {'; '.join(sorted(skip_reasons))[:300]})"
    record(kit, "pytest_gpu", "pass" if ok else "fail", figure, needs_cuda=False, log=run.log.name)
    return props


def check_prefix(kit: Kit, props: dict[str, dict[str, str]]) -> None:
    cases = {n: p for n, p in props.items() if n.startswith("test_gpu_prefix::")}
    if not cases:
        record(kit, "prefix_cuda", "fail", "no test_gpu_prefix results in pytest_gpu")
        return
    if all(p["outcome"] == "skipped" for p in cases.values()):
        record(kit, "prefix_cuda", "skip", "needs CUDA: tests/test_gpu_prefix.py skipped")
        return
    bad = [n for n, p in cases.items() if p["outcome"] != "passed"]
    figures = "; ".join(f"{k}={v}" for p in cases.values() for k, v in p.items() if k != "outcome")
    record(kit, "prefix_cuda", "fail" if bad else "pass", (f"failed: {bad}; " if bad else "") + figures)


def check_training(kit: Kit) -> None:
    names = [n for n in kit.runs if n.startswith("train_")]
    steps = DRY_STEPS if kit.dry else STEPS
    for name in names:
        run = kit.runs[name]
        try:
            ok, figure = training_verdict(run, steps)
        except Exception as e:  # noqa: BLE001 - a broken run is a failed check, with its reason
            ok, figure = False, f"{run.error or ''} {type(e).__name__}: {e}".strip()
        record(kit, name, "pass" if ok else "fail", figure, log=run.log.name)


def check_clipping(kit: Kit) -> None:
    """ZeRO-2, max_grad_norm=CLIP: Adam's step is lr * m_hat / (sqrt(v_hat) + eps) with |m_hat| <= max |g| <= CLIP
    per element, so no parameter moves more than CLIP_STEPS * lr * CLIP / eps; the unclipped control must."""
    if "clip_tiny_zero2" not in kit.runs:
        return
    clipped, control = kit.runs["clip_tiny_zero2"], kit.runs["clip_control_tiny_zero2"]
    try:
        for run in (clipped, control):
            if run.error:
                raise RuntimeError(f"{run.name}: {run.error}")
        # paths.cache_dir under PRRESQ_ROOT; one folder per tiny spec below it (prresq.models.tiny_model_path)
        (initial,) = {p.parent for p in (kit.work / ".cache" / "tiny-qwen2.5-vl").glob("*/config.json")}
        moved = max_param_change(clipped.out_dir / "export", initial)
        moved_control = max_param_change(control.out_dir / "export", initial)
        norm = step_rows(metrics(clipped.out_dir), "train/grad_norm")
        steps = len(norm)
        bound = steps * LR * CLIP / ADAM_EPS
        norm_ok = len(norm) == CLIP_STEPS and all(math.isfinite(x) and x > 0 for x in norm)
        ok = moved <= bound * 1.01 and moved_control > bound and norm_ok
        figure = (
            f"max |dtheta| {moved:.3g} <= bound {bound:.3g} ({steps} steps x lr {LR:g} x clip {CLIP:g} / eps "
            f"{ADAM_EPS:g}); unclipped control {moved_control:.3g}; logged grad norm {norm.min():.3g}..{norm.max():.3g}"
        )
        if not norm_ok:
            figure = "logged grad norm zero or non-finite (is it DeepSpeed's?); " + figure
    except Exception as e:  # noqa: BLE001
        ok, figure = False, f"{type(e).__name__}: {e}"
    record(kit, "deepspeed_clipping", "pass" if ok else "fail", figure, log=f"{clipped.log.name}, {control.log.name}")


def check_resume(kit: Kit) -> None:
    if "resume_killed" not in kit.runs:
        return
    killed, resumed = kit.runs["resume_killed"], kit.runs["resume_resumed"]
    reference = kit.runs.get("train_tiny_single_bf16_sdpa") or Run("train_tiny_single_bf16_sdpa", [], error="not run")
    columns = ("train/loss", "train/kl", "train/completion_len", "train/reward_total_mean")
    try:
        for run in (killed, resumed, reference):
            if run.error:
                raise RuntimeError(f"{run.name}: {run.error}")
        import pandas as pd

        ckpts = killed.checkpoints
        versions = sorted((resumed.out_dir / "csv").glob("version_*/metrics.csv"), key=lambda f: f.stat().st_mtime)
        new = pd.read_csv(versions[-1])  # the resumed process's own file
        ref = metrics(reference.out_dir)
        worst, compared = 0.0, 0
        for column in columns:
            a, b = step_rows(new, column), step_rows(ref, column)
            steps = [s for s in a.index if s in b.index]
            if len(a) != RESUME_TO - KILL_AT or len(steps) != len(a):
                raise AssertionError(f"{column}: resumed steps {list(a.index)}, reference {list(b.index)[:10]}")
            for s in steps:
                rel = abs(a[s] - b[s]) / max(abs(b[s]), 1e-6)
                worst, compared = max(worst, rel), compared + 1
        ok = worst <= 1e-3
        figure = (
            f"killed (exit {killed.rc}) with {ckpts}; resumed steps {list(step_rows(new, 'train/loss').index)}: "
            f"{compared} values of {', '.join(columns)} vs the uninterrupted run, max relative difference {worst:.2g}"
        )
    except Exception as e:  # noqa: BLE001
        ok, figure = False, f"{type(e).__name__}: {e}"
    record(kit, "resume", "pass" if ok else "fail", figure, log=f"{killed.log.name}, {resumed.log.name}")


def check_bench(kit: Kit, steps: int) -> None:
    if kit.left() < 90:
        record(kit, "bench_small", "fail", f"not run: {kit.left():.0f} s of the time budget left")
        return
    out = kit.work / "bench.json"
    cmd = [PY, str(ROOT / "experiments/bench/bench_grpo_step.py"), "--device", "cuda", "--model", "small"]
    cmd += ["--only", "shared,trl", "--steps", str(steps), "--json", str(out)]
    cmd += ["--model-dir", str(kit.work / ".cache" / "small-qwen2.5-vl")]  # written by prepare
    run = run_process(kit, "bench_small", cmd, timeout=kit.left() - 5)
    if run.rc != 0 or not out.exists():
        record(kit, "bench_small", "fail", f"exit {run.rc} {run.error}".strip(), log=run.log.name)
        return
    res = json.loads(out.read_text())
    parts = [
        f"{n}: median step {r['median_step_s']:.2f} s, peak GPU memory {r['peak_gpu_mib']:.0f} MiB"
        for n, r in res["workers"].items()
    ]
    if "shared" in res["workers"] and "trl" in res["workers"]:
        s, t = res["workers"]["shared"], res["workers"]["trl"]
        parts.append(f"shared/TRL: time {s['median_step_s'] / t['median_step_s']:.2f}x, ")
        parts[-1] += f"memory {s['peak_gpu_mib'] / t['peak_gpu_mib']:.2f}x"
    record(kit, "bench_small", "pass", "; ".join(parts) + f" ({res['setting']})", log=run.log.name)


# ----------------------------------------------------------------------------- report
def write_report(kit: Kit, env: dict[str, str], started: str, wall_s: float) -> None:
    rows = [r for r in kit.results if not r["check"].startswith("_")]
    lines = [
        "# prresq GPU validation kit",
        "",
        f"Run {started} UTC, {wall_s:.0f} s wall time. " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
        "",
        "| check | result | figure | log |",
        "|---|---|---|---|",
    ]
    for r in rows:
        figure = r["figure"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['check']} | {r['status']} | {figure} | {r['log']} |")
    skipped = [r["check"] for r in rows if r["status"] == "skip"]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "skip")}
    lines += ["", f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped."]
    if skipped:
        lines.append(f"Skipped (need CUDA): {', '.join(skipped)}.")
    if kit.dry:
        lines.append(
            f"CPU dry run: the training checks ran on CPU stand-ins (strategy single, fp32, {DRY_STEPS} steps, "
            "tiny model); not GPU results."
        )
    (kit.out / "report.md").write_text("\n".join(lines) + "\n")
    (kit.out / "report.json").write_text(json.dumps({"environment": env, "results": kit.results}, indent=2))
    with tarfile.open(kit.out / "logs.tar.gz", "w:gz") as tar:
        tar.add(kit.logs, arcname="logs")
        for run in kit.runs.values():  # each run's metrics, for a second look
            for f in sorted((run.out_dir / "csv").glob("version_*/metrics.csv")) if run.out_dir.name else []:
                tar.add(f, arcname=f"metrics/{run.name}/{f.parent.name}.csv")
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="report.md, report.json, logs.tar.gz")
    parser.add_argument("--work", type=Path, default=Path("/tmp/prresq-gpu-kit"), help="runs, caches, logs")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting work after this long")
    parser.add_argument("--jobs", type=int, default=6, help="training runs at a time")
    parser.add_argument("--bench-steps", type=int, default=3)
    parser.add_argument("--cpu-dry-run", action="store_true", help="run the training checks on CPU (a self-test)")
    parser.add_argument("--only", default="", help="comma-separated parts of training run names (e.g. clip,resume)")
    args = parser.parse_args()

    import torch

    t0 = time.monotonic()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    cuda = torch.cuda.is_available()
    shutil.rmtree(args.work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    kit = Kit(out=args.out, work=args.work, deadline=t0 + args.budget_s, cuda=cuda, dry=args.cpu_dry_run and not cuda)
    kit.only = tuple(o for o in args.only.split(",") if o)
    kit.logs.mkdir(parents=True)
    os.environ["PRRESQ_ROOT"] = str(kit.work)  # caches (models, synthetic set) under the work folder
    env = environment()
    print(json.dumps(env), flush=True)

    check_imports(kit)
    kit.prepared = prepare(kit)
    train_checks: list[tuple[str, Callable[[], None]]] = []
    if cuda or kit.dry:
        with ThreadPoolExecutor(max_workers=1) as side:  # pytest beside the training runs
            props_future = side.submit(check_pytest_gpu, kit)
            run_sequences(kit, plan(kit), args.jobs)
            props = props_future.result()
        check_training(kit)
        train_checks = [("deepspeed_clipping", lambda: check_clipping(kit)), ("resume", lambda: check_resume(kit))]
    else:
        props = check_pytest_gpu(kit)
    check_prefix(kit, props)
    reason = "needs CUDA: torch.cuda.is_available() is False"
    if train_checks:
        for _, fn in train_checks:
            fn()
    else:
        for run in plan(kit):
            for r in run:
                if r.name.startswith("train_"):
                    record(kit, r.name, "skip", reason)
        for name in ("deepspeed_clipping", "resume"):
            record(kit, name, "skip", reason)
    if cuda:
        check_bench(kit, args.bench_steps)
    else:
        record(kit, "bench_small", "skip", reason)
    write_report(kit, env, started, time.monotonic() - t0)
    sys.exit(1 if any(r.get("status") == "fail" for r in kit.results) else 0)


if __name__ == "__main__":
    main()
