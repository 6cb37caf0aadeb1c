"""`prresq.eval` on several real processes (torchrun, gloo on CPU), killed and resumed, and failing on one rank.

Every test starts real `python -m prresq.eval` processes on the tiny model and 7 items of the small
synthetic set, in batches of 2 (4 work units: 2 per rank with 2 processes, the last one short).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, UnidentifiedImageError

ROOT = Path(__file__).resolve().parents[1]
ITEMS = 7
TIMEOUT = 300


def eval_command(
    out: Path, model: Path, data: Path, *extra: str, processes: int = 1, torchrun: bool = True
) -> list[str]:
    """`python -m prresq.eval` (1 process), under torchrun, or with `devices=N` (it starts torchrun itself)."""
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        if processes > 1 and torchrun
        else [sys.executable]
    )
    if processes > 1 and not torchrun:
        extra = (*extra, f"devices={processes}")
    return [
        *launcher,
        "-m",
        "prresq.eval",
        f"hydra.run.dir={out}",
        f"paths.root_dir={out}",
        f"model.name_or_path={model}",
        f"benchmark.synthetic_iqa.root={data}",
        "benchmark.synthetic_iqa.options.labels=test.jsonl",
        "scoring.mode=sample",
        "scoring.n=2",
        "scoring.temperature=1.0",
        "scoring.max_new_tokens=4",
        "scoring.batch_size=2",
        f"limit={ITEMS}",
        "plots=false",
        *extra,
    ]


def run_eval(
    cmd: list[str], env_extra: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def predictions(out: Path) -> str:
    return (out / "eval" / "predictions_synthetic_iqa.csv").read_text()


def progress_lines(out: Path) -> list[dict]:
    folder = out / "eval" / "progress" / "synthetic_iqa"
    return [json.loads(line) for f in sorted(folder.glob("rank*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir, synthetic_iqa) -> Path:
    """An uninterrupted run on one process: the reference predictions."""
    out = tmp_path_factory.mktemp("eval1")
    done = run_eval(eval_command(out, tiny_model_dir, synthetic_iqa))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_two_processes_write_the_predictions_of_one(one_process, tmp_path, tiny_model_dir, synthetic_iqa):
    """Pins: `devices=2` starts 2 processes that split the work units (2 each, one rank prints nothing), and
    write the same predictions file byte for byte as 1 process (sampled answers at temperature 1: each batch
    is seeded by its item, not by its rank, batch or position), with the metrics table written once."""
    done = run_eval(eval_command(tmp_path, tiny_model_dir, synthetic_iqa, processes=2, torchrun=False))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes" in done.stdout and done.stdout.count("| synthetic_iqa |") == 1
    assert predictions(tmp_path) == predictions(one_process)
    reference = (one_process / "eval" / "results.csv").read_text()
    assert (tmp_path / "eval" / "results.csv").read_text() == reference
    by_rank = {f.name: len(f.read_text().splitlines()) for f in (tmp_path / "eval/progress/synthetic_iqa").glob("r*")}
    assert by_rank == {"rank0.jsonl": 2, "rank1.jsonl": 2}
    frame = pd.read_csv(tmp_path / "eval" / "predictions_synthetic_iqa.csv")
    assert len(frame) == ITEMS and frame["id"].is_unique and frame["status"].isin(["ok", "no_answer"]).all()


def test_a_killed_evaluation_resumes_without_rescoring(one_process, tmp_path, tiny_model_dir, synthetic_iqa):
    """Pins: a run killed (SIGKILL) after its 2nd batch leaves 2 batches on disk and no predictions file;
    the rerun into the same folder scores only the 2 missing batches (each batch is on disk once) and
    writes the uninterrupted run's predictions and results."""
    cmd = eval_command(tmp_path, tiny_model_dir, synthetic_iqa)
    killed = run_eval(cmd, {"PRRESQ_EVAL_KILL_AFTER": "2"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [e["unit"] for e in progress_lines(tmp_path)] == [0, 1]
    assert not (tmp_path / "eval" / "predictions_synthetic_iqa.csv").exists()
    resumed = run_eval(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming, 2 of 4 batches already scored" in resumed.stdout
    assert sorted(e["unit"] for e in progress_lines(tmp_path)) == [0, 1, 2, 3]
    assert predictions(tmp_path) == predictions(one_process)
    assert (tmp_path / "eval" / "results.csv").read_text() == (one_process / "eval" / "results.csv").read_text()


def test_a_resume_with_other_settings_refuses_naming_them(one_process, tmp_path, tiny_model_dir, synthetic_iqa):
    """Pins: a rerun into a folder whose predictions were made with other scoring settings and another prompt
    stops before the model loads, naming each difference; the predictions already there are untouched."""
    import shutil

    shutil.copytree(one_process / "eval", tmp_path / "eval")
    before = predictions(tmp_path)
    cmd = eval_command(tmp_path, tiny_model_dir, synthetic_iqa, "scoring.n=3", "prompt=tiny")
    done = run_eval(cmd)
    assert done.returncode != 0
    assert "cannot be resumed" in done.stderr and "scoring.n: 2 -> 3" in done.stderr
    assert 'prompt.name: "vq_r1" -> "tiny"' in done.stderr and "prompt.text:" in done.stderr
    assert "Loading" not in done.stderr and predictions(tmp_path) == before


def test_a_bad_file_on_one_rank_stops_both_with_one_message(tmp_path, tiny_model_dir, synthetic_iqa):
    """Pins: an unreadable image in the 2nd batch (rank 1's first) under on_bad_sample=raise stops both
    processes, before the timeout, each with the same message naming rank 1 and the file."""
    import shutil

    data = tmp_path / "set"
    shutil.copytree(synthetic_iqa, data)
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    image = rows[2]["image"]
    bad = data / (image[0] if isinstance(image, list) else image)
    assert bad.exists(), rows[2]
    bad.write_bytes(b"not an image")
    with pytest.raises(UnidentifiedImageError):  # the file really is unreadable
        Image.open(bad).load()
    done = run_eval(eval_command(tmp_path / "out", tiny_model_dir, data, processes=2), timeout=150)  # no hang
    assert done.returncode != 0
    messages = [line for line in done.stderr.splitlines() if "failed on rank 1 of 2" in line]
    assert len({m.split("failed on rank", 1)[1] for m in messages}) == 1, done.stderr[-3000:]
    assert len(messages) >= 2 and bad.name in messages[0], done.stderr[-3000:]


def test_a_multirun_over_benchmarks_runs_one_job_each_and_resumes(tmp_path, tiny_model_dir, synthetic_iqa):
    """Pins: `-m benchmark=kadid10k,spaq` (local launcher) runs one job per benchmark, each with its own
    predictions, progress and results; the same command rerun into the same sweep folder scores nothing
    again (every batch of both jobs is on disk) and writes the same files."""
    from prresq.data.mirrors import write_kadid10k, write_spaq

    data = tmp_path / "data"
    write_kadid10k(synthetic_iqa, data / "kadid10k")
    write_spaq(synthetic_iqa, data / "spaq")
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "prresq.eval",
        "-m",
        "benchmark=kadid10k,spaq",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data}",
        f"model.name_or_path={tiny_model_dir}",
        "scoring.mode=greedy",
        "scoring.max_new_tokens=4",
        "scoring.batch_size=2",
        "limit=3",
        "plots=false",
    ]
    first = run_eval(cmd)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = {name: sweep / str(num) / "eval" for num, name in enumerate(("kadid10k", "spaq"))}
    files = {name: (job / f"predictions_{name}.csv").read_text() for name, job in jobs.items()}
    for name, job in jobs.items():
        assert len(pd.read_csv(job / f"predictions_{name}.csv")) == 3
        assert [p.name for p in (job / "progress").iterdir()] == [name]
        assert f"| {name} |" in (job / "results.md").read_text()
    again = run_eval(cmd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("resuming, 2 of 2 batches already scored") == 2
    assert "the model is not loaded" in again.stdout and "the model is not loaded" not in first.stdout
    assert {name: (job / f"predictions_{name}.csv").read_text() for name, job in jobs.items()} == files


def test_infer_on_two_processes_writes_the_rows_of_one(tmp_path, tiny_model_dir, synthetic_iqa):
    """Pins: `prresq.infer` on 2 processes (torchrun) writes the same result file, row for row and in input
    order, as on one (sampled answers: each seeded by its file), with a corrupt file listed once."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(sorted((synthetic_iqa / "images").rglob("*.png"))[:6]):
        shutil.copy(image, folder / f"img{i}.png")
    (folder / "img3b.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    common = [
        "-m",
        "prresq.infer",
        f"input={folder}",
        f"paths.root_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "scoring.mode=sample",
        "scoring.n=2",
        "scoring.max_new_tokens=4",
        "scoring.batch_size=2",
    ]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    one = run_eval([sys.executable, *common, f"output={tmp_path / 'one.csv'}", f"hydra.run.dir={tmp_path / 'r1'}"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_eval([*launch, *common, f"output={tmp_path / 'two.csv'}", f"hydra.run.dir={tmp_path / 'r2'}"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 processes" in two.stdout
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    rows = pd.read_csv(tmp_path / "two.csv")
    assert len(rows) == 7 and rows["path"].is_unique and rows["status"].str.startswith("error").sum() == 1


def test_an_unreadable_label_file_stops_both_ranks_with_one_message(tmp_path, tiny_model_dir, synthetic_iqa):
    """Pins: a label file that is not UTF-8 text stops both processes, before the timeout, with one message
    naming the file (both ranks fail on it: rank 0's message, with the count of the others)."""
    import shutil

    data = tmp_path / "set"
    shutil.copytree(synthetic_iqa, data)
    (data / "test.jsonl").write_bytes(b"\xff\xfe not a label file \x00\x81")
    done = run_eval(eval_command(tmp_path / "out", tiny_model_dir, data, processes=2), timeout=150)  # no hang
    assert done.returncode != 0
    messages = [line for line in done.stderr.splitlines() if "failed on rank 0 of 2 (and on 1 other rank(s))" in line]
    assert len(messages) >= 2 and len(set(messages)) == 1, done.stderr[-3000:]
    assert "test.jsonl" in messages[0], messages[0]
