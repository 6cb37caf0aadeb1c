"""PromptCollator + ImageFlow with the real (tiny) Qwen2.5-VL processor: the batch of prresq/CONTRACTS.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prresq.data.collate import IGNORE_INDEX, PromptCollator, merge_video_kwargs
from prresq.data.dataflow import FlowOutput, ImageFlow, build_flow
from prresq.data.records import DataError, Record
from prresq.models import load_processor

PROMPT = "Rate the overall image visual quality between 1 and 5."


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, min_pixels=56 * 56, max_pixels=112 * 112)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[Record]:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(112, 112), (56, 84), (300, 200)]):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        out.append(Record(f"r{i}", "toy" if i < 2 else "other", path, 10.0 * i, 1.0 + i, {}, f"toy.jsonl:{i + 1}"))
    return out


def _n_image_tokens(processor, batch) -> torch.Tensor:
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return (batch["model_inputs"]["input_ids"] == pad).sum(1)


def test_batch_matches_the_contract(processor, records):
    collate = PromptCollator(processor, PROMPT, ImageFlow(), dataset_ids={"toy": 0, "other": 1})
    batch = collate(records)
    mi = batch["model_inputs"]
    b, p = mi["input_ids"].shape
    assert b == 3 and mi["attention_mask"].shape == (b, p)
    assert batch["mos"].dtype == torch.float32 and batch["mos"].tolist() == [1.0, 2.0, 3.0]
    assert batch["dataset_ids"].dtype == torch.long and batch["dataset_ids"].tolist() == [0, 0, 1]
    assert batch["ids"] == ["r0", "r1", "r2"] and batch["media"] == [str(r.media) for r in records]
    assert "labels" not in mi
    # one image per row: its placeholder count equals its grid (t*h*w / merge^2)
    grid = mi["image_grid_thw"]
    assert grid.shape == (3, 3)
    assert _n_image_tokens(processor, batch).tolist() == (grid.prod(-1) // 4).tolist()
    assert mi["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    assert grid.prod(-1).max() * 14 * 14 <= 112 * 112  # the pixel cap was applied


def test_left_padding_and_generation_prompt(processor, records):
    batch = PromptCollator(processor, PROMPT)(records)
    mask = batch["model_inputs"]["attention_mask"]
    ids = batch["model_inputs"]["input_ids"]
    assert (mask[:, -1] == 1).all()  # every row ends with real tokens
    assert (mask.sum(1) < mask.shape[1]).any()  # rows of different length: some padding
    for row, m in zip(ids, mask):
        n_pad = int((m == 0).sum())
        assert (m[:n_pad] == 0).all() and (row[:n_pad] == processor.tokenizer.pad_token_id).all()
    text = processor.tokenizer.decode(ids[0][mask[0].bool()])
    assert text.endswith("<|im_start|>assistant\n") and PROMPT in text


def test_prompt_never_truncated(processor, records):
    long_prompt = " ".join(["Describe the noise, blur and colour of the picture in detail."] * 60)
    tok = processor.tokenizer
    old = tok.model_max_length
    tok.model_max_length = 64
    try:
        batch = PromptCollator(processor, long_prompt)(records[:2])
    finally:
        tok.model_max_length = old
    mi = batch["model_inputs"]
    assert mi["input_ids"].shape[1] > 64 + 16
    assert long_prompt in tok.decode(mi["input_ids"][0])
    assert _n_image_tokens(processor, batch).tolist() == (mi["image_grid_thw"].prod(-1) // 4).tolist()


def test_labels_mask_prompt_and_padding(processor, records):
    answer = "<think>ok</think><answer>{:.2f}</answer>"
    collate = PromptCollator(processor, PROMPT, answer_fn=lambda r: answer.format(r.mos_mapped))
    batch = collate(records)
    mi = batch["model_inputs"]
    labels, ids = mi["labels"], mi["input_ids"]
    assert labels.shape == ids.shape
    tok = processor.tokenizer
    for i, r in enumerate(records):
        keep = labels[i] != IGNORE_INDEX
        assert tok.decode(labels[i][keep]) == answer.format(r.mos_mapped) + "<|im_end|>"
        assert torch.equal(labels[i][keep], ids[i][keep])
        n = int(keep.sum())
        assert keep[-n:].all() and not keep[:-n].any()  # only the tail: prompt and left padding are -100
    # the prompt part is identical to the generation batch (same image tokens, prompt ends the same)
    gen = PromptCollator(processor, PROMPT)(records)
    assert _n_image_tokens(processor, batch).tolist() == _n_image_tokens(processor, gen).tolist()


def test_prompt_pool_is_seeded_per_sample(processor, records):
    pool = ["Rate it.", "Score the image quality.", "How good is this picture?"]
    many = [Record(f"id{i}", "toy", records[0].media, 1.0, 1.0, {}, "") for i in range(30)]
    a = PromptCollator(processor, pool, seed=1)
    picks = [a.prompt_for(r) for r in many]
    assert set(picks) == set(pool)
    assert picks == [PromptCollator(processor, pool, seed=1).prompt_for(r) for r in many]
    assert picks != [PromptCollator(processor, pool, seed=2).prompt_for(r) for r in many]
    with pytest.raises(ValueError):
        PromptCollator(processor, [])


def test_corrupt_image_raises_with_jsonl_line_or_is_skipped(processor, records, tmp_path):
    bad_path = tmp_path / "bad.png"
    bad_path.write_bytes(b"not an image at all")
    bad = Record("bad", "toy", bad_path, 1.0, 1.0, {}, "/data/toy/train.jsonl:7")
    with pytest.raises(DataError, match=r"/data/toy/train.jsonl:7: .*bad.png: corrupt or unreadable image"):
        PromptCollator(processor, PROMPT)([records[0], bad])
    skip = PromptCollator(processor, PROMPT, on_bad_sample="skip")
    batch = skip([records[0], bad, None, records[1]])
    assert batch["ids"] == ["r0", "r1"] and batch["model_inputs"]["input_ids"].shape[0] == 2
    assert len(skip.skipped) == 1 and "train.jsonl:7" in skip.skipped[0]
    assert skip([bad]) is None and len(skip.skipped) == 2


def test_flow_seam_passes_videos_and_kwargs_through(records):
    """A non-image flow: `videos=` and the merged `video_kwargs` reach the processor unchanged."""

    class FakeProcessor:
        class tokenizer:  # noqa: N801
            vocab = {
                "<|image_pad|>": 1,
                "<|video_pad|>": 2,
                "<|vision_start|>": 3,
                "<|vision_end|>": 4,
                "<|vision_pad|>": 5,
            }

            @classmethod
            def get_vocab(cls) -> dict[str, int]:
                return cls.vocab

            @classmethod
            def convert_tokens_to_ids(cls, t: str) -> int:
                return cls.vocab[t]

        image_processor = type("IP", (), {"merge_size": 2})()

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            assert add_generation_prompt and not tokenize
            return "|".join(c.get("type") + ":" + c.get("text", "") for c in messages[0]["content"])

        def __call__(self, **kw):
            self.kw = kw
            return {"input_ids": torch.tensor([[0, 2], [0, 2]]), "video_grid_thw": torch.tensor([[1, 2, 2], [1, 1, 4]])}

    def flow(path: Path, prompt: str) -> FlowOutput:
        return FlowOutput(
            [{"type": "video"}, {"type": "text", "text": prompt}],
            [],
            [str(path)],
            {"meta": [path.name], "fps_mode": "x"},
        )

    proc = FakeProcessor()
    batch = PromptCollator(proc, "Q", flow)(records[:2])
    assert proc.kw["images"] is None and proc.kw["videos"] == [str(records[0].media), str(records[1].media)]
    assert proc.kw["meta"] == ["0.png", "1.png"] and proc.kw["fps_mode"] == "x"
    assert proc.kw["padding_side"] == "left" and proc.kw["truncation"] is False
    assert batch["ids"] == ["r0", "r1"]
    with pytest.raises(ValueError, match="differs"):
        merge_video_kwargs([{"a": 1}, {"a": 2}])


def test_build_flow_by_name_target_or_instance():
    assert isinstance(build_flow("image"), ImageFlow)
    assert isinstance(build_flow({"_target_": "prresq.data.dataflow.ImageFlow"}), ImageFlow)
    assert isinstance(build_flow(None), ImageFlow)
    flow = ImageFlow()
    assert build_flow(flow) is flow
    with pytest.raises(ValueError, match="unknown data flow"):
        build_flow("nope")
