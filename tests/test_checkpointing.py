"""Checkpoints: exact resume after a kill during validation, no code run on load, no partial files left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch

from prresq.checkpoint_loading import UnsafeCheckpointError, read_lightning_checkpoint
from prresq.checkpointing import LocalCheckpointIO, StepCheckpoint
from prresq.models import load_scoring_model

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "helpers"


class _RunsCode:
    """Unpickling this object runs `touch <marker>` (what a crafted checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def malicious_ckpt(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = tmp_path / "last.ckpt"
    state = {"policy.lm_head.weight": torch.zeros(2, 2)}
    torch.save({"state_dict": state, "hyper_parameters": {"model": {"x": _RunsCode(marker)}}}, path)
    return path, marker


def test_a_checkpoint_that_would_run_code_is_refused_and_never_executed(malicious_ckpt):
    """eval and infer (both through load_scoring_model) refuse a pickle that calls os.system; it never runs."""
    path, marker = malicious_ckpt
    with pytest.raises(UnsafeCheckpointError, match=r"last\.ckpt.*posix\.system|last\.ckpt.*system"):
        read_lightning_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load checkpoint"):
        load_scoring_model({"dtype": "float32", "attn_implementation": "sdpa"}, checkpoint=path)
    assert not marker.exists()


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
        plugins=[LocalCheckpointIO()],
        callbacks=[StepCheckpoint(dirpath=tmp / "ckpt", every_n_train_steps=1, save_last=True)],
    )


def _loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 2)), batch_size=2)


def test_trainer_resume_refuses_a_checkpoint_that_would_run_code(malicious_ckpt, tmp_path):
    """`prresq.train ... ckpt_path=` reads through LocalCheckpointIO: weights_only=True, the code never runs."""
    path, marker = malicious_ckpt
    with pytest.raises(UnsafeCheckpointError):
        _trainer(tmp_path, 2).fit(_Tiny(), _loader(), ckpt_path=str(path))
    assert not marker.exists()


@pytest.mark.parametrize("writer", ["local", pytest.param("default", marks=pytest.mark.xfail(strict=True))])
def test_kill_during_a_checkpoint_write_leaves_nothing_in_the_system_temp_folder(tmp_path, writer):
    """kill -9 while a real Trainer commits a checkpoint: nothing stays in the system temp folder (TMPDIR),
    only a `.tmp-<pid>` beside the target, which the next start removes. Lightning's default writer
    (xfail, strict) stages the file in TMPDIR, where the kill leaves it."""
    temp, ckpt_dir = tmp_path / "system_tmp", tmp_path / "ckpt"
    temp.mkdir()
    ckpt_dir.mkdir()
    marker = tmp_path / "committing"
    cmd = [sys.executable, str(HELPERS / "checkpoint_commit_pause.py"), str(ckpt_dir / "last.ckpt"), str(marker)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)}
    proc = subprocess.Popen([*cmd, *([writer] if writer == "default" else [])], env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the writer ended before committing"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(temp.iterdir()) == []
    assert not (ckpt_dir / "last.ckpt").exists()
    assert [p.name for p in ckpt_dir.iterdir()] == [f".last.ckpt.tmp-{proc.pid}"]


def test_partial_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    """A `.tmp-<pid>` file that a killed write left beside the checkpoints is deleted when training starts."""
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    stale = ckpt_dir / ".last.ckpt.tmp-12345"
    stale.write_bytes(b"\0" * 1024)
    _trainer(tmp_path, 2).fit(_Tiny(), _loader())
    assert not stale.exists()
    assert (ckpt_dir / "last.ckpt").exists() and not list(ckpt_dir.glob(".*tmp-*"))


# ----------------------------------------------------------------------------- kill -9 during validation

COMMON = [
    "experiment=tiny_synthetic",
    "warmup=none",
    "eval_before_after=false",
    "export_dir=null",
    "grpo.k=3",
    "grpo.max_new_tokens=8",
    "scoring.n=2",
    "data.batch_size=4",
    "data.val_subset=8",
    "data.eval_batch_size=4",
    "trainer.max_time=null",
    "+reward.length={name:test_char_count,weight:1.0}",
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=2",
    "callbacks.checkpoint.every_n_train_steps=4",
    "~callbacks.progress",
]


def _train(run_dir: Path, cache: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(HELPERS / "train_with_probes.py"), *COMMON, f"paths.cache_dir={cache}"]
    cmd += [f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    assert proc.wait(timeout=timeout) == 0, Path(proc.args[-1]).name


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(f) for f in sorted((run_dir / "csv").glob("version_*/metrics.csv"))])


