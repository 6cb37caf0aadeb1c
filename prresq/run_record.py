"""What a trained model was validated with, recorded with it and applied when it is scored again.

A run's export (`prresq_run.json` beside the weights) and its Lightning checkpoints (the
`run_record` hyperparameter of `GRPOModule`) hold its **run record**: the prompt group it trained
and was validated with, the whole `scoring` block (every field, so fields added to the group later
are recorded without a change here), the held-out scoring's batch size and seed, the processor's
pixel caps, and the synthetic set it trained on (generator options, fold included).

`prresq.eval` and `prresq.infer` read the record of their `checkpoint` (`read_run_record`) and use
it as their defaults (`apply_run_record`): the prompt, the scoring fields, `scoring.batch_size`,
`scoring.seed`, the pixel caps and, for eval, the synthetic benchmark's set and fold. A value given
on the command line (`prompt=...`, `prompt.text=...`, `scoring.<field>=...`, `benchmark...`) wins;
a command-line prompt that differs from the recorded one is logged as a warning naming both.
So `python -m prresq.eval checkpoint=RUN/export` reproduces the run's held-out table
(`tests/test_run_record.py`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from prresq.checkpoint_loading import read_lightning_checkpoint
from prresq.config import to_plain

log = logging.getLogger("prresq.run_record")

RECORD_FILE = "prresq_run.json"
# Record keys that are `scoring` fields of prresq.eval / prresq.infer (conf/scoring/offline.yaml, eval.yaml).
_OFFLINE_SCORING_KEYS = ("batch_size", "seed", "min_pixels", "max_pixels")


def build_run_record(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The record of a training config: prompt, whole scoring block, held-out batching/seed, pixel caps, synthetic set."""
    data = cfg.get("data") or {}
    synthetic = data.get("synthetic")
    return {
        "prompt": to_plain(cfg.prompt),
        "scoring": to_plain(cfg.scoring),
        "batch_size": data.get("eval_batch_size", data.get("batch_size")),
        "seed": cfg.get("seed"),
        "min_pixels": data.get("min_pixels"),
        "max_pixels": data.get("max_pixels"),
        "synthetic": to_plain(synthetic) if synthetic is not None else None,
    }


def write_run_record(out_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """`<out_dir>/prresq_run.json` (strict JSON)."""
    path = Path(out_dir) / RECORD_FILE
    path.write_text(json.dumps(dict(record), indent=2, allow_nan=False) + "\n")
    return path


def read_run_record(checkpoint: str | Path | None) -> tuple[dict[str, Any] | None, str]:
    """(record, where it was read) of an export directory or a `.ckpt`; (None, reason) when it has none."""
    if checkpoint is None:
        return None, "no checkpoint"
    path = Path(checkpoint)
    if path.is_dir():
        file = path / RECORD_FILE
        if not file.exists():
            return None, f"{path} has no {RECORD_FILE}"
        return json.loads(file.read_text()), str(file)
    if path.is_file():
        hparams, _ = read_lightning_checkpoint(path)
        record = hparams.get("run_record")
        return (dict(record), f"{path} (hyperparameter run_record)") if record else (None, f"{path}: no run_record")
    return None, f"{path} does not exist"


def command_line_keys(cfg: DictConfig) -> set[str]:
    """The config keys set on the command line (Hydra's task overrides: `prompt=x` -> `prompt`).

    Read from the config's `hydra` node when it has one (`compose(..., return_hydra_config=True)`), else
    from the running Hydra app; empty when neither exists.
    """
    overrides: Iterable[str] = ()
    if "hydra" in cfg:
        overrides = cfg.hydra.overrides.task
    else:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = HydraConfig.get().overrides.task
    return {str(o).split("=", 1)[0].lstrip("+~") for o in overrides}


def _given(key: str, explicit: set[str]) -> bool:
    """`key` or one of its parents or children was set on the command line."""
    return any(e == key or e.startswith(key + ".") or key.startswith(e + ".") for e in explicit)


def _describe(prompt: Mapping[str, Any]) -> str:
    text = str(prompt.get("text") or (prompt.get("pool") or [""])[0])
    short = text if len(text) <= 60 else text[:57] + "..."
    return f"{prompt.get('name', '?')!r} ({short!r})"


def apply_run_record(cfg: DictConfig, record: Mapping[str, Any], source: str) -> list[str]:
    """Use `record` as `cfg`'s defaults in place (command-line keys win); returns the keys it set.

    A command-line prompt that differs from the recorded one is kept and logged as a warning naming both.
    """
    explicit = command_line_keys(cfg)
    applied: list[str] = []
    with open_dict(cfg):
        prompt = record.get("prompt")
        if prompt:
            if _given("prompt", explicit):
                given = to_plain(cfg.prompt)
                if {k: given.get(k) for k in prompt} != dict(prompt):
                    log.warning(
                        "prompt %s from the command line differs from the prompt the model was trained and "
                        "validated with, %s (recorded in %s); scores will not match the run's. Drop prompt= "
                        "to use the recorded one.",
                        _describe(given),
                        _describe(prompt),
                        source,
                    )
            else:
                cfg.prompt = OmegaConf.create(dict(prompt))
                applied.append("prompt")
        values = dict(record.get("scoring") or {})
        values.update({k: record[k] for k in _OFFLINE_SCORING_KEYS if record.get(k) is not None})
        if "seed" in explicit:  # `seed=7` on the command line is the scoring seed too (conf/scoring/*.yaml)
            values.pop("seed", None)
        for key, value in values.items():
            if key in cfg.scoring and not _given(f"scoring.{key}", explicit) and cfg.scoring[key] != value:
                cfg.scoring[key] = value
                applied.append(f"scoring.{key}")
        synthetic = record.get("synthetic")
        for name, bench in (cfg.get("benchmark") or {}).items():
            node = bench.get("synthetic") if isinstance(bench, DictConfig) else None
            # `benchmark=[...]` only selects benchmarks; a key below `benchmark.<name>` (its root, its set) opts out.
            if not synthetic or node is None or any(e.startswith(f"benchmark.{name}") for e in explicit):
                continue
            if node.get("_target_") == synthetic.get("_target_") and to_plain(node) != synthetic:
                bench.synthetic = OmegaConf.create(dict(synthetic))
                applied.append(f"benchmark.{name}.synthetic")
    if applied:
        log.info("from the run record %s: %s", source, ", ".join(applied))
    return applied


def use_run_record(cfg: DictConfig) -> dict[str, Any] | None:
    """Apply the run record of `cfg.checkpoint` to `cfg` (eval and infer); the record, or None without one."""
    record, source = read_run_record(cfg.get("checkpoint"))
    if record is None:
        if cfg.get("checkpoint") is not None:
            log.info("no run record (%s): prompt and scoring come from the config", source)
        return None
    apply_run_record(cfg, record, source)
    return record
