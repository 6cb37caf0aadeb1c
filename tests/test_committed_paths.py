"""Committed results and docs name paths a reader's checkout has, never the machine they were made on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prresq.analysis import project_relative

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|root|home)/[\w.-]+")


def test_committed_results_and_docs_name_no_machine_path():
    files = subprocess.run(
        ["git", "ls-files", "experiments/results", "README.md", "prresq/*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert files, "git ls-files found nothing: is this a checkout?"
    hits = [
        f"{f}: {m.group(0)}"
        for f in files
        if (ROOT / f).suffix in {".md", ".json", ".csv", ".txt"}
        for m in MACHINE_PATH.finditer((ROOT / f).read_text(errors="replace"))
    ]
    assert not hits, "absolute machine paths in committed files:\n" + "\n".join(hits)


def test_project_relative_inside_and_outside_the_root(tmp_path):
    root = tmp_path / "project"
    (root / "multirun" / "ablations").mkdir(parents=True)
    assert project_relative(root / "multirun" / "ablations", root) == "multirun/ablations"
    assert project_relative(str(root / "multirun" / ".." / "multirun"), root) == "multirun"
    outside = tmp_path / "elsewhere"
    assert project_relative(outside, root) == str(outside)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_committed_json_results_are_strict_json():
    """Every committed `experiments/results/**/*.json` parses as strict JSON (a NaN metric is `null`, never the
    bare `NaN` that Python's json writes by default and other readers reject)."""
    import json

    files = subprocess.run(
        ["git", "ls-files", "experiments/results/*.json", "experiments/results/**/*.json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert files, "git ls-files found no committed JSON results"
    bad = []
    for f in files:
        try:
            json.loads((ROOT / f).read_text(), parse_constant=_not_json)
        except ValueError as e:
            bad.append(f"{f}: {e}")
    assert not bad, "\n".join(bad)


def test_finite_or_null_makes_numpy_numbers_strict_json():
    """numpy float32/float64/int64 become Python numbers, NaN and +-inf become null, bools and strings stay."""
    import json

    import numpy as np

    from prresq.strict_json import finite_or_null

    value = {"a": np.float32(0.5), "b": np.float64("nan"), "c": [np.int64(3), float("inf"), True, "x"]}
    value["d"] = (1, np.float32("-inf"))
    text = json.dumps(finite_or_null(value), allow_nan=False)
    assert json.loads(text) == {"a": 0.5, "b": None, "c": [3, None, True, "x"], "d": [1, None]}
