"""GRPOModule's micro-batched update: the policy gradients equal the full batch's for every loss aggregation.

Runs the module's own pieces on the tiny Qwen2.5-VL: a real rollout, `_slices` (whole prompts per
micro-batch on the shared-prefix path), `_score` (log-probs with grad) and `GRPOModule.micro_batched_backward`,
which `training_step` calls. Completions are cut to different lengths, so micro-batches hold
different token counts (where a completion-share weighting goes wrong for `token`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf, open_dict
from PIL import Image

from prresq.data.collate import PromptCollator
from prresq.data.records import Record
from prresq.loss import GRPOLoss
from prresq.module import GRPOModule
from prresq.rollout import Rollout

K, T = 3, 6


@pytest.fixture(scope="module")
def module_and_rollout(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    overrides = ["model=tiny", f"grpo.k={K}", f"grpo.max_new_tokens={T}", "prompt=tiny"]
    cfg = compose_config("train", overrides, model_dir=tiny_model_dir, root_dir=root, output_dir=root)
    with open_dict(cfg):
        cfg.model.tiny = None
    plain = OmegaConf.to_container(cfg, resolve=True)
    module = GRPOModule(
        **{k: plain[k] for k in ("model", "grpo", "loss", "reward", "optim", "lr_scheduler", "scoring")}
    )
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    records = []
    for i, (h, w) in enumerate([(56, 56), (84, 56), (56, 112)]):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(Record(f"r{i}", "toy", path, float(i), 1.0 + i, {}, f"toy.jsonl:{i + 1}"))
    batch = PromptCollator(module.processor, cfg.prompt.text)(records)
    torch.manual_seed(0)
    ro = module.rollout(batch)
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 6, 2, 5, 3, 4, 6, 1, 2])  # ragged completions: unequal tokens per prompt
    ro.mask = (torch.arange(T)[None, :] < lengths[:, None]).to(ro.mask.dtype)
    ro.advantages = torch.randn(3 * K, generator=g)
    ro.old_logp = module.engine.all_logprobs(module.policy, ro.inputs, ro.completion, ro.mask)
    ro.old_logp += 0.3 * torch.randn(ro.old_logp.shape, generator=g)  # ratios away from 1, some clipped
    return module, ro


def _gradient(module: GRPOModule, ro: Rollout, micro_batch_size: int | None) -> tuple[float, torch.Tensor]:
    module.grpo.micro_batch_size = micro_batch_size
    module.policy.zero_grad(set_to_none=True)
    stats = GRPOModule.micro_batched_backward(
        module.loss_fn,
        module.engine.micro_batches(ro.completion.shape[0]),
        lambda ps, cs: module.engine.logprobs(module.policy, ro.inputs, (ps, cs), ro.completion, ro.mask),
        ro.advantages,
        ro.mask,
        old_logp=ro.old_logp,
        ref_logp=ro.ref_logp,
    )
    grads = [p.grad.flatten() for p in module.policy.parameters() if p.grad is not None]
    return stats["loss"], torch.cat(grads)


@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_module_micro_batches_give_the_full_batch_gradient(module_and_rollout, aggregation):
    """Pins: micro_batch_size = K or 2K (1 or 2 prompts per micro-batch) gives the full batch's loss and policy gradient."""
    module, ro = module_and_rollout
    module.loss_fn = GRPOLoss(beta=0.04, eps_low=0.2, eps_high=0.2, aggregation=aggregation, max_tokens=T)
    full_loss, full_grad = _gradient(module, ro, None)
    assert full_grad.abs().max() > 0
    for size in (K, 2 * K):
        loss, grad = _gradient(module, ro, size)
        assert len(module.engine.micro_batches(3 * K)) == (3 if size == K else 2)
        assert loss == pytest.approx(full_loss, rel=1e-5, abs=1e-7), size
        torch.testing.assert_close(grad, full_grad, rtol=1e-4, atol=1e-7)
