"""A resume continues the run it resumes: the run's saved config is compared with the new one.

A fresh training writes its resolved config to `<run dir>/run_config.yaml` (`save_run_config`).
A training that resumes from a checkpoint (`ckpt_path=last`, or a `.ckpt` path) calls
`check_resume_config(cfg, ckpt)`, which reads the `run_config.yaml` of the checkpoint's run
(`<run>/checkpoints/<name>.ckpt` -> `<run>/run_config.yaml`) and compares it key by key:

- Keys that may change on resume (`MAY_CHANGE_ON_RESUME`: time and step limits, logging, validation
  cadence, callbacks (checkpoint cadence, progress, probes), devices and strategy, paths, `ckpt_path`
  itself, what happens after training) pass.
- Any other difference stops the run with `ResumeConfigError` listing every key, old and new value:
  Lightning restores the optimiser (so a new `optim.lr` would be silently ignored) while the module
  would take a new `grpo.k` mid-run.
- With `resume_with_changes=true` the differences are applied (`ResumeChanges`: a callback that sets the
  new `optim.*` values, the learning rate included, on the restored optimiser and scheduler), appended to
  `<run dir>/resume_changes.yaml` (when, checkpoint, key, old, new) and the new config becomes the run's
  `run_config.yaml`.

A requeued job resumes with the config it was started with, so it passes unchanged.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.yaml"
RESUME_CHANGES = "resume_changes.yaml"

# Dotted keys (and everything below them) that may differ between a run and its resume.
MAY_CHANGE_ON_RESUME: tuple[str, ...] = (
    # the resume itself and the run directory
    "ckpt_path",
    "resume_with_changes",
    "overwrite_run_dir",
    "paths",
    "hydra",
    "task_name",
    # time and step limits
    "trainer.max_time",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.min_steps",
    "trainer.min_epochs",
    # devices and how they are used
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.accelerator",
    "strategy",
    "num_threads",
    "data.num_workers",
    # logging and checkpoint cadence
    "logger",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.default_root_dir",
    "callbacks",  # checkpoint cadence, progress bar, lr monitor, probes (the training schedule is `schedule`)
    "grpo.log_completions_every",
    # validation cadence
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "trainer.limit_val_batches",
    "trainer.num_sanity_val_steps",
    # what happens after training
    "eval_before_after",
    "export_dir",
    "export_replace",
    "optimized_metric",
)


class ResumeConfigError(ValueError):
    """A resume whose config differs from its run's in keys that must not change mid-run."""


@dataclass(frozen=True)
class Difference:
    """One key whose value differs between the run's saved config and the resume's (`MISSING` when absent)."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


MISSING = "<absent>"


def plain_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as plain data, interpolations resolved where they can be (a top-level key that cannot be
    resolved outside a Hydra run is kept unresolved); the `hydra` node is left out."""
    if not isinstance(cfg, DictConfig):
        return {k: v for k, v in dict(cfg).items() if k != "hydra"}
    out: dict[str, Any] = {}
    for key in cfg:
        if key == "hydra":
            continue
        try:
            value = _resolved(cfg, str(key))
        except Exception:  # noqa: BLE001 (an interpolation that needs a Hydra run, e.g. ${hydra:...})
            node = cfg._get_node(key)
            value = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else str(node)
        out[str(key)] = value
    return out


