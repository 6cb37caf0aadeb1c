"""The study command end to end on a real tiny study (2 arms x 1 fold x 1 seed, 2 parallel Hydra multiruns of
4 RL steps each), its resumability, and the analysis notebooks executed headless (nbclient, the venv's `python3`
kernel) on that study's directory. The notebooks are stored without outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from prresq import analysis as A

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TINY = (  # a study in seconds: 1 crop per photo (10 test images), K = 2, 2 scoring samples, 2-step warm-up
    "data.synthetic.crops_per_photo=1",
    "data.batch_size=4",
    "data.eval_batch_size=10",
    "data.val_subset=8",
    "grpo.k=2",
    "scoring.n=2",
    "grpo.log_completions_every=2",
    "warmup.vision_steps=2",
    "warmup.vision_batch_size=8",
    "warmup.max_steps=2",
    "warmup.min_steps=1",
    "warmup.eval_every=1",
    "trainer.val_check_interval=2",
)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _study_command(base: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "experiments" / "ablations.py"),
        "--smoke",
        "--arms",
        "rl2r",
        "shuffled_mos",
        "--steps",
        "4",
        "--jobs",
        "2",
        "--study-dir",
        str(base / "study"),
        "--out",
        str(base / "results"),
        f"paths.cache_dir={base / 'cache'}",
        *TINY,
    ]


def _run_study(base: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(_study_command(base), cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("study")
    _run_study(base)
    return base


def _execute(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key in ("PRRESQ_RUN_DIR", "PRRESQ_EVAL_BEFORE", "PRRESQ_EVAL_AFTER", "PRRESQ_HUE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> tuple[int, str]:
    images, text = 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            images += "image/png" in out.get("data", {})
            text.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
    return images, "\n".join(text)


@pytest.mark.parametrize("name", ["reward_curves.ipynb", "score_distribution.ipynb"])
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    """The committed notebooks carry no outputs, one env-driven parameters cell and no machine paths."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is None and not c.outputs for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "os.environ" in params[0].source
    assert "/work" not in "".join(c.source for c in nb.cells) and "/tmp" not in "".join(c.source for c in code)


