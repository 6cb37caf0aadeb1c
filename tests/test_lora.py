"""LoRA policies (`prresq.lora`): the reference is the base model with adapters disabled, no second copy.

The tiny model is made decisive first (as in tests/test_prefix.py) and the adapters are given non-zero
weights where a test needs the policy to differ from its base, so that a reference pass that kept the
adapters on, or a load that dropped them, changes the numbers below.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf, open_dict
from test_prefix import _gen_kwargs, _images
from test_train import TINY, _logged, assert_last_step_logged_alike, compose_train

from prresq.lora import (
    PRRESQ_BASE,
    LoraConfig,
    adapters_disabled,
    apply_lora,
    check_checkpoint_kind,
    is_adapter_parameter,
    trainable_parameters,
)
from prresq.models import load_policy, load_processor, load_reference, load_scoring_model, model_fingerprint
from prresq.module import GRPOModule
from prresq.prefix import completion_logprobs_shared
from prresq.rollout import generate_completions
from prresq.train import run

CONF = Path(__file__).resolve().parents[1] / "conf"
K = 3


def _decisive(model: torch.nn.Module) -> torch.nn.Module:
    """Unit-gain decoder weights and a random untied head: answers depend on image and adapters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, module in model.model.language_model.named_modules():
            if isinstance(module, torch.nn.Linear) and "lora_" not in name:  # base weights only
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(module.in_features))
    head = torch.randn(model.lm_head.weight.shape, generator=gen) * 0.5
    model.lm_head.weight = torch.nn.Parameter(head, requires_grad=model.lm_head.weight.requires_grad)
    return model


def _perturb_adapters(model: torch.nn.Module, scale: float = 0.3) -> None:
    """Non-zero adapter weights ("trained"): lora_B starts at 0, so the policy would equal its base."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_adapter_parameter(name):
                p.add_(torch.randn(p.shape, generator=gen) * scale / math.sqrt(p.shape[-1]))


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, min_pixels=28 * 28, max_pixels=112 * 112)


# ----------------------------------------------------------------------------- config and bad input


def test_every_model_config_defaults_to_full_fine_tuning_and_the_override_fills_defaults():
    """`model.lora` is null in every conf/model file; `'model.lora={r:16}'` gives r=16, other keys from LoraConfig."""
    for path in sorted((CONF / "model").glob("*.yaml")):
        assert "lora" in OmegaConf.load(path) and OmegaConf.load(path).lora is None, path.name
    cfg = compose_config("train", ["model=qwen2_5_vl_7b", "model.lora={r:16}", "strategy=deepspeed_zero3"])
    tiny = compose_config("train", ["experiment=tiny_lora"])
    spec = LoraConfig.from_mapping(OmegaConf.to_container(cfg.model.lora))
    assert spec == dataclasses.replace(LoraConfig(), r=16)
    assert spec.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert (spec.vision, spec.export) == ("frozen", "adapter")
    assert tiny.model.lora.r == 16 and tiny.warmup.enabled and tiny.loss.beta == 0.04
    with pytest.raises(KeyError, match=r"model.lora: unknown key\(s\) \['rank'\]"):
        LoraConfig.from_mapping({"rank": 8})
    with pytest.raises(ValueError, match="model.lora.vision='lora'"):
        LoraConfig.from_mapping({"vision": "lora"})


def test_target_modules_that_match_nothing_list_the_models_names(tiny_model_dir):
    """An unknown target leaf name is an error naming the key and the language model's linear layer names."""
    with pytest.raises(ValueError) as err:
        load_policy(tiny_model_dir, lora={"target_modules": ["q_proj", "query"]})
    msg = str(err.value)
    assert "model.lora.target_modules: ['query']" in msg and "'o_proj'" in msg and "'gate_proj'" in msg
    with pytest.raises(ValueError, match="model.freeze_vision=true contradicts model.lora.vision='full'"):
        load_policy(tiny_model_dir, freeze_vision=True, lora={"vision": "full"})


