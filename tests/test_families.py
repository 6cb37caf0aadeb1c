"""The model-family seam (`prresq.models`): every family's tiny model through the code a run uses.

Per family (`conftest.ALL_FAMILIES`): a collated batch from the real collator (placeholder check, supervised
labels) runs through the model; the warm-up's vision phase trains the family's tower; `freeze_vision`
freezes it; LoRA's reference (adapters off) equals a frozen copy; both engines and scoring call no
deprecated API. Bad input: a directory of an unsupported family, and a model of one family loaded with
another family's config, are errors that name the families.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import ALL_FAMILIES, CONF
from omegaconf import OmegaConf
from PIL import Image

from prresq.config import GRPOConfig
from prresq.data.collate import PromptCollator
from prresq.data.dataflow import build_flows
from prresq.data.records import Record
from prresq.engine import PlainEngine, SharedPrefixEngine, build_engine
from prresq.lora import LoraConfig, adapters_disabled, apply_lora, is_adapter_parameter
from prresq.models import ensure_model_dir, load_policy, load_processor, load_reference, load_scoring_model
from prresq.models.families import family_of, family_of_dir, family_of_processor
from prresq.prefix import completion_logprobs_shared
from prresq.rollout import VisionIds, generate_completions
from prresq.sampling import GenerationTokens, SamplingConfig
from prresq.scoring import ScoringConfig, score_batch
from prresq.warmup import pretrain_vision

K = 3


@pytest.fixture(scope="module", params=ALL_FAMILIES)
def family_dir(request, tiny_family_dir):
    return tiny_family_dir(request.param)


@pytest.fixture(scope="module")
def processor(family_dir):
    return load_processor(family_dir, min_pixels=28 * 28, max_pixels=112 * 112)


def _decisive(model: torch.nn.Module) -> torch.nn.Module:
    """Unit-gain decoder weights and a random untied head: answers depend on image and adapters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, module in model.model.language_model.named_modules():
            if isinstance(module, torch.nn.Linear) and "lora_" not in name:
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(module.in_features))
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=gen) * 0.5)
    return model


def _inputs(processor, with_video: bool = False) -> dict:
    rng = np.random.default_rng(0)
    content = [{"type": "image"}, {"type": "text", "text": "Rate the quality."}]
    texts = [processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)]
    texts *= 2
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(112, 112), (56, 84)]]
    kwargs: dict = {}
    if with_video:
        video = [{"type": "video"}, {"type": "text", "text": "Rate."}]
        texts.append(processor.apply_chat_template([{"role": "user", "content": video}], add_generation_prompt=True))
        meta = {"total_num_frames": 4, "fps": 2.0, "duration": 2.0, "width": 56, "height": 56}
        kwargs = dict(
            videos=[rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)],
            video_metadata=[{**meta, "frames_indices": list(range(4))}],
            do_sample_frames=False,
        )
    return dict(processor(text=texts, images=images, padding=True, return_tensors="pt", **kwargs))


# ----------------------------------------------------------------------------- the seam in a run's code