def _resolved(cfg: DictConfig, key: str) -> Any:
    value = cfg[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def may_change(key: str) -> bool:
    """Whether `key` (dotted) is one of `MAY_CHANGE_ON_RESUME` or below one."""
    return any(key == allowed or key.startswith(allowed + ".") for allowed in MAY_CHANGE_ON_RESUME)


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[Difference]:
    """Every key (dotted, sorted) whose value differs between `saved` and `new`, except `MAY_CHANGE_ON_RESUME`."""
    old_flat, new_flat = _flatten(dict(saved)), _flatten(dict(new))
    diffs = []
    for key in sorted(set(old_flat) | set(new_flat)):
        if may_change(key):
            continue
        old, value = old_flat.get(key, MISSING), new_flat.get(key, MISSING)
        if old != value:
            diffs.append(Difference(key, old, value))
    return diffs


def run_dir_of_checkpoint(ckpt: str | Path) -> Path:
    """The run directory a checkpoint belongs to: `<run>/checkpoints/<file or DeepSpeed folder>` -> `<run>`."""
    return Path(ckpt).resolve().parent.parent


def save_run_config(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path) -> Path:
    """Write the run's resolved config to `<run_dir>/run_config.yaml` (temp file + rename)."""
    path = Path(run_dir) / RUN_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(plain_config(cfg), sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path


def check_resume_config(cfg: DictConfig | Mapping[str, Any], ckpt: str | Path) -> list[Difference]:
    """Compare the config of the run that wrote `ckpt` with `cfg` (module docstring); return the differences.

    Raises `ResumeConfigError` listing them unless `cfg.resume_with_changes` is true. A run without a
    saved config (older than this check) is resumed with a warning that nothing could be compared.
    """
    saved_path = run_dir_of_checkpoint(ckpt) / RUN_CONFIG
    if not saved_path.is_file():
        log.warning("%s: not found, so this resume's config cannot be compared with the run's", saved_path)
        return []
    try:
        saved = yaml.safe_load(saved_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ResumeConfigError(f"{saved_path}: unreadable saved run config ({err})") from None
    diffs = config_differences(saved, plain_config(cfg))
    if diffs and not bool(cfg.get("resume_with_changes", False)):
        listed = "\n  - ".join(str(d) for d in diffs)
        raise ResumeConfigError(
            f"resuming {ckpt} with a config that differs from the run's ({saved_path}) in {len(diffs)} key(s) "
            f"that must not change mid-run:\n  - {listed}\n"
            "Resume with the run's values, start a new run (another hydra.run.dir), or pass "
            "resume_with_changes=true to apply these changes from the checkpoint's step on (recorded in "
            f"{RESUME_CHANGES})"
        )
    return diffs


def record_resume_changes(
    cfg: DictConfig | Mapping[str, Any], run_dir: str | Path, ckpt: str | Path, diffs: list[Difference]
) -> None:
    """Append the applied `diffs` to `<run_dir>/resume_changes.yaml` and make `cfg` the run's saved config."""
    path = Path(run_dir) / RESUME_CHANGES
    entries = (yaml.safe_load(path.read_text()) or []) if path.is_file() else []
    entries.append(
        {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "checkpoint": str(ckpt),
            "changes": [{"key": d.key, "old": d.old, "new": d.new} for d in diffs],
        }
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(entries, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    save_run_config(cfg, run_dir)
    log.warning("resume_with_changes=true: applied %s (recorded in %s)", "; ".join(map(str, diffs)), path)


class ResumeChanges(L.Callback):
    """Applies a resume's accepted changes at the start of training, then records them (`record_resume_changes`).

    Sets changed `optim.*` values on the optimiser Lightning restored from the checkpoint:
    the learning rate is scaled by new / old in every param group (`initial_lr`) and in the scheduler's
    `base_lrs`; `GRPOModule.on_train_start`, which Lightning calls after this hook, then sets the lr of the
    step the run is at from those base lrs and the current schedule length
    (`prresq.lr_schedule.apply_at_current_step`, the one place a resume's lr is recomputed), so training
    continues at its step of the new schedule; other scalar `optim` keys (weight_decay, eps, betas) are set
    as given.
    """

    def __init__(
        self, diffs: list[Difference], cfg: DictConfig | Mapping[str, Any], run_dir: str | Path, ckpt: str | Path
    ) -> None:
        self.diffs, self.cfg, self.run_dir, self.ckpt = diffs, cfg, run_dir, ckpt
        self.optim = {d.key.removeprefix("optim."): d for d in diffs if d.key.startswith("optim.")}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lr = self.optim.get("lr")
        scale = float(lr.new) / float(lr.old) if lr is not None else 1.0
        others = {
            k: tuple(d.new) if isinstance(d.new, list) else d.new
            for k, d in self.optim.items()
            if k != "lr" and "." not in k and not k.startswith("_")
        }
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                for key, value in others.items():
                    if key in group:
                        group[key] = value
                group["lr"] *= scale
                if "initial_lr" in group:
                    group["initial_lr"] *= scale
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            sched.base_lrs = [base * scale for base in sched.base_lrs]
        if trainer.is_global_zero:  # recorded once the checkpoint is restored and the changes applied
            record_resume_changes(self.cfg, self.run_dir, self.ckpt, self.diffs)
