"""Strict JSON for results files: a NaN or infinite metric (e.g. the SRCC of constant answers) is `null`, never
the bare `NaN`/`Infinity` that Python's `json` writes by default and strict readers (JavaScript, `jq`) reject."""

from __future__ import annotations

import json
import math
import numbers
from typing import Any


def finite_or_null(value: Any) -> Any:
    """`value` ready for strict JSON: every NaN or infinite number (in nested dicts, lists and tuples) replaced by
    None (JSON `null`), and every other real number made a Python `int` or `float` (numpy scalars included)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    """`value` as strict JSON text (`finite_or_null` first; `allow_nan=False` guards the rest)."""
    return json.dumps(finite_or_null(value), indent=indent, allow_nan=False)