@pytest.mark.slow
def test_resume_after_kill_during_validation_equals_the_uninterrupted_run(tmp_path):
    """Kill -9 during the step-8 validation, resume from the step-4 checkpoint (a validation step): every
    logged training metric of steps 0-11 equals the uninterrupted run's, and every validation appears once."""
    cache = tmp_path / "cache"
    a, b = tmp_path / "A", tmp_path / "B"
    for d in (a, b):
        d.mkdir()
    _finish(_train(a, cache))
    marker = tmp_path / "validating"
    hold = f"+callbacks.hold={{_target_: validation_probe.HoldValidation, step: 8, marker: '{marker}'}}"
    proc = _train(b, cache, hold)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "run B ended before its step-8 validation"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch.load(b / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == 4  # the checkpoint of a validation step, written after its validation
    _finish(_train(b, cache, "ckpt_path=last"))

    full, resumed = _metrics(a), _metrics(b)
    columns = [c for c in full.columns if c.startswith("train/")]
    assert "train/grad_norm" in columns and len(columns) > 10
    want = full.dropna(subset=["train/loss"]).set_index("step")[columns]
    got = resumed.dropna(subset=["train/loss"]).groupby("step").last()[columns]
    assert list(got.index) == list(range(12)) == list(want.index)
    assert (want["train/grad_norm"] > 0).all()  # the updates are not all zero
    pd.testing.assert_frame_equal(got, want, rtol=1e-6, atol=1e-9)
    val = "val/parse_fail_rate"
    assert sorted(resumed.dropna(subset=[val])["step"]) == sorted(full.dropna(subset=[val])["step"]) == [3, 7, 11]
    val_columns = [c for c in full.columns if c.startswith("val/")]
    want_val = full.dropna(subset=[val]).set_index("step")[val_columns]
    got_val = resumed.dropna(subset=[val]).set_index("step")[val_columns]
    pd.testing.assert_frame_equal(got_val, want_val, rtol=1e-6, atol=1e-9)  # the re-run step-8 validation too


@pytest.mark.parametrize("size", [0, 5000])
def test_truncated_checkpoint_is_a_named_error(tmp_path, size):
    """A zero-byte or cut-off .ckpt gives a ValueError naming the file (before: a bare EOFError / OSError)."""
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"policy.w": torch.zeros(4096)}, "hyper_parameters": {}}, whole)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[:size])
    with pytest.raises(ValueError, match=rf"cut\.ckpt \({size} bytes\) is not a readable torch checkpoint"):
        read_lightning_checkpoint(cut)


# ----------------------------------------------------------------------------- untrusted export folders


def _traceback_text(err: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(err))


def test_a_pickled_or_crafted_export_folder_is_refused_in_our_words(tmp_path, tiny_model_dir):
    """Pins: a refused pickle in an export folder surfaced torch's own message, which advises retrying with
    weights_only=False, and a crafted `.safetensors` a bare `SafetensorError`. eval/infer's loader now name the
    folder and its files in our words, the pickled code never runs, and no traceback carries torch's advice."""
    import shutil

    from prresq.lora import save_adapter
    from prresq.models import load_policy, load_processor

    marker = tmp_path / "code_ran"
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"lm_head.weight": _RunsCode(marker)}, pickled / "pytorch_model.bin")
    with pytest.raises(
        UnsafeCheckpointError, match=r"refusing to load the model weights in .*pickled \(pytorch_model"
    ) as refused:
        load_scoring_model({"dtype": "float32"}, checkpoint=pickled, device="cpu")
    assert not marker.exists() and "weights_only=False" not in _traceback_text(refused.value)
    assert "posix.system" in str(refused.value) or "system" in str(refused.value)

    crafted = tmp_path / "crafted"
    shutil.copytree(tiny_model_dir, crafted)
    (crafted / "model.safetensors").write_bytes(b"\xff" * 8 + b"{not json")
    with pytest.raises(ValueError, match=r"model weights in .*crafted \(model\.safetensors\) are not a valid") as bad:
        load_scoring_model({"dtype": "float32"}, checkpoint=crafted, device="cpu")
    assert "SafetensorError" not in _traceback_text(bad.value)

    adapter = tmp_path / "adapter"
    save_adapter(load_policy(tiny_model_dir, lora={"r": 2}), adapter)
    load_processor(tiny_model_dir).save_pretrained(adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b'{"a": 1}' + b" " * 8)
    with pytest.raises(
        ValueError, match=r"adapter weights in .*adapter \(adapter_model\.safetensors\) are not a valid"
    ):
        load_scoring_model({"dtype": "float32"}, checkpoint=adapter, device="cpu")