@pytest.mark.slow
def test_study_command_runs_every_arm_in_two_jobs_and_writes_the_table(study: Path) -> None:
    """One command: 2 parallel multiruns, every run trained to the same step, one shared warm-up, held-out
    predictions before and after RL, the table with the control's ordering line, and the figures."""
    runs = A.load_study(study / "study")
    assert sorted(runs["arm"]) == ["rl2r", "shuffled_mos"]
    assert list(runs["status"]) == ["done", "done"] and list(runs["steps"]) == [4, 4]
    # SRCC of a 4-step tiny model may be NaN (constant answers); the parse-failure rates are always numbers
    assert {"after_srcc_mean", "before_srcc_mean", "warmup_srcc_mean"} <= set(runs.columns)
    assert runs[["after_fail_mean", "before_fail_mean", "warmup_fail_mean"]].notna().all().all()
    assert len(list((study / "study" / "logs").glob("shard*.log"))) == 2
    warmups = [p for p in (study / "cache" / "warmup").iterdir() if p.is_dir()]
    assert len(warmups) == 1  # both arms start from the same fold-0, seed-0 warm-up
    for run in ("rl2r/fold0_seed0", "shuffled_mos/fold0_seed0"):
        for when in ("before", "after"):
            pred = pd.read_csv(study / "study" / run / "eval" / when / "predictions_test.csv")
            assert len(pred) == 10 and pred["mos"].between(1, 5).all()
    table = (study / "results" / "table.md").read_text()
    assert "| rl2r | 1 |" in table and "| shuffled_mos | 1 |" in table and "control: RL2R >= shuffled MOS" in table
    assert "warm-up (RL2R answer)" in table and "2 of 2 runs finished" in table
    # each arm's parse-failure rates beside its SRCC: one unit, so mean [CI] = v [v, v] of its heldout_metrics.json
    header = next(line for line in table.splitlines() if line.startswith("| arm | n |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    # strict JSON: a NaN metric (a 4-step model may answer constants) is written as null, never as bare NaN
    results = json.loads((study / "results" / "results.json").read_text(), parse_constant=_not_json)
    for arm in ("rl2r", "shuffled_mos"):
        after = json.loads((study / "study" / arm / "fold0_seed0" / "heldout_metrics.json").read_text())["after"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {arm} | 1 |"))
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
        for rate in ("fail_mean", "fail_greedy"):
            v = after[rate]
            assert cells[rate] == f"{v:.3f} [{v:.3f}, {v:.3f}]", (arm, rate, cells)
            assert results["arms"][arm][rate] == {"mean": v, "low": v, "high": v, "n": 1}
    # a partial study: the plan's other arms are listed, not dropped, and the gap table says what it lacks
    assert "| prpo | 0 | not run |" in table and "| rl2r_prpo_prompt | 0 | not run |" in table
    assert results["arms"]["prpo_short"] == {"status": "not run"}
    assert "| PRPO's prompt alone (RL2R rewards) | rl2r_prpo_prompt | rl2r | | | 0 | no data | |" in table
    figures = ("arms.png", "curves.png", "score_std.png", "errors.png")
    assert all((study / "results" / f).stat().st_size > 0 for f in figures)


@pytest.mark.slow
def test_summary_flags_only_runs_that_max_time_cut(study: Path, tmp_path: Path) -> None:
    """A run that reached its own, longer `trainer.max_steps` (an arm file's `arm_steps`) is not cut; one that
    `trainer.max_time` stopped is listed as cut, by its held-out record, and the updates line names both plans.
    Before, any run with fewer steps than the study's longest run was listed as cut."""
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study / "study", copy)
    for run, rl in (
        ("rl2r", {"steps": 8, "max_steps": 8, "cut_by_max_time": False}),
        ("shuffled_mos", {"steps": 3, "max_steps": 4, "cut_by_max_time": True}),
    ):
        held = copy / run / "fold0_seed0" / "heldout_metrics.json"
        held.write_text(json.dumps(json.loads(held.read_text()) | {"rl": rl}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "experiments" / "ablations.py"), "--summary-only"]
    command += ["--study-dir", str(copy), "--out", str(tmp_path / "results")]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "results" / "table.md").read_text().splitlines()
    assert [line for line in lines if line.startswith("Runs cut by max_time")] == [
        "Runs cut by max_time: shuffled_mos/fold0_seed0."
    ]
    updates = next(line for line in lines if line.startswith("RL updates per run"))
    assert "8" in updates and "shuffled_mos 4" in updates, updates


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_reruns_unfinished_ones(study: Path) -> None:
    """After a kill (a run left `running`), the same command re-runs only that run; the finished one is skipped."""
    done_status = study / "study" / "rl2r" / "fold0_seed0" / "study_run.json"
    killed = study / "study" / "shuffled_mos" / "fold0_seed0"
    before = done_status.read_text(), done_status.stat().st_mtime_ns
    (killed / "study_run.json").write_text(json.dumps({"status": "running", "started": "killed"}))
    (killed / "heldout_metrics.json").unlink()
    _run_study(study)
    assert (done_status.read_text(), done_status.stat().st_mtime_ns) == before
    status = json.loads((killed / "study_run.json").read_text())
    assert status["status"] == "done" and status["started"] != "killed" and status["steps"] == 4
    logs = "".join(p.read_text() for p in (study / "study" / "logs").glob("shard*.log"))
    assert "finished earlier, skipped" in logs


def _processes_naming(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:  # the process ended while being read
            continue
    return pids


@pytest.mark.slow
def test_killed_study_stops_its_jobs_and_keeps_its_wall_time(tmp_path: Path) -> None:
    """SIGTERM to the study command while its jobs run: the jobs are stopped with it (no orphan keeps training)
    and the invocation's wall time is still added to `study_wall.json`. Before, both were lost."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _study_command(tmp_path), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    shard_log = tmp_path / "study" / "logs" / "shard0.log"
    deadline = time.monotonic() + 300
    while not shard_log.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shard_log.is_file(), "the study never launched its jobs"
    time.sleep(3)
    jobs = [pid for pid in _processes_naming(str(tmp_path / "study")) if pid != proc.pid]
    assert jobs, "no job process found while the study ran"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert _processes_naming(str(tmp_path / "study")) == []
    wall = json.loads((tmp_path / "study" / "study_wall.json").read_text())["wall_s"]
    assert wall >= 3


@pytest.mark.slow
def test_reward_curves_notebook_on_the_study(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The curves notebook reads the study directory: per-arm bands (validation, reward, score std), per-arm
    held-out SRCC and parse-failure rates with CIs, and the usual per-tag panels, both arms named."""
    nb = _execute("reward_curves.ipynb", {"PRRESQ_RUN_DIR": str(study / "study")}, monkeypatch)
    images, text = _outputs(nb)
    assert "per-arm bands skipped" not in text
    assert "2 run(s)" in text and "rl2r" in text and "shuffled_mos" in text
    assert "after_fail_mean" in text and "after_fail_greedy" in text  # per-arm failure rates beside the SRCC
    assert images >= 10  # 2 band figures, SRCC and failure rate per arm, the per-tag groups that were logged


@pytest.mark.slow
def test_score_distribution_notebook_on_the_study(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The distribution notebook reads the study directory: error histograms per arm (before/after RL) and the
    per-benchmark panels of every eval folder found."""
    nb = _execute("score_distribution.ipynb", {"PRRESQ_RUN_DIR": str(study / "study")}, monkeypatch)
    images, text = _outputs(nb)
    assert "per-arm errors skipped" not in text
    assert images == 3  # errors and answers per benchmark, errors per arm
    assert "after_srcc_mean" in text


@pytest.mark.slow
def test_both_notebooks_run_by_default_after_a_training_run(tmp_path: Path) -> None:
    """Pins: after a (tiny) `make train`, the notebooks' own command, `jupyter execute notebooks/<name>.ipynb
    --output=<name>_run` (nbclient, in the dev extra; nbconvert is not), runs both with no setting: they read the
    newest run holding what they plot, not a newer sweep without it, and the distribution notebook shows the
    training's before/after columns (srcc_greedy, srcc_mean). Before, it picked the newest multirun without eval
    output and failed, and the instructions named nbconvert."""
    import shutil

    from conftest import train_like_make_train

    run_dir = train_like_make_train(
        tmp_path,
        ["trainer.max_steps=2", "trainer.val_check_interval=1", "data.val_subset=4", "grpo.log_completions_every=1"],
    )
    newer_sweep = tmp_path / "multirun" / "2026-01-02" / "00-00-00" / "0" / ".hydra"
    newer_sweep.mkdir(parents=True)
    (newer_sweep / "overrides.yaml").write_text("- grpo.k=4\n")
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRRESQ_")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    jupyter = str(Path(sys.executable).parent / "jupyter")
    for name in ("reward_curves", "score_distribution"):
        done = subprocess.run(
            [jupyter, "execute", f"notebooks/{name}.ipynb", f"--output={name}_run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    images, text = _outputs(nbformat.read(tmp_path / "notebooks" / "reward_curves_run.ipynb", as_version=4))
    assert f"reading {run_dir.resolve()}" in text and "1 run(s)" in text and images >= 4
    images, text = _outputs(nbformat.read(tmp_path / "notebooks" / "score_distribution_run.ipynb", as_version=4))
    assert f"before: {(run_dir / 'eval' / 'before').resolve()}" in text
    assert f"after: {(run_dir / 'eval' / 'after').resolve()}" in text
    assert "srcc_greedy" in text and "srcc_mean" in text and "no eval/results.csv found" not in text
    assert images == 2  # errors and answers for the test split