def test_collated_batch_runs_through_the_model(family_dir, processor, tmp_path):
    """The real collator (placeholder check, answer labels ending with the family's end of turn) feeds the model."""
    rng = np.random.default_rng(0)
    records = []
    for i, (h, w) in enumerate([(112, 112), (56, 84)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(Record(id=str(i), media=path, mos=3.0, mos_mapped=3.0, dataset="d"))
    collate = PromptCollator(
        processor, "Rate the quality.", answer_fn=lambda r: "<think>ok</think><answer>3.00</answer>"
    )
    batch = collate(records)
    inputs = batch["model_inputs"]
    end = processor.tokenizer.convert_tokens_to_ids(family_of_processor(processor).end_of_turn)
    assert (inputs["labels"][:, -1] == end).all()
    model = load_policy(family_dir)
    loss = model(**inputs, use_cache=False).loss
    assert torch.isfinite(loss) and loss > 0
    placeholder = collate.family.media_groups(model.config)[0].token_id
    ids = inputs["input_ids"].clone()
    ids[0, (ids[0] == placeholder).nonzero()[0]] = 0  # one placeholder lost (as a truncated prompt would)
    broken = {**inputs, "input_ids": ids}
    with pytest.raises(RuntimeError, match="vision placeholder tokens"):
        collate.family.placeholder_check(processor, broken)


def test_the_tiny_processor_normalises_images_as_the_familys_stock_processor(family_dir, processor):
    """Image mean/std of the stock processors (their preprocessor_config.json): CLIP for Qwen2.5-VL, 0.5 for
    Qwen3-VL and Qwen3.5, ImageNet for InternVL."""
    clip = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
    half = ([0.5] * 3, [0.5] * 3)
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    mean, std = {"qwen2_5_vl": clip, "qwen3_vl": half, "qwen3_5": half, "internvl": imagenet}[
        family_of_dir(family_dir).name
    ]
    assert list(processor.image_processor.image_mean) == pytest.approx(mean)
    assert list(processor.image_processor.image_std) == pytest.approx(std)


def test_the_synthetic_crops_reach_every_family_at_the_same_number_of_vision_tokens(family_dir):
    """`data=synthetic_iqa`'s pixel caps on its 112-px crops: 16 placeholder tokens for the patch-grid families
    (112 x 112 at a 28-px factor, 128 x 128 at 32 px; a 112 * 112 cap cut Qwen3-VL to 96 x 96 = 9 tokens),
    InternVL's 2 x 2 tiles of 56 px plus its thumbnail."""
    caps = OmegaConf.load(CONF / "data" / "synthetic_iqa.yaml")
    processor = load_processor(family_dir, caps.min_pixels, caps.max_pixels)
    content = [{"type": "image"}, {"type": "text", "text": "Rate."}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8))
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    family = family_of_dir(family_dir)
    config = json.loads((family_dir / "config.json").read_text())
    group = family.media_groups(OmegaConf.create(config))[0]
    tokens = int((inputs["input_ids"] == group.token_id).sum())
    if family.name == "internvl":
        assert inputs["pixel_values"].shape[0] == 5  # 4 tiles + the thumbnail
    else:
        assert tokens == 16


def test_native_video_frames_take_the_familys_size_factor(family_dir, processor):
    """conf/dataflow/video_native.yaml leaves `size_factor` null: the processor's family fills it (28, 32, a tile)."""
    spec = OmegaConf.to_container(OmegaConf.load(CONF / "dataflow" / "video_native.yaml"))
    assert spec["size_factor"] is None
    flow = build_flows(None, spec, processor)["vqa"]
    # patch x merge: 14 x 2, 16 x 2; InternVL: the tiny model's 56-pixel tile
    expected = {"qwen2_5_vl": 28, "qwen3_vl": 32, "qwen3_5": 32, "internvl": 56}[family_of_dir(family_dir).name]
    assert flow.size_factor == expected


def test_vision_warmup_trains_and_freeze_vision_freezes_the_familys_tower(family_dir, processor):
    model = load_policy(family_dir)
    family = family_of(model)
    tower = family.vision_module(model)
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    batch = {"model_inputs": _inputs(processor), "mos": torch.tensor([1.0, 5.0])}
    losses = pretrain_vision(model, [batch], steps=2, lr=1e-3)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in tower.state_dict().items())
    frozen = load_policy(family_dir, freeze_vision=True)
    names = {n for n, p in frozen.named_parameters() if not p.requires_grad}
    assert names and all(family.is_vision_parameter(n) for n in names)
    assert {n for n, _ in frozen.named_parameters() if family.is_vision_parameter(n)} == names


@pytest.mark.parametrize("vision", ["adapters", "full"])
def test_lora_reference_with_adapters_off_equals_a_frozen_copy(family_dir, processor, vision):
    policy = _decisive(load_policy(family_dir))
    frozen = load_reference(policy)
    apply_lora(policy, LoraConfig(r=4, vision=vision))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if is_adapter_parameter(name):
                p.add_(torch.randn(p.shape, generator=gen) * 0.3 / math.sqrt(p.shape[-1]))
    assert any(family_of(policy).is_vision_parameter(n) for n, p in policy.named_parameters() if p.requires_grad)
    inputs = _inputs(processor)
    tok = processor.tokenizer
    tokens = GenerationTokens.from_tokenizer(tok)
    torch.manual_seed(0)
    completion, mask = generate_completions(frozen, inputs, K, tokens, SamplingConfig(max_new_tokens=6))
    with torch.no_grad():
        ref = completion_logprobs_shared(frozen, inputs, K, completion, mask)
        with adapters_disabled(policy) as base:
            off = completion_logprobs_shared(base, inputs, K, completion, mask)
        on = completion_logprobs_shared(policy, inputs, K, completion, mask)
    m = mask.bool()
    assert torch.equal(off[m], ref[m])
    assert (on[m] - ref[m]).abs().max() > 0.05


