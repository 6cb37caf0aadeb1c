"""`python tests/helpers/train_with_probes.py <overrides>`: `python -m prresq.train` with the test helpers importable."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validation_probe  # noqa: E402,F401  (registers the test reward before the config is built)

runpy.run_module("prresq.train", run_name="__main__", alter_sys=True)
