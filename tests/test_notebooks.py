"""The analysis notebooks run headless (nbclient, the venv's `python3` kernel) against the fake sweep of
test_analysis.py, produce figures, and are stored without outputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _fake_sweep_builder():  # test_analysis.py is not importable as a package module: load it by path
    spec = importlib.util.spec_from_file_location("_prresq_test_analysis", Path(__file__).with_name("test_analysis.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.build_fake_sweep


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _fake_sweep_builder()(tmp_path_factory.mktemp("notebooks"))


def _execute(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key in ("PRRESQ_RUN_DIR", "PRRESQ_EVAL_BEFORE", "PRRESQ_EVAL_AFTER", "PRRESQ_HUE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
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
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is None and not c.outputs for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "os.environ" in params[0].source
    assert "/work" not in "".join(c.source for c in nb.cells) and "/tmp" not in "".join(c.source for c in code)


def test_reward_curves_notebook(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _execute("reward_curves.ipynb", {"PRRESQ_RUN_DIR": str(fake["sweep"])}, monkeypatch)
    images, text = _outputs(nb)
    # rewards, reward spread, KL/clip, completions, validation, score std, optimisation
    assert images == 7
    assert "3 run(s)" in text and "grpo.k" in text and "reward.fidelity.variant" in text
    assert "not logged, skipped: train/advantage_std" in text and "train/grad_norm" in text
    assert "<think>run 0 a|b</think>" in text  # last completions table of run 0


def test_score_distribution_notebook(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PRRESQ_EVAL_BEFORE": str(fake["base"]), "PRRESQ_EVAL_AFTER": str(fake["sweep"] / "1")}
    nb = _execute("score_distribution.ipynb", env, monkeypatch)
    images, text = _outputs(nb)
    assert images == 2  # errors, answer distribution
    assert "after - before" in text and "koniq" in text and "spaq" in text


def test_score_distribution_notebook_inside_one_run(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _execute("score_distribution.ipynb", {"PRRESQ_RUN_DIR": str(fake["sweep"] / "0")}, monkeypatch)
    images, text = _outputs(nb)
    assert images == 2
    assert "eval/base" in text and "after - before" in text
