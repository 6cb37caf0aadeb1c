"""GRPOModule: reinforcement learning to rank (RL2R, VisualQuality-R1) and PRPO (PreResQ-R1).

One training step, top to bottom:

1. **Rollout** (no gradients). For each of the B images of the batch, sample K completions from
   the current policy (vision special tokens suppressed), decode and parse them into scores
   `q[i, k]` (and D aspect scores for PreResQ prompts). Unparseable answers are NaN.
2. **Rewards**. Ranking rewards compare each image with the others of its device's batch
   (`reward.scope=local`, released) or, gathered under DDP, of the global step (`global`) (Eq. 1-3);
   each process keeps its own rows. The reward mix (Hydra `reward` group) returns per-term rewards and their weighted sum.
3. **Advantages** (Eq. 4): group-standardised over the K completions of each image.
4. **Log-probs**. Reference log-probs (only when beta > 0: a frozen copy, or with LoRA the policy
   with its adapters disabled) and, with
   `num_iterations` > 1, the old policy's log-probs at sampling time.
5. **Policy update**. `num_iterations` optimiser steps on this rollout, each over micro-batches
   of completions, minimising the clipped GRPO objective with the k3 KL (Eq. 5-6). One rollout
   batch is one `trainer.global_step`, whatever `num_iterations` is.

Steps 1-4 are `rollout` (a `prresq.rollout.Rollout`), step 5 is `update`. Generation, log-probs and
micro-batches go through the engine `grpo.shared_prefix` chose at construction (`prresq.engine`); the
loss, optimiser and LR schedule are built from their config blocks' `_target_`.

Validation scores the val split with the shared scoring path (`prresq.scoring`) and logs
SRCC/PLCC of the greedy answer and of the mean of N samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.core.optimizer import do_nothing_closure
from torch import Tensor

from prresq.config import GRPOConfig, to_plain
from prresq.engine import build_engine
from prresq.export_dir import write_export
from prresq.lora import check_checkpoint_kind, has_adapters, merge_adapters, reference_model, save_adapter
from prresq.loss import GRPOLoss
from prresq.lr_schedule import apply_at_current_step
from prresq.metrics import plcc, srcc
from prresq.models import load_policy, load_processor, load_reference
from prresq.rewards import build_reward_mix, compute_rewards, group_advantages, parse_answers
from prresq.rng_states import capture_rng_states, restore_rng_states
from prresq.rollout import Rollout, VisionIds
from prresq.run_record import write_run_record
from prresq.sampling import GenerationTokens
from prresq.scoring import ScoringConfig, decode, score_batch

log = logging.getLogger(__name__)


class GRPOModule(L.LightningModule):
    """Rollout -> reward registry -> group advantages -> clipped GRPO/KL loss, with manual optimisation."""

    def __init__(
        self,
        model: Mapping[str, Any],
        grpo: Mapping[str, Any],
        loss: Mapping[str, Any],
        reward: Mapping[str, Any],
        optim: Mapping[str, Any],
        lr_scheduler: Mapping[str, Any],
        scoring: Mapping[str, Any],
        num_aspects: int = 1,
        score_range: tuple[float, float] = (1.0, 5.0),
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        run_record: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({k: to_plain(v) for k, v in locals().items() if k not in ("self", "__class__")})
        self.automatic_optimization = False
        hp = self.hparams
        self.grpo = GRPOConfig.from_mapping(hp.grpo)
        self.num_aspects = num_aspects
        self.score_range = tuple(score_range)
        model_cfg = dict(hp.model)
        self.processor = load_processor(model_cfg["name_or_path"], min_pixels, max_pixels)
        self.policy = load_policy(
            model_cfg["name_or_path"],
            dtype=model_cfg.get("dtype", "float32"),
            attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
            gradient_checkpointing=model_cfg.get("gradient_checkpointing", False),
            freeze_vision=model_cfg.get("freeze_vision", False),
            tiny=model_cfg.get("tiny"),
            lora=model_cfg.get("lora"),
            family=model_cfg.get("family"),
        )
        self.loss_fn: GRPOLoss = _instantiate(hp.loss, "loss")
        # beta = 0 loads no reference model at all (no second copy in memory); with LoRA the reference is
        # the policy with its adapters disabled (prresq.lora.reference_model).
        copy_reference = self.loss_fn.beta != 0.0 and not has_adapters(self.policy)
        self.reference = load_reference(self.policy) if copy_reference else None
        self.policy.train()
        self.rewards = build_reward_mix(dict(hp.reward))
        self.scoring = ScoringConfig(**{**dict(hp.scoring), "num_aspects": num_aspects})
        tokens = GenerationTokens.from_tokenizer(self.processor.tokenizer)
        self.engine = build_engine(self.grpo, tokens, VisionIds.from_config(self.policy.config))
        self._val: dict[str, list[Tensor]] = {}
        self._shuffle_gen = torch.Generator().manual_seed(int(self.grpo.seed))

    # ----------------------------------------------------------------------------- rollout
    @property
    def k(self) -> int:
        return int(self.grpo.k)

    @torch.no_grad()
    def rollout(self, batch: dict[str, Any]) -> Rollout:
        """Steps 1-4 of the module docstring: completions -> rewards -> advantages -> fixed log-probs."""
        inputs = batch["model_inputs"]
        b, k = inputs["input_ids"].shape[0], self.k
        completion, mask = self.engine.generate(self.policy, inputs)  # [B*K, T] each
        texts = decode(self.processor, completion)
        scores, aspects = parse_answers(texts, self.num_aspects, *self.score_range)
        scores, aspects = scores.view(b, k).to(self.device), aspects.view(b, k, -1).to(self.device)
        mos = batch["mos"].to(self.device).float()
        if self.grpo.shuffle_mos:  # control run: the reward no longer carries MOS information
            mos = mos[torch.randperm(b, generator=self._shuffle_gen).to(mos.device)]
        dataset_ids = batch["dataset_ids"].to(self.device)
        total, terms = compute_rewards(self.rewards, texts, scores, aspects, mos, dataset_ids)  # [B, K] (Eq. 1-3)
        advantages = group_advantages(total).reshape(-1)  # [B*K] (Eq. 4)
        prompts = self.engine.prompt_rows(inputs)
        old_logp = ref_logp = None
        if self.grpo.num_iterations > 1:
            old_logp = self.engine.all_logprobs(self.policy, prompts, completion, mask)
        if self.loss_fn.beta != 0.0:
            with reference_model(self.policy, self.reference) as reference:
                ref_logp = self.engine.all_logprobs(reference, prompts, completion, mask)
        return Rollout(
            inputs=prompts,
            completion=completion,
            mask=mask,
            texts=texts,
            scores=scores,
            mos=mos,
            total=total,
            terms=terms,
            advantages=advantages,
            old_logp=old_logp,
            ref_logp=ref_logp,
        )

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        ro = self.rollout(batch)
        stats, grad_norm = self.update(ro)
        self._log_step(ro, stats, grad_norm, batch_idx)

    def update(self, ro: Rollout) -> tuple[dict[str, float], Tensor]:
        """Step 5: `num_iterations` optimiser steps minimising the clipped GRPO loss (Eq. 5-6) of one rollout.

        Returns the loss statistics averaged over the iterations and the last step's gradient norm.
        """
        opt = self.optimizers()
        sched = self.lr_schedulers()
        rows = self.engine.micro_batches(ro.completion.shape[0])
        iters = self.grpo.num_iterations
        stats_acc: dict[str, float] = {}
        for it in range(iters):
            opt.zero_grad(set_to_none=True)
            stats = self.micro_batched_backward(
                self.loss_fn,
                rows,
                lambda ps, cs: self.engine.logprobs(self.policy, ro.inputs, (ps, cs), ro.completion, ro.mask),
                ro.advantages,
                ro.mask,
                old_logp=ro.old_logp,
                ref_logp=ro.ref_logp,
                backward=self.manual_backward,
            )
            for key, val in stats.items():
                stats_acc[key] = stats_acc.get(key, 0.0) + val / iters
            grad_norm = self._clip_and_step(opt, counted=it == iters - 1)
        if sched is not None:
            sched.step()
        return stats_acc, grad_norm

    @staticmethod
    def micro_batched_backward(
        loss_fn: GRPOLoss,
        slices: Sequence[tuple[slice, slice]],
        logp_of: Callable[[slice, slice], Tensor],
        advantages: Tensor,  # [N]
        mask: Tensor,  # [N, T]
        old_logp: Tensor | None = None,
        ref_logp: Tensor | None = None,
        backward: Callable[[Tensor], None] = Tensor.backward,
    ) -> dict[str, float]:
        """Backward the full-batch loss micro-batch by micro-batch; returns the full batch's loss and stats.

        `slices` are (prompt rows, completion rows) pairs; `logp_of(prompt rows, completion rows)` gives the
        current policy's log-probs of those completions (with grad). Each micro-batch loss is already its
        share of the full-batch aggregate (`batch_mask`), so losses and gradients add up exactly; the
        token-mean stats are weighted by each micro-batch's share of the batch's tokens.
        """
        total_tokens = float(mask.sum().clamp(min=1.0))
        out: dict[str, float] = {}
        for ps, cs in slices:
            loss, stats = loss_fn(
                logp_of(ps, cs),
                advantages[cs],
                mask[cs],
                old_logp=None if old_logp is None else old_logp[cs],
                ref_logp=None if ref_logp is None else ref_logp[cs],
                batch_mask=mask,
            )
            backward(loss)
            share = float(mask[cs].sum()) / total_tokens
            out["loss"] = out.get("loss", 0.0) + float(loss.detach())
            for key, val in vars(stats).items():
                out[key] = out.get(key, 0.0) + float(val) * share
        return out

    def _clip_and_step(self, opt: Any, counted: bool) -> Tensor:
        """Clip, take one optimiser step; returns the global gradient norm (before clipping).

        `trainer.global_step` counts rollout batches, not the `num_iterations` optimiser steps of a
        batch: only the last goes through the LightningOptimizer (which counts it), the others take
        the same strategy path uncounted. So `trainer.max_steps`, the LR schedule length and the
        two-stage switch count batches whatever mu is. Under DeepSpeed `p.grad` is None (ZeRO):
        the engine clips (`gradient_clipping` = grpo.max_grad_norm, `prresq.strategies`) and
        reports its own global norm.
        """
        engine = getattr(self.trainer.strategy, "deepspeed_engine", None)
        grad_norm = self._clip_and_norm(opt) if engine is None else None
        if counted:
            opt.step()
        else:
            self.trainer.strategy.optimizer_step(opt.optimizer, do_nothing_closure)
        if engine is not None:
            norm = engine.get_global_grad_norm()
            grad_norm = torch.tensor(float("nan") if norm is None else float(norm))
        return grad_norm

    def _clip_and_norm(self, opt: Any) -> Tensor:
        max_norm = float(self.grpo.max_grad_norm or 0.0)
        params = [p for p in self.policy.parameters() if p.grad is not None]
        if not params:
            return torch.tensor(0.0)
        if max_norm > 0:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        return torch.nn.utils.get_total_norm([p.grad for p in params])

    def _log_step(self, ro: Rollout, stats: dict[str, float], grad_norm: Tensor, batch_idx: int) -> None:
        scores, mask = ro.scores, ro.mask
        parsed = ~torch.isnan(scores)
        metrics: dict[str, Any] = {f"train/{k}": v for k, v in stats.items() if k != "ratio_mean"}
        for name, term in ro.terms.items():
            metrics[f"train/reward/{name}_mean"] = term.mean()
            metrics[f"train/reward/{name}_std"] = term.std() if term.numel() > 1 else torch.tensor(0.0)
        total = ro.total
        metrics["train/reward_total_mean"] = total.mean()
        zero_std = (total.std(dim=1) < 1e-6) if total.shape[1] > 1 else torch.ones(total.shape[0], dtype=torch.bool)
        metrics["train/frac_reward_zero_std"] = zero_std.float().mean()
        metrics["train/advantage_mean"] = ro.advantages.mean()
        metrics["train/advantage_std"] = ro.advantages.std() if ro.advantages.numel() > 1 else 0.0
        metrics["train/completion_len"] = mask.sum(1).float().mean()
        metrics["train/parse_fail_rate"] = 1.0 - parsed.float().mean()
        std = _nanstd(scores)
        metrics["train/score_std_per_image"] = torch.nanmean(std) if torch.isfinite(std).any() else 0.0
        metrics["train/grad_norm"] = grad_norm
        self.log_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in metrics.items()}, prog_bar=False)
        self.log("reward", total.mean(), prog_bar=True)
        every = int(self.grpo.log_completions_every or 0)
        if every and self.global_rank == 0 and batch_idx % every == 0:
            self._log_completions(ro)

    def _log_completions(self, ro: Rollout, images: int = 4, per_image: int = 2) -> None:
        """A Markdown table of the first `per_image` completions of the first `images` images."""
        k = self.k
        lines = ["| image | k | mos | score | reward | completion |", "|---|---|---|---|---|---|"]
        for i in range(min(images, ro.scores.shape[0])):
            for j in range(min(per_image, k)):
                clean = ro.texts[i * k + j].replace("|", "\\|").replace("\n", " ")[:200]
                lines.append(
                    f"| {i} | {j} | {float(ro.mos[i]):.2f} | {float(ro.scores[i, j]):.2f} "
                    f"| {float(ro.total[i, j]):.3f} | {clean} |"
                )
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                experiment.add_text("train/completions", "\n".join(lines), self.global_step)

    # ----------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val = {"mos": [], "greedy": [], "sample": [], "n_parsed": []}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = score_batch(self.policy, self.processor, batch["model_inputs"], self.scoring)
        self._val["mos"].append(batch["mos"].float().cpu())
        if out.greedy is not None:
            self._val["greedy"].append(out.greedy.cpu())
        if out.sample_mean is not None:
            self._val["sample"].append(out.sample_mean.cpu())
            self._val["n_parsed"].append(out.n_parsed.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("mos"):
            return
        mos = self._gather_cat(torch.cat(self._val["mos"]))
        results: dict[str, Tensor] = {}
        for key in ("greedy", "sample"):
            if not self._val[key]:
                continue
            pred = self._gather_cat(torch.cat(self._val[key]))
            ok = ~torch.isnan(pred)
            suffix = "" if key == ("sample" if self._val["sample"] else "greedy") else f"_{key}"
            results[f"val/parse_fail_rate{suffix}"] = 1.0 - ok.float().mean()
            results[f"val/srcc{suffix}"] = torch.as_tensor(srcc(pred, mos), dtype=torch.float32)
            results[f"val/plcc{suffix}"] = torch.as_tensor(plcc(pred, mos), dtype=torch.float32)
        self.log_dict(results, prog_bar=False, rank_zero_only=True, sync_dist=False)
        if "val/srcc" in results:
            self.log("val_srcc", results["val/srcc"], prog_bar=True, rank_zero_only=True)

    def _gather_cat(self, t: Tensor) -> Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return t
        return self.all_gather(t.to(self.device)).reshape(-1).cpu()

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """The `optim` partial (AdamW) over the trainable parameters, stepped per batch by the `lr_scheduler` partial."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        opt = _instantiate(self.hparams.optim, "optim")(params)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        sched = _instantiate(self.hparams.lr_scheduler, "lr_scheduler")(opt, total_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {**capture_rng_states(), "shuffle_mos": self._shuffle_gen.get_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied at the first training batch after resuming: creating the data iterator in between
        # draws from the global RNG, which the uninterrupted run did before the checkpoint was taken.
        check_checkpoint_kind(checkpoint.get("state_dict") or {}, has_adapters(self.policy), "ckpt_path")
        self._pending_rng = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        # After a resume the optimiser holds the LR saved with the old schedule length (`trainer.max_steps`
        # may change on resume); the first resumed step takes the current schedule's value instead.
        sched = self.lr_schedulers()
        if sched is not None and not isinstance(sched, list):
            apply_at_current_step(sched)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        states, self._pending_rng = getattr(self, "_pending_rng", None), None
        if not states:
            return
        restore_rng_states(states)
        self._shuffle_gen.set_state(states["shuffle_mos"])

    def export(self, out_dir: str, replace: bool = True) -> None:
        """Write the policy + processor with `save_pretrained`, loadable by `prresq.models.load_policy`.

        With LoRA, `model.lora.export` chooses the adapter alone or the merged model (merged in place: last step).
        The run record (`prresq.run_record`: prompt, scoring, pixel caps the run was validated with) is written
        beside the weights as `prresq_run.json`, so `prresq.eval` and `prresq.infer` score with them by default.
        The folder holds this export only: written beside `out_dir` and swapped in whole
        (`prresq.export_dir.write_export`; `replace=False` refuses a folder that holds files).
        """
        write_export(out_dir, self._write_export, replace=replace)

    def _write_export(self, out: Path) -> None:
        if has_adapters(self.policy) and self.policy.prresq_lora.export == "adapter":
            save_adapter(self.policy, out)
        else:
            if has_adapters(self.policy):
                merge_adapters(self.policy)
            self.policy.save_pretrained(out)
        self.processor.save_pretrained(out)
        record = self.hparams.get("run_record")
        if record:
            write_run_record(out, record)


def _instantiate(node: Mapping[str, Any], key: str) -> Any:
    """`hydra.utils.instantiate` of a config node that must name its `_target_` (plain containers passed on)."""
    if "_target_" not in node:
        raise ValueError(f"{key}: the config has no _target_ (got keys {sorted(node)}); see conf/{key}/")
    return instantiate(node, _convert_="all")


def _nanstd(x: Tensor) -> Tensor:
    """Unbiased std over dim 1 ignoring NaN; NaN where fewer than 2 values parse."""
    ok = ~torch.isnan(x)
    n = ok.sum(1)
    mean = torch.nansum(x, 1) / n.clamp(min=1)
    var = torch.where(ok, (x - mean[:, None]) ** 2, torch.zeros_like(x)).sum(1) / (n - 1).clamp(min=1)
    return torch.where(n >= 2, var.sqrt(), torch.full_like(var, float("nan")))