@pytest.mark.parametrize("vision", ["frozen", "adapters", "full"])
def test_only_the_adapters_are_trainable(tiny_model_dir, vision):
    """Trainable parameters are exactly the adapter factors (plus the vision copy for `full`); vision per mode."""
    model = load_policy(tiny_model_dir, lora={"r": 4, "vision": vision})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter_parameter(n) for n in trainable)
    vision_trainable = {n for n in trainable if ".visual." in f".{n}"}
    assert bool(vision_trainable) == (vision != "frozen")
    language = {n for n in trainable if ".language_model." in n}
    # 2 layers x 7 projections x (A, B)
    assert len(language) == 2 * 7 * 2
    n_train, n_total = trainable_parameters(model)
    if vision == "frozen":  # r * (in + out) per projection, hand-computed for the tiny sizes
        h, i, kv = 128, 256, 2 * (128 // 4)
        per_layer = 4 * ((h + h) + (h + kv) + (h + kv) + (h + h)) + 4 * ((h + i) + (h + i) + (i + h))
        assert n_train == 2 * per_layer
    assert n_train < n_total


def test_checkpoint_kind_mismatch_names_both_sides():
    """Resuming LoRA from a full checkpoint (or the reverse) is an error that says which is which."""
    lora_state = {"policy.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight": 0}
    full_state = {"policy.model.language_model.layers.0.self_attn.q_proj.weight": 0}
    check_checkpoint_kind(lora_state, True, "x.ckpt")
    check_checkpoint_kind(full_state, False, "x.ckpt")
    with pytest.raises(ValueError, match=r"x.ckpt: the checkpoint is from a full fine-tune .* this run is a LoRA run"):
        check_checkpoint_kind(full_state, True, "x.ckpt")
    with pytest.raises(ValueError, match=r"the checkpoint is from a LoRA run .* this run is a full fine-tune"):
        check_checkpoint_kind(lora_state, False, "x.ckpt")


# ----------------------------------------------------------------------------- the reference


@pytest.mark.parametrize("vision", ["frozen", "adapters", "full"])
def test_reference_with_adapters_disabled_equals_a_frozen_copy(tiny_model_dir, processor, vision):
    """Shared-prefix log-probs of the policy with adapters off are bitwise those of a separate frozen base copy."""
    policy = _decisive(load_policy(tiny_model_dir))
    frozen = load_reference(policy)  # the copy a full fine-tune would build
    apply_lora(policy, LoraConfig(r=4, dropout=0.0, vision=vision))
    _perturb_adapters(policy)
    policy.train()
    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)])
    torch.manual_seed(0)
    completion, mask = generate_completions(frozen, inputs, K, **_gen_kwargs(processor))
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    with torch.no_grad():
        ref = completion_logprobs_shared(frozen, inputs, K, completion, mask)
        with adapters_disabled(policy) as base:
            off = completion_logprobs_shared(base, inputs, K, completion, mask)
        on = completion_logprobs_shared(policy, inputs, K, completion, mask)
    m = mask.bool()
    assert torch.equal(off[m], ref[m])
    assert (on[m] - ref[m]).abs().max() > 0.05, "the adapters do not change the policy: the check has no teeth"
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == trainable  # restored after the block


def _module(tiny_model_dir, tmp_path, lora: dict, beta: float = 0.04) -> GRPOModule:
    overrides = ["experiment=tiny_synthetic", "grpo.k=3", "grpo.max_new_tokens=8"]
    cfg = compose_config("train", overrides, model_dir=tiny_model_dir, root_dir=tmp_path, output_dir=tmp_path)
    with open_dict(cfg):
        cfg.model.tiny = None
        cfg.model.lora = lora
        cfg.loss.beta = beta
    plain = OmegaConf.to_container(cfg, resolve=True)
    return GRPOModule(**{k: plain[k] for k in ("model", "grpo", "loss", "reward", "optim", "lr_scheduler", "scoring")})


def _batch(processor) -> dict:
    return {
        "model_inputs": _images(processor, [(112, 112), (56, 84), (84, 56)]),
        "mos": torch.tensor([1.5, 3.0, 4.5]),
        "dataset_ids": torch.zeros(3, dtype=torch.long),
    }


def test_at_init_policy_and_reference_agree_and_the_kl_is_exactly_zero(tiny_model_dir, processor, tmp_path):
    """A LoRA module builds no reference copy; its rollout's reference log-probs equal the policy's, KL = 0.

    Also pins the shared-prefix path for the reference: one vision encoding per rollout pass (generation
    prefill, reference) for the whole batch, not one per completion.
    """
    module = _module(tiny_model_dir, tmp_path, {"r": 8, "dropout": 0.05})  # dropout on: B = 0 keeps it exact
    assert module.reference is None and module.loss_fn.beta == 0.04
    _decisive(module.policy)
    batch = _batch(module.processor)
    calls: list[int] = []
    hook = module.policy.model.visual.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    torch.manual_seed(0)
    try:
        ro = module.rollout(batch)
    finally:
        hook.remove()
    rows = batch["model_inputs"]["pixel_values"].shape[0]
    assert calls == [rows, rows], f"vision tower calls (patch rows each): {calls}"  # generation, reference
    logp = module.engine.all_logprobs(module.policy, ro.inputs, ro.completion, ro.mask)
    assert torch.equal(logp, ro.ref_logp)
    _, stats = module.loss_fn(logp, ro.advantages, ro.mask, ref_logp=ro.ref_logp)
    assert float(stats.kl) == 0.0
    _perturb_adapters(module.policy)  # once the adapters move, the same path gives a non-zero KL
    moved = module.engine.all_logprobs(module.policy, ro.inputs, ro.completion, ro.mask)
    _, stats = module.loss_fn(moved, ro.advantages, ro.mask, ref_logp=ro.ref_logp)
    assert float(stats.kl) > 1e-4


