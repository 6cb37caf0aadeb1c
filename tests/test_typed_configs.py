"""Typed configs (GRPOConfig, GRPOLoss, optimiser and LR schedule via `_target_`) and the rollout engines."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import open_dict
from test_prefix import _images

from prresq.config import GRPOConfig, to_plain
from prresq.engine import PlainEngine, SharedPrefixEngine
from prresq.loss import GRPOLoss
from prresq.lr_schedule import warmup_decay
from prresq.module import GRPOModule
from prresq.rollout import Rollout


def test_typed_groups_take_overrides_and_refuse_unknown_keys():
    """The `grpo` and `scoring` groups are typed by their dataclasses (ConfigStore `grpo/base`, `scoring/base`):
    the overrides a user types (`grpo.k=4`, `grpo.top_k=5`, `scoring.n=2`, `scoring.shared_prefix=false`) need no
    `+` and reach `GRPOConfig`; `grpo.seed` follows the run's `seed`; an unknown key and a value of the wrong type
    are refused at composition with the key's dotted name (an unknown key added with `+` at start-up)."""
    overrides = [
        "seed=7",
        "grpo.k=4",
        "grpo.top_k=5",
        "grpo.temperature=0.7",
        "scoring.n=2",
        "scoring.shared_prefix=false",
    ]
    cfg = compose_config("train", overrides)
    grpo = GRPOConfig.from_mapping(to_plain(cfg.grpo))
    assert (grpo.k, grpo.top_k, grpo.temperature, grpo.seed) == (4, 5, 0.7, 7)
    assert (cfg.scoring.n, cfg.scoring.shared_prefix, cfg.scoring.mode) == (2, False, "both")
    for override, key in (
        ("grpo.kk=3", r"grpo\.kk"),
        ("grpo.k=four", r"grpo\.k\b"),
        ("scoring.nn=2", r"scoring\.nn"),
        ("scoring.batch_size=2", r"scoring\.batch_size"),  # offline scoring only (eval, infer)
    ):
        with pytest.raises(ConfigCompositionException, match=key):
            compose_config("train", [override])
    assert compose_config("eval", ["scoring.batch_size=2"]).scoring.batch_size == 2
    added = compose_config("train", ["+grpo.kk=3"])  # `+` opens the node; the key is refused at start-up
    with pytest.raises(ValueError, match=r"grpo\.kk: unknown key"):
        GRPOConfig.from_mapping(to_plain(added.grpo))


def test_loss_group_is_the_one_place_of_the_loss_settings(tiny_model_dir, tmp_path):
    """conf/loss/grpo.yaml builds `prresq.loss.GRPOLoss` with the papers' settings (beta 0.04, eps 0.2/0.2,
    sequence aggregation; VisualQuality-R1 Sec. 4.1), `max_tokens` following `grpo.max_new_tokens`; GRPOLoss has no
    defaults of its own, so a setting removed from the block is refused by name, not replaced by a hidden copy."""
    loss = instantiate(compose_config("train", ["grpo.max_new_tokens=17"]).loss)
    assert isinstance(loss, GRPOLoss)
    assert (loss.beta, loss.eps_low, loss.eps_high, loss.aggregation, loss.max_tokens) == (
        0.04,
        0.2,
        0.2,
        "sequence",
        17,
    )
    params = inspect.signature(GRPOLoss).parameters
    assert all(p.default is inspect.Parameter.empty for name, p in params.items() if name != "max_tokens")
    with pytest.raises(InstantiationException, match="beta"):
        _module(tiny_model_dir, tmp_path, ["~loss.beta"])


def test_grpo_config_names_an_unknown_key():
    """A misspelt `grpo` key is refused with its dotted name, not a raw TypeError."""
    with pytest.raises(ValueError, match=r"grpo\.kk: unknown key"):
        GRPOConfig.from_mapping({"k": 4, "kk": 3})


def test_composed_optimiser_and_lr_schedule():
    """`optim` (AdamW partial) and `lr_scheduler` (warm-up then linear decay) compose and build: with 10 steps and
    warmup_ratio 0.2 the LR factors are 1/2, 1 (warm-up), then (10 - s) / 8 for s = 2..9 and 0 after the last."""
    cfg = compose_config("train", ["optim.lr=0.1", "lr_scheduler.warmup_ratio=0.2"])
    param = torch.nn.Parameter(torch.zeros(1))
    opt = instantiate(cfg.optim, _convert_="all")([param])
    assert isinstance(opt, torch.optim.AdamW)
    assert tuple(opt.defaults["betas"]) == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    sched = instantiate(cfg.lr_scheduler, _convert_="all")(opt, total_steps=10)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.05, 0.1] + [0.1 * (10 - s) / 8 for s in range(2, 10)] + [0.0]
    assert lrs == pytest.approx(expected, abs=1e-12)
    constant = warmup_decay(torch.optim.SGD([param], lr=1.0), 10, warmup_ratio=0.0, decay="constant")
    assert constant.get_last_lr() == [1.0]


