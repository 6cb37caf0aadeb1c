"""prresq.data.synthetic_set: one set written once by concurrent processes; DDP ranks other than local 0 wait."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import pytest

from prresq.data import synthetic_set
from prresq.data.photos import reference_photos
from prresq.data.synthetic_set import MANIFEST, is_complete, wait_for_set

PHOTOS = list(reference_photos())[:4]
# A small VQA set with a deterministic encoder (mpeg4), so two writes can be compared byte for byte.
VQA = dict(types=["blur", "drop"], levels=2, frames=8, width=48, height=32, codec="mpeg4", photos=PHOTOS)


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a set but the manifest (it holds the seconds taken) and the lock."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, synthetic_set.LOCK)
    }


def _child(role: str, out: str, env: dict[str, str], delay_s: float, barrier: Any, results: Any) -> None:
    """One real process: count this process's writes of the set, start with the others, then ask for the set."""
    os.environ.update(env)
    writes = []
    real = synthetic_set._write

    def counted(*args: Any, **kwargs: Any) -> None:
        writes.append(time.time())
        real(*args, **kwargs)

    synthetic_set._write = counted
    from prresq.data.datamodule import QualityDataModule

    synthetic = {"_target_": "prresq.data.synthetic_video.generate_synthetic_vqa", "out_dir": out, **VQA}
    dm = QualityDataModule(synthetic={**synthetic, "progress": False})
    barrier.wait()
    time.sleep(delay_s)
    dm.prepare_data()
    complete = (Path(out) / MANIFEST).exists()
    results.put({"role": role, "writes": len(writes), "complete_on_return": complete, "returned": time.time()})


def _run(tmp_path: Path, roles: dict[str, tuple[dict[str, str], float]]) -> dict[str, dict[str, Any]]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(roles)), ctx.Queue()
    out = str(tmp_path / "set")
    procs = [
        ctx.Process(target=_child, args=(role, out, env, delay, barrier, results))
        for role, (env, delay) in roles.items()
    ]
    for p in procs:
        p.start()
    got = {}
    for _ in procs:
        r = results.get(timeout=240)
        got[r["role"]] = r
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, f"a generating process failed (exit code {p.exitcode})"
    return got


@pytest.mark.slow
def test_two_processes_asking_at_once_write_the_video_set_once(tmp_path):
    """Two processes that both may write (local rank 0 each, e.g. two jobs sharing a cache) and ask for the same
    VQA set at the same moment: the file lock lets one write it; the other waits and reuses it, and the files are
    exactly those of a set written by one process alone."""
    got = _run(tmp_path, {"a": ({"LOCAL_RANK": "0"}, 0.0), "b": ({"LOCAL_RANK": "0"}, 0.0)})
    assert sorted(r["writes"] for r in got.values()) == [0, 1], got
    assert all(r["complete_on_return"] for r in got.values())
    from prresq.data.synthetic_video import generate_synthetic_vqa

    alone = generate_synthetic_vqa(tmp_path / "alone", progress=False, **VQA)
    assert _files(tmp_path / "set") == _files(alone)
    manifest = json.loads((tmp_path / "set" / MANIFEST).read_text())
    assert manifest["counts"] == json.loads((alone / MANIFEST).read_text())["counts"]


@pytest.mark.slow
def test_prepare_data_on_local_rank_1_waits_for_rank_0(tmp_path):
    """`prepare_data` called on every DDP rank before the Trainer exists (as prresq.train does): rank 1 asks
    first but never writes; it returns only once local rank 0 has written the whole set."""
    got = _run(tmp_path, {"rank0": ({"LOCAL_RANK": "0"}, 1.0), "rank1": ({"LOCAL_RANK": "1"}, 0.0)})
    assert got["rank0"]["writes"] == 1 and got["rank1"]["writes"] == 0, got
    assert got["rank1"]["complete_on_return"]
    assert got["rank1"]["returned"] >= (tmp_path / "set" / MANIFEST).stat().st_mtime - 0.05


def test_waiting_for_a_set_nobody_writes_names_it(tmp_path):
    """A rank waiting for a set that never completes stops with an error naming the directory."""
    with pytest.raises(TimeoutError, match=str(tmp_path)):
        wait_for_set(tmp_path, {"seed": 42}, "synthetic VQA", timeout_s=0.2)
    assert not is_complete(tmp_path, {"seed": 42})


def test_prepare_data_without_a_generator_is_refused(tmp_path):
    """A `synthetic` block without `_target_` names the key to set instead of guessing a generator."""
    from prresq.data.datamodule import QualityDataModule

    dm = QualityDataModule(synthetic={"out_dir": str(tmp_path), "levels": 2})
    with pytest.raises(ValueError, match="data.synthetic.*_target_"):
        dm.prepare_data()


def test_video_cli_takes_the_generator_defaults(tmp_path, capsys):
    """`python -m prresq.data.synthetic_video` writes a set; unset flags are the generator's defaults (fps 8)."""
    from prresq.data.synthetic_video import main

    args = ["--out", str(tmp_path), "--types", "blur", "--levels", "2", "--frames", "4", "--width", "32"]
    main([*args, "--height", "32", "--codec", "mpeg4", "--photos", *PHOTOS[:3]])
    assert "train" in capsys.readouterr().out
    options = json.loads((tmp_path / MANIFEST).read_text())["options"]
    assert options["fps"] == 8 and options["clips_per_photo"] == 1 and options["split"] == [6.0, 2.0, 2.0]
    assert options["types"] == ["blur"] and options["codec"] == "mpeg4" and options["photos"] == PHOTOS[:3]