def test_gradient_checkpointing_gives_the_same_adapter_gradients(tiny_model_dir, processor):
    """Non-reentrant checkpointing with LoRA: same loss and adapter gradients; frozen weights get none."""
    inputs = _images(processor, [(112, 112), (56, 84)])
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # same lora_A initialisation in both models
        policy = _decisive(
            load_policy(tiny_model_dir, gradient_checkpointing=checkpointing, lora={"r": 4, "dropout": 0.0})
        )
        _perturb_adapters(policy, scale=0.05)
        if not results:
            torch.manual_seed(0)
            completion, mask = generate_completions(policy, inputs, K, **_gen_kwargs(processor))
        policy.train()
        with torch.no_grad(), adapters_disabled(policy):
            ref = completion_logprobs_shared(policy, inputs, K, completion, mask)
        logp = completion_logprobs_shared(policy, inputs, K, completion, mask)
        adv = torch.linspace(-1, 1, logp.shape[0])
        loss = (
            -(adv[:, None] * logp * mask).sum() / mask.sum() + 0.04 * (torch.exp(ref - logp) - (ref - logp) - 1).mean()
        )
        loss.backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss0, g0), (loss1, g1) = results
    assert g0.keys() == g1.keys() and all(is_adapter_parameter(n) for n in g0)
    assert any(g.abs().max() > 0 for g in g0.values())
    torch.testing.assert_close(loss1, loss0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------- export round trip


def _greedy(model, processor, inputs) -> torch.Tensor:
    kwargs = _gen_kwargs(processor, max_new_tokens=10)
    return generate_completions(model, inputs, 1, do_sample=False, **kwargs)[0]


def test_adapter_and_merged_exports_round_trip_with_identical_greedy_outputs(tiny_model_dir, tmp_path):
    """Adapter export -> load_policy and prresq.eval's loader; merged export -> load_policy: same greedy answers."""
    module = _module(tiny_model_dir, tmp_path, {"r": 4, "vision": "adapters"})
    processor = module.processor
    _decisive(module.policy)
    _perturb_adapters(module.policy)
    inputs = _images(processor, [(112, 112), (56, 84), (84, 56)])
    module.policy.eval()
    expected = _greedy(module.policy, processor, inputs)
    with adapters_disabled(module.policy):
        base_answers = _greedy(module.policy, processor, inputs)
    assert not torch.equal(expected, base_answers), "adapters do not change the greedy answers: no teeth"
    expected_state = {k: v.clone() for k, v in module.policy.state_dict().items()}

    module.export(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "adapter" / "config.json").exists()
    # The adapter export does not contain the base weights: it loads onto the base model it names.
    base = _decisive(load_policy(tiny_model_dir))
    base.save_pretrained(tmp_path / "base")
    cfg = (tmp_path / "adapter" / "adapter_config.json").read_text()
    (tmp_path / "adapter" / "adapter_config.json").write_text(
        cfg.replace(str(Path(tiny_model_dir).resolve()), str(tmp_path / "base"))
    )
    # The adapters were trained on the decisive weights (in memory), which that folder holds: record it as their base.
    record = {"base_model": str(tmp_path / "base"), "fingerprint": model_fingerprint(tmp_path / "base")}
    (tmp_path / "adapter" / PRRESQ_BASE).write_text(json.dumps(record))
    loaded = load_policy(tmp_path / "adapter").eval()
    assert torch.equal(_greedy(loaded, processor, inputs), expected)
    state = loaded.state_dict()
    assert state.keys() == expected_state.keys() and all(torch.equal(state[k], expected_state[k]) for k in state)
    scorer, _ = load_scoring_model({"dtype": "float32", "attn_implementation": "sdpa"}, checkpoint=tmp_path / "adapter")
    assert torch.equal(_greedy(scorer, processor, inputs), expected)

    module.policy.prresq_lora = dataclasses.replace(module.policy.prresq_lora, export="merged")
    module.export(str(tmp_path / "merged"))
    merged = load_policy(tmp_path / "merged").eval()
    assert not any("lora" in n for n in merged.state_dict())
    assert torch.equal(_greedy(merged, processor, inputs), expected)
    with pytest.raises(ValueError, match="is a LoRA adapter export; model.lora must be null"):
        load_policy(tmp_path / "adapter", lora={"r": 4})


# ----------------------------------------------------------------------------- training with a real Trainer

SNAPSHOTS: dict[int, dict[str, torch.Tensor]] = {}


class SnapshotPolicy(L.Callback):
    """Named policy weights before step 1 and after each step, and the optimiser's parameter count."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            SNAPSHOTS[0] = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}
            SNAPSHOTS[-1] = {"n_optimised": sum(len(g["params"]) for g in trainer.optimizers[0].param_groups)}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        SNAPSHOTS[trainer.global_step] = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}


LORA_RUN = [
    *TINY,
    "model.lora={r: 4}",
    "+reward.length={name: test_char_count, weight: 1.0}",
    "trainer.val_check_interval=null",
    "trainer.limit_val_batches=0",
    "callbacks.checkpoint.every_n_train_steps=2",
    "export_dir=null",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_one_step_changes_only_adapters_and_resume_is_exact(tmp_path, cache_dir):
    """A real Trainer step moves adapter weights only; a LoRA run resumed from its checkpoint logs the same step.

    The checkpoint holds the adapter weights and the optimiser state of exactly the adapter parameters;
    resuming it as a full fine-tune is the mismatch error.
    """
    SNAPSHOTS.clear()
    probe = f"+callbacks.snap={{_target_: {__name__}.SnapshotPolicy}}"
    run(compose_train([*LORA_RUN, "trainer.max_steps=3", probe], tmp_path / "full", cache_dir))
    before, after = SNAPSHOTS[0], SNAPSHOTS[1]
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(is_adapter_parameter(n) for n in changed), sorted(changed)[:5]
    assert any("lora_B" in n for n in changed)
    n_adapters = sum(is_adapter_parameter(n) for n in before)
    assert SNAPSHOTS[-1]["n_optimised"] == n_adapters

    run(compose_train([*LORA_RUN, "trainer.max_steps=2"], tmp_path / "part", cache_dir))
    ckpt = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert any("lora_B" in k for k in ckpt["state_dict"]) and not any(
        k.startswith("reference.") for k in ckpt["state_dict"]
    )
    assert len(ckpt["optimizer_states"][0]["state"]) == n_adapters
    resumed = compose_train([*LORA_RUN, "trainer.max_steps=3", "ckpt_path=last"], tmp_path / "part", cache_dir)
    run(resumed)
    assert_last_step_logged_alike(tmp_path / "full", tmp_path / "part")
    assert _logged(tmp_path / "full", "train/kl").iloc[-1] > 0  # the adapters moved away from the reference

    # prresq.eval / prresq.infer load a LoRA run's .ckpt with its adapters (model.lora from its hyperparameters).
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    scorer, _ = load_scoring_model({"dtype": "float32", "attn_implementation": "sdpa"}, checkpoint=last)
    loaded = scorer.state_dict()
    assert loaded.keys() == {k[len("policy.") :] for k in state if k.startswith("policy.")}
    assert all(torch.equal(v, state[f"policy.{k}"]) for k, v in loaded.items())
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in loaded.items())
    as_full = [o for o in LORA_RUN if not o.startswith("model.lora")]
    wrong = [*as_full, "trainer.max_steps=3", "ckpt_path=last"]
    with pytest.raises(ValueError, match=r"must not change mid-run:\n  - model\.lora"):  # prresq.resume_config
        run(compose_train(wrong, tmp_path / "part", cache_dir))
    forced = compose_train([*wrong, "resume_with_changes=true"], tmp_path / "part", cache_dir)
    with pytest.raises(ValueError, match="the checkpoint is from a LoRA run .* this run is a full fine-tune"):
        run(forced)


@pytest.mark.slow
def test_ddp_two_processes_with_lora(tmp_path):
    """A real 2-process gloo DDP step with LoRA: same all-reduced adapter gradient on both ranks, base untouched."""
    import test_scaleout as so

    root = tmp_path / "root"
    model_dir = so.prepare_root(root)
    probes, _ = so.ddp_step(root, tmp_path, ["model.lora={r: 4}"])
    rank0, rank1 = sorted(probes, key=lambda p: p["rank"])
    assert (rank0["world_size"], rank1["world_size"]) == (2, 2) and not set(rank0["ids"]) & set(rank1["ids"])
    names = [n for n, _ in load_policy(model_dir, lora={"r": 4}).named_parameters()]
    sizes = [p.numel() for p in load_policy(model_dir, lora={"r": 4}).parameters()]
    adapter = torch.cat([torch.full((s,), is_adapter_parameter(n)) for n, s in zip(names, sizes)])
    assert adapter.numel() == rank0["grad"].numel()
    scale = rank0["grad"][adapter].abs().max().item()
    assert scale > 0
    assert (rank0["grad"] - rank1["grad"]).abs().max().item() <= 1e-5 * scale
    assert torch.equal(rank0["after"][~adapter], rank0["before"][~adapter]), "a frozen base weight moved"
    assert (rank0["after"][adapter] - rank0["before"][adapter]).abs().max() > 1e-5
    assert torch.allclose(rank0["after"], rank1["after"], rtol=0, atol=1e-7)
    assert rank0["grad"][~adapter].abs().max() == 0