def test_engines_and_scoring_call_no_deprecated_api(family_dir, processor):
    """Item: no deprecated API in the hot path (e.g. `past_key_values=` where transformers wants `cache=`)."""
    model = load_policy(family_dir)
    inputs = _inputs(processor, with_video=True)
    tokens = GenerationTokens.from_tokenizer(processor.tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        for shared in (True, False):
            cfg = GRPOConfig(k=2, max_new_tokens=4, micro_batch_size=2, shared_prefix=shared)
            engine = build_engine(cfg, tokens, VisionIds.from_config(model.config))
            completion, mask = engine.generate(model, inputs)
            rows = engine.prompt_rows(inputs)
            engine.all_logprobs(model, rows, completion, mask)
            model.train()
            engine.logprobs(
                model, rows, engine.micro_batches(completion.shape[0])[0], completion, mask
            ).sum().backward()
            model.eval()
            scoring = ScoringConfig(mode="both", n=2, max_new_tokens=4, shared_prefix=shared)
            score_batch(model, processor, inputs, scoring)


def test_a_family_that_cannot_share_the_prefix_says_so_and_uses_the_plain_engine(tiny_family_dir, caplog):
    model = load_policy(tiny_family_dir("qwen3_5"))
    tokens = GenerationTokens([0], 0, [])
    with caplog.at_level(logging.WARNING, logger="prresq.engine"):
        engine = build_engine(GRPOConfig(shared_prefix=True), tokens, VisionIds.from_config(model.config))
    assert isinstance(engine, PlainEngine)
    assert "the Qwen3.5 model family cannot share the prompt prefix exactly" in caplog.text
    shared = tiny_family_dir("qwen3_vl")
    engine = build_engine(GRPOConfig(shared_prefix=True), tokens, VisionIds.from_config(load_policy(shared).config))
    assert isinstance(engine, SharedPrefixEngine)


# ----------------------------------------------------------------------------- bad input


def test_a_directory_of_an_unsupported_family_names_it_and_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(
        ValueError, match=r"model_type 'llava' is not a supported model family.*qwen2_5_vl.*qwen3_vl.*internvl"
    ):
        ensure_model_dir(tmp_path)
    with pytest.raises(ValueError, match=r"model.family='llava' is not supported"):
        ensure_model_dir(tmp_path / "tiny", tiny={"seed": 0}, family="llava")


def test_a_model_of_one_family_under_another_familys_config_is_named(tiny_family_dir, tmp_path):
    internvl = tiny_family_dir("internvl")
    with pytest.raises(
        ValueError, match=r"holds a model of the InternVL family \(model.family=internvl\).*model.family=qwen3_vl"
    ):
        load_policy(internvl, family="qwen3_vl")
    export = tmp_path / "export"
    shutil.copytree(tiny_family_dir("qwen3_vl"), export)  # an export is a model directory too
    model_cfg = {"name_or_path": str(internvl), "family": "qwen2_5_vl", "dtype": "float32"}
    with pytest.raises(
        ValueError, match=r"holds a model of the Qwen3-VL family \(model.family=qwen3_vl\).*model.family=qwen2_5_vl"
    ):
        load_scoring_model(model_cfg, checkpoint=export, device="cpu")
    # A run's .ckpt records its model group; evaluated under another family's model config: named.
    policy = load_policy(internvl)
    ckpt = tmp_path / "last.ckpt"
    hparams = {"model": {"name_or_path": str(internvl), "family": "internvl"}}
    torch.save(
        {"hyper_parameters": hparams, "state_dict": {f"policy.{k}": v for k, v in policy.state_dict().items()}}, ckpt
    )
    model, _ = load_scoring_model({"family": "internvl"}, checkpoint=ckpt, device="cpu")  # its own family: loads
    assert family_of(model).name == "internvl"
    with pytest.raises(
        ValueError, match=r"holds a model of the InternVL family \(model.family=internvl\).*model.family=qwen3_vl"
    ):
        load_scoring_model({"family": "qwen3_vl"}, checkpoint=ckpt, device="cpu")


# ----------------------------------------------------------------------------- a run per family


@pytest.mark.parametrize("family", [f for f in ALL_FAMILIES if f != "qwen2_5_vl"])  # Qwen2.5-VL: tests/test_train.py
def test_training_resumes_at_the_same_step(family, tmp_path_factory):
    """`model=tiny_<family>`: the composed run trains (a non-zero gradient every step) and resumes exactly."""
    from test_train import TINY, _logged, assert_last_step_logged_alike, compose_train

    from prresq.train import run

    cache = tmp_path_factory.mktemp(f"cache-{family}")
    tmp = tmp_path_factory.mktemp(f"runs-{family}")
    common = [
        *TINY,
        f"model=tiny_{family}",
        "+reward.length={name: test_char_count, weight: 1.0}",  # a reward a random model earns: non-zero update
        "grpo.max_new_tokens=4",
        "trainer.val_check_interval=null",
        "trainer.limit_val_batches=0",
        "callbacks.checkpoint.every_n_train_steps=2",
        "export_dir=null",
    ]
    run(compose_train([*common, "trainer.max_steps=3"], tmp / "full", cache))
    run(compose_train([*common, "trainer.max_steps=2"], tmp / "part", cache))
    run(compose_train([*common, "trainer.max_steps=3", "ckpt_path=last"], tmp / "part", cache))
    assert_last_step_logged_alike(tmp / "full", tmp / "part")
    assert (_logged(tmp / "full", "train/grad_norm") > 0).all()
    (written,) = (cache / f"tiny-{family.replace('_', '-')}").glob("*/config.json")  # one folder per tiny spec
    assert json.loads(written.read_text())["model_type"] == family
