"""The embedded tiny model's tokenizer: byte-level BPE trained offline, in the real Qwen2 tokenizer class.

It carries the Qwen special tokens and the Qwen2.5-VL chat template, so the stock processor and chat
formatting work on it as on `Qwen/Qwen2.5-VL-7B-Instruct`. Used by the model families' tiny builds
(`prresq.models`); a family adds its own named vision tokens and chat template (`build_tokenizer`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The Qwen2-VL / Qwen2.5-VL chat template (system default, image/video placeholders).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer_corpus() -> list[str]:
    path = Path(__file__).parent / "assets" / "tokenizer_corpus.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    # Numbers as models write scores: 1.0 .. 5.0 in steps of 0.01, so every score is a few tokens.
    numbers = [f"<answer>{x / 100:.2f}</answer>" for x in range(100, 501)]
    return lines * 20 + numbers


def build_tokenizer(
    vocab_size: int, named_tokens: dict[str, str] | None = None, chat_template: str = CHAT_TEMPLATE
) -> Any:
    """Train a byte-level BPE tokenizer offline and wrap it in the real Qwen2 tokenizer class.

    `named_tokens` ({attribute: token}, e.g. {"context_image_token": "<IMG_CONTEXT>"}) become special tokens
    the tokenizer also exposes as attributes (`tok.context_image_token_id`), as a family's processor reads them.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tok = Qwen2Tokenizer(
        vocab=bpe.get_vocab(),
        merges=_merges(bpe),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        **(named_tokens or {}),
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.add_tokens(["<think>", "</think>", "<answer>", "</answer>"])
    if named_tokens:
        tok.add_special_tokens(
            {"extra_special_tokens": list(named_tokens.values())}, replace_extra_special_tokens=False
        )
    tok.chat_template = chat_template
    tok.model_max_length = 32768
    return tok


def _merges(bpe: Any) -> list[tuple[str, str]]:
    state = json.loads(bpe.to_str())
    merges = state["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