def _module(tiny_model_dir, tmp_path, overrides: list[str]) -> GRPOModule:
    base = ["experiment=tiny_synthetic", "grpo.k=3", "grpo.max_new_tokens=6"]
    cfg = compose_config("train", [*base, *overrides], model_dir=tiny_model_dir, root_dir=tmp_path, output_dir=tmp_path)
    with open_dict(cfg):
        cfg.model.tiny = None
    keys = ("model", "grpo", "loss", "reward", "optim", "lr_scheduler", "scoring")
    return GRPOModule(**{k: to_plain(cfg[k]) for k in keys})


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from prresq.models import load_processor

    return load_processor(tiny_model_dir)


def test_engines_are_chosen_once_and_give_the_same_rollout(tiny_model_dir, processor, tmp_path):
    """`grpo.shared_prefix` picks the engine at construction; with one seed both engines sample the same
    completions, give the same reference log-probs (to float tolerance) and the same rewards and advantages;
    the rollout's fields have the documented shapes ([B*K, T], [B, K], [B*K]); the plain engine keeps B*K prompt
    rows, the shared one B; micro-batches of 4 completions are 4 rows (plain) or one group of K = 3 (shared)."""
    batch = {
        "model_inputs": _images(processor, [(112, 112), (56, 84)]),
        "mos": torch.tensor([1.5, 4.0]),
        "dataset_ids": torch.zeros(2, dtype=torch.long),
    }
    rollouts: dict[bool, Rollout] = {}
    for shared in (True, False):
        module = _module(tiny_model_dir, tmp_path, [f"grpo.shared_prefix={shared}", "grpo.micro_batch_size=4"])
        assert type(module.engine) is (SharedPrefixEngine if shared else PlainEngine)
        assert [cs for _, cs in module.engine.micro_batches(6)] == (
            [slice(0, 3), slice(3, 6)] if shared else [slice(0, 4), slice(4, 6)]
        )
        torch.manual_seed(0)
        rollouts[shared] = module.rollout(batch)
    shared, plain = rollouts[True], rollouts[False]
    b, k = 2, 3
    assert shared.completion.shape[0] == b * k and shared.mask.shape == shared.completion.shape
    assert shared.scores.shape == shared.total.shape == (b, k) and shared.advantages.shape == (b * k,)
    assert shared.old_logp is None and shared.ref_logp.shape == shared.completion.shape
    assert shared.inputs["input_ids"].shape[0] == b and plain.inputs["input_ids"].shape[0] == b * k
    assert torch.equal(shared.completion, plain.completion) and shared.texts == plain.texts
    torch.testing.assert_close(shared.total, plain.total)
    torch.testing.assert_close(shared.advantages, plain.advantages)
    m = shared.mask.bool()
    torch.testing.assert_close(shared.ref_logp[m], plain.ref_logp[m], atol=1e-4, rtol=1e-4)


def test_a_loss_config_without_target_is_refused(tiny_model_dir, tmp_path):
    """A `loss` block without `_target_` (nothing to build) names the key instead of training with a dict."""
    with pytest.raises(ValueError, match=r"loss: the config has no _target_"):
        _module(tiny_model_dir, tmp_path, ["~loss._target_"])


def test_a_plain_hydra_compose_without_import_prresq_finds_the_typed_groups(tmp_path):
    """Pins: composing `conf/` from a notebook or script that never imports prresq failed with "Could not load
    'grpo/base'". The `hydra_plugins.prresq_configs` plugin registers the typed groups for any Hydra composition:
    the config composes, and the groups are typed (a wrong type is refused naming the key)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "compose.py"
    script.write_text(
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "assert 'prresq' not in sys.modules\n"
        "with initialize_config_dir(config_dir=sys.argv[1], version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['experiment=tiny_synthetic'])\n"
        "    print('k', cfg.grpo.k, cfg.scoring.mode)\n"
        "    compose('train', overrides=['grpo.k=many'])\n"
    )
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(root / "conf")], capture_output=True, text=True, timeout=120, env=env
    )
    assert "k 8 both" in done.stdout, done.stderr[-2000:]
    assert done.returncode != 0 and "grpo.k" in done.stderr and "many" in done.stderr
