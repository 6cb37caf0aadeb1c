"""A write that fails for lack of space names the file and what was kept (issue 25, clear errors).

The failure is real: the process's file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes the
kernel refuse the write past 1 MB, as a full disk refuses it, without filling a disk.
"""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Iterator

import pytest
import torch

from prresq.checkpointing import LocalCheckpointIO
from prresq.export_dir import write_export
from prresq.infer_output import ResultWriter
from prresq.write_errors import WriteFailedError

LIMIT = 1 << 20


@contextlib.contextmanager
def file_size_limit(limit: int = LIMIT) -> Iterator[None]:
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_checkpoint_that_does_not_fit_names_the_file_and_the_checkpoints_kept(tmp_path):
    """Pins: torch's bare `inline_container.cc ... file write failed` became an error naming the checkpoint being
    written and the previous one kept (unchanged); the partial file is removed."""
    io = LocalCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"w": torch.zeros(10)}, target)
    before = target.read_bytes()
    with file_size_limit(), pytest.raises(WriteFailedError) as failed:
        io.save_checkpoint({"w": torch.zeros(1 << 20)}, target)  # 4 MB
    message = str(failed.value)
    assert f"writing {target} failed" in message and "MB free on its disk" in message
    assert "Kept: the previous last.ckpt, unchanged" in message and "inline_container" not in message
    assert target.read_bytes() == before and [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_an_export_that_does_not_fit_keeps_the_previous_export(tmp_path):
    target = tmp_path / "export"
    write_export(target, lambda out: (out / "config.json").write_text("{}"))
    with (
        file_size_limit(),
        pytest.raises(WriteFailedError, match=r"writing .*export failed .*Kept: the previous export"),
    ):
        write_export(target, lambda out: torch.save(torch.zeros(1 << 20), out / "model.bin"))
    assert [p.name for p in tmp_path.iterdir()] == ["export"] and (target / "config.json").read_text() == "{}"


def test_result_rows_that_do_not_fit_name_the_file_and_the_rows_kept(tmp_path):
    out = tmp_path / "scores.csv"
    writer = ResultWriter(out, [])
    writer.append([{"path": "a.png", "status": "ok", "score": 3.0, "n_parsed": 1, "text": "3"}])
    before = out.read_bytes()
    big = {"path": "b.png", "status": "ok", "score": 2.0, "n_parsed": 1, "text": "x" * (2 * LIMIT)}
    with file_size_limit(), pytest.raises(WriteFailedError) as failed:
        writer.append([big])
    assert f"writing {out} failed" in str(failed.value) and "Kept: the 1 rows already in" in str(failed.value)
    assert out.read_bytes() == before  # no partial row left behind
