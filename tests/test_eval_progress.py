"""`prresq.eval_progress`: the per-benchmark resume state (a cut last line, a damaged file, differing settings)
and `prresq.eval_ranks`' work units and ranks (torchrun's or SLURM's variables)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from prresq.eval_progress import BenchmarkProgress, SettingsMismatch, settings_differences
from prresq.eval_ranks import launch_processes, rank_env, work_units

SETTINGS = {"checkpoint": "run/export", "scoring": {"n": 8, "temperature": 1.0}, "prompt": {"text": "Rate it"}}


def test_a_line_cut_by_a_kill_is_dropped_and_its_unit_scored_again(tmp_path, caplog):
    progress = BenchmarkProgress(tmp_path, "kadid10k", SETTINGS)
    progress.start()
    progress.append(0, 0, ["a", "b"], [{"id": "a", "pred": 3.5}, {"id": "b", "pred": math.nan}])
    progress.append(1, 1, ["c"], [{"id": "c", "pred": 2.0}])
    with open(progress.folder / "rank0.jsonl", "a") as fh:
        fh.write('{"unit": 2, "ids": ["d"], "ro')  # SIGKILL in the middle of a write
    done = progress.done()
    assert sorted(done) == [0, 1] and done[0]["ids"] == ["a", "b"] and math.isnan(done[0]["rows"][1]["pred"])
    assert "cut short" in caplog.text


def test_a_damaged_line_before_the_end_is_an_error_naming_file_and_line(tmp_path):
    progress = BenchmarkProgress(tmp_path, "spaq", SETTINGS)
    progress.append(0, 0, ["a"], [{"id": "a"}])
    text = (progress.folder / "rank0.jsonl").read_text()
    (progress.folder / "rank0.jsonl").write_text("garbage\n" + text)
    with pytest.raises(ValueError, match=r"rank0\.jsonl line 1"):
        progress.done()


def test_other_settings_refuse_naming_every_difference(tmp_path):
    BenchmarkProgress(tmp_path, "kadid10k", SETTINGS).start()
    BenchmarkProgress(tmp_path, "kadid10k", dict(SETTINGS)).start()  # the same settings resume
    other = {**SETTINGS, "checkpoint": "other/export", "scoring": {"n": 4, "temperature": 1.0}}
    with pytest.raises(SettingsMismatch) as err:
        BenchmarkProgress(tmp_path, "kadid10k", other).start()
    message = str(err.value)
    assert '"run/export" -> "other/export"' in message and "scoring.n: 8 -> 4" in message
    assert "temperature" not in message and "2 difference(s)" in message
    assert settings_differences({"a": {"b": 1}}, {"a": {}}) == ["a.b: 1 -> <absent>"]


def test_work_units_cut_the_items_in_file_order():
    assert [list(u) for u in work_units(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert work_units(0, 8) == []
    with pytest.raises(ValueError, match="batch_size=0"):
        work_units(5, 0)


def test_a_world_size_without_ranks_is_an_error_not_a_hang(monkeypatch):
    """Pins: WORLD_SIZE left over from another launcher, without RANK, stops with what to do instead of waiting
    for peers that will never come; RANK outside the world is an error too; no WORLD_SIZE is one process."""
    from prresq.eval_ranks import Ranks

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    assert Ranks.from_env() == Ranks(1, 0, 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="WORLD_SIZE=2 without RANK: start the processes with torchrun"):
        Ranks.from_env()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="expected 0 <= RANK < WORLD_SIZE"):
        Ranks.from_env()


TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SLURM_TASK = {
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "2",
    "SLURM_LOCALID": "0",
    "SLURM_JOB_ID": "123456",
    "SLURM_JOB_NODELIST": "gpu[3-5],cpu7",
    "SLURM_JOB_NAME": "eval",
}


def test_ranks_come_from_slurm_when_torchrun_set_none(monkeypatch):
    """Pins: a task of a SLURM job of several tasks (what `hydra/launcher=slurm` starts) reads its ranks from
    SLURM_NTASKS / SLURM_PROCID / SLURM_LOCALID, gets MASTER_ADDR (the first node) and MASTER_PORT (from the
    job id) unless set, and does not start torchrun itself for `devices=N`; torchrun's variables win; an
    interactive allocation (job name bash) or a one-task job is one process."""
    for key in TORCHRUN_VARS:  # set, then delete: monkeypatch restores them (absent) after the test, also the
        monkeypatch.setenv(key, "")  # MASTER_ADDR/PORT that rank_env sets below, which would otherwise reach
        monkeypatch.delenv(key)  # every later test's DDP processes (a rendezvous at "gpu3" that never answers)
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    assert rank_env() == (4, 2, 0)
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("gpu3", "18456")
    assert launch_processes(4, "prresq.eval") is False  # SLURM started the 4 tasks: no torchrun inside each
    monkeypatch.setenv("MASTER_PORT", "29999")
    rank_env()
    assert os.environ["MASTER_PORT"] == "29999"  # a port the job sets is kept
    monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_env() == (2, 1, 1)  # torchrun inside a SLURM job: torchrun's ranks
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")
    assert rank_env() == (1, 0, 0)
    monkeypatch.setenv("SLURM_JOB_NAME", "eval")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert rank_env() == (1, 0, 0)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.delenv("SLURM_PROCID")
    with pytest.raises(ValueError, match="SLURM_NTASKS=2 without SLURM_PROCID"):
        rank_env()


GROUP_SCRIPT = """
from prresq.eval_ranks import Ranks, close_process_group
ranks = Ranks.from_env(60)
print("gathered", ranks.gather((ranks.rank, ranks.local_rank)), flush=True)
close_process_group()
"""


def test_two_slurm_tasks_form_one_process_group(tmp_path):
    """Pins: two real processes given only SLURM's task variables (as srun gives them) join one gloo group
    with ranks 0 and 1 and gather on rank 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(SLURM_TASK, SLURM_NTASKS="2", SLURM_JOB_NODELIST="127.0.0.1", MASTER_PORT=str(port))
    env.update(PYTHONPATH=str(root), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GROUP_SCRIPT],
            env={**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert "gathered [(0, 0), (1, 1)]" in outs[0][0] and "gathered None" in outs[1][0]
