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
