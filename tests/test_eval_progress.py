"""`prresq.eval_progress`: the per-benchmark resume state (a cut last line, a damaged file, differing settings)
and `prresq.eval_ranks`' work units and seeds."""

from __future__ import annotations

import math

import pytest

from prresq.eval_progress import BenchmarkProgress, SettingsMismatch, settings_differences
from prresq.eval_ranks import unit_seed, work_units

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


def test_work_units_and_their_seeds_depend_on_the_items_only():
    assert [list(u) for u in work_units(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert work_units(0, 8) == []
    with pytest.raises(ValueError, match="batch_size=0"):
        work_units(5, 0)
    assert unit_seed(42, ["a", "b"]) == unit_seed(42, ["a", "b"])
    assert (
        len({unit_seed(42, ["a", "b"]), unit_seed(43, ["a", "b"]), unit_seed(42, ["b", "a"]), unit_seed(42, ["ab"])})
        == 4
    )
    assert 0 <= unit_seed(42, ["a"]) < 2**63


def test_a_world_size_without_ranks_is_an_error_not_a_hang(monkeypatch):
    """Pins: WORLD_SIZE left over from another launcher, without RANK, stops with what to do instead of waiting
    for peers that will never come; RANK outside the world is an error too; no WORLD_SIZE is one process."""
    from prresq.eval_ranks import Ranks

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert Ranks.from_env() == Ranks(1, 0, 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="WORLD_SIZE=2 without RANK: start the processes with torchrun"):
        Ranks.from_env()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="expected 0 <= RANK < WORLD_SIZE"):
        Ranks.from_env()
