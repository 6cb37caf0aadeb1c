"""`PromptCollator`: records -> the collated batch of prresq/CONTRACTS.md (one processor call per batch).

For each record the data flow builds the user turn (media + prompt text); the chat template adds
the system turn and the generation prompt; the processor tokenises the whole batch at once with
LEFT padding (generation appends on the right) and never truncates (a cut would desynchronise the
image placeholder tokens from the pixels). The placeholder count is checked against the visual
inputs by the model family (`prresq.models`, `ModelFamily.placeholder_check`).

With a prompt pool, each record gets `pool[hash(seed, id) % len(pool)]`: seeded, independent of
the number of workers, the same prompt for an image across epochs. `use_pool(False)` restricts it
to the pool's first prompt (PreResQ-R1 stage 2); the switch is one byte of shared memory, so
DataLoader workers (persistent ones too) see it in every batch they build afterwards. Each batch
says which it used (`prompt_pool`); `recollate` rebuilds one built before a switch (same media,
rows and MOS) with the prompt choice in force now. With an `answer_fn`
(supervised warm-up) the answer and the family's end-of-turn token follow the generation prompt and `labels`
hold the answer tokens (prompt and padding = -100).

A corrupt image raises `DataError` naming the JSONL file and line; with `on_bad_sample="skip"`
the sample is dropped and counted (`skipped`), and a batch left empty collates to `None`
(Lightning skips it). With `max_prompt_tokens` (eval, infer: the model's context minus the answer's
tokens), an item whose prompt is longer is such a bad sample too, and the rest of its batch is
encoded without it.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from prresq.data.dataflow import Flow, FlowOutput, ImageFlow
from prresq.data.records import DataError, OnBad, Record
from prresq.models.families import family_of_processor

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def merge_video_kwargs(per_sample: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge per-sample processor video kwargs: list values are concatenated (one entry per video), scalars must agree."""
    merged: dict[str, Any] = {}
    for kw in per_sample:
        for key, value in kw.items():
            if isinstance(value, list | tuple):
                merged.setdefault(key, []).extend(value)
            elif key in merged and merged[key] != value:
                raise ValueError(f"video kwarg {key!r} differs within a batch: {merged[key]!r} vs {value!r}")
            else:
                merged[key] = value
    return merged


class PromptCollator:
    """Collate `Record`s into model inputs + MOS for GRPO (or SFT with `answer_fn`)."""

    def __init__(
        self,
        processor: Any,
        prompt: str | Sequence[str],
        flow: Flow | None = None,
        answer_fn: Callable[[Record], str] | None = None,
        seed: int = 0,
        dataset_ids: Mapping[str, int] | None = None,
        on_bad_sample: OnBad = "raise",
        max_prompt_tokens: int | None = None,
    ) -> None:
        pool = [prompt] if isinstance(prompt, str) else list(prompt)
        if not pool or not all(isinstance(p, str) and p for p in pool):
            raise ValueError(f"prompt must be a non-empty string or a list of them, got {prompt!r}")
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample={on_bad_sample!r}: expected 'raise' or 'skip'")
        self.processor = processor
        self.pool = pool
        self._single_prompt = torch.zeros(1, dtype=torch.uint8).share_memory_()  # seen by DataLoader workers
        self.flow: Flow = flow if flow is not None else ImageFlow()
        self.answer_fn = answer_fn
        self.seed = seed
        self.dataset_ids = dict(dataset_ids) if dataset_ids is not None else {}
        self._fixed_ids = dataset_ids is not None
        self.on_bad_sample = on_bad_sample
        self.max_prompt_tokens = max_prompt_tokens
        self.skipped: list[str] = []
        self.family = family_of_processor(processor)

    def use_pool(self, on: bool) -> None:
        """Draw prompts from the pool (True) or use its first prompt only (False), in every worker."""
        self._single_prompt[0] = 0 if on else 1

    @property
    def pool_in_use(self) -> bool:
        return len(self.pool) > 1 and not bool(self._single_prompt[0])

    def prompt_for(self, record: Record, use_pool: bool | None = None) -> str:
        """The prompt of this record (the pool entry chosen by a seeded hash of its id)."""
        if not (self.pool_in_use if use_pool is None else use_pool):
            return self.pool[0]
        return self.pool[zlib.crc32(f"{self.seed}:{record.dataset}:{record.id}".encode()) % len(self.pool)]

    def _dataset_id(self, name: str) -> int:
        if name not in self.dataset_ids:
            if self._fixed_ids:
                raise KeyError(f"dataset {name!r} has no id; known: {self.dataset_ids}")
            self.dataset_ids[name] = len(self.dataset_ids)
        return self.dataset_ids[name]

    def _user_turn(self, record: Record, use_pool: bool) -> FlowOutput | None:
        try:
            return self.flow(record.media, self.prompt_for(record, use_pool))
        except (DataError, OSError) as exc:
            self._bad(record, str(exc), exc)
            return None

    def _bad(self, record: Record, why: str, exc: BaseException | None = None) -> None:
        """A bad sample: `DataError` naming it (`on_bad_sample="raise"`), or counted in `skipped` and logged."""
        reason = f"{record.source or record.id}: {why}"
        if self.on_bad_sample == "raise":
            raise DataError(reason) from exc
        self.skipped.append(reason)
        log.warning("skipped a bad sample (%d so far in this process): %s", len(self.skipped), reason)

    def __call__(self, records: Sequence[Record | None]) -> dict[str, Any] | None:
        use_pool = self.pool_in_use  # read once: one choice for the whole batch
        kept: list[Record] = []
        turns: list[FlowOutput] = []
        for record in records:
            if record is None:
                continue
            turn = self._user_turn(record, use_pool)
            if turn is not None:
                kept.append(record)
                turns.append(turn)
        if not kept:
            return None
        out = self._encode(kept, turns, use_pool)
        if self.max_prompt_tokens is None:
            return out
        lengths = out["model_inputs"]["attention_mask"].sum(1).tolist()
        fits = [n <= self.max_prompt_tokens for n in lengths]
        if all(fits):
            return out
        for record, n, ok in zip(kept, lengths, fits):
            if not ok:
                self._bad(
                    record,
                    f"its prompt is {int(n)} tokens, more than the {self.max_prompt_tokens} the model's context "
                    "leaves for a prompt (max_position_embeddings minus the answer's max_new_tokens); lower the "
                    "pixel cap (scoring.max_pixels) or the video's frames",
                )
        kept = [r for r, ok in zip(kept, fits) if ok]
        turns = [t for t, ok in zip(turns, fits) if ok]
        return self._encode(kept, turns, use_pool) if kept else None

    def recollate(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """`batch` rebuilt with the prompt choice in force now: same media, rows, MOS and dataset ids (CPU tensors)."""
        use_pool = self.pool_in_use
        names = {i: n for n, i in self.dataset_ids.items()}
        ids = [int(i) for i in batch["dataset_ids"].tolist()]
        if use_pool and any(i not in names for i in ids):
            raise KeyError(
                f"dataset ids {sorted(set(ids) - set(names))} unknown to this collator: cannot redraw prompts"
            )
        records = [
            Record(rid, names.get(did, ""), Path(media), float("nan"), float(mos))
            for rid, did, media, mos in zip(batch["ids"], ids, batch["media"], batch["mos"].tolist())
        ]
        turns = [self.flow(r.media, self.prompt_for(r, use_pool)) for r in records]
        out = self._encode(records, turns, use_pool)
        out["mos"], out["dataset_ids"] = batch["mos"].cpu(), batch["dataset_ids"].cpu()
        return out

    def _encode(self, kept: Sequence[Record], turns: Sequence[FlowOutput], use_pool: bool) -> dict[str, Any]:
        """One processor call for the batch: the collated batch of prresq/CONTRACTS.md."""
        texts, answers = [], []
        for record, turn in zip(kept, turns):
            messages = [{"role": "user", "content": turn.content}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            if self.answer_fn is not None:
                answer = self.answer_fn(record) + self.family.end_of_turn
                answers.append(answer)
                text = text + answer
            texts.append(text)
        images = [im for t in turns for im in t.images]
        videos = [v for t in turns for v in t.videos]
        kwargs = merge_video_kwargs([t.video_kwargs for t in turns]) if videos else {}
        inputs = self.processor(
            text=texts,
            images=images or None,
            videos=videos or None,
            padding=True,
            padding_side="left",
            truncation=False,
            return_tensors="pt",
            **kwargs,
        )
        model_inputs = dict(inputs)
        self._check_vision_tokens(model_inputs)
        if answers:
            model_inputs["labels"] = self._labels(model_inputs["input_ids"], answers)
        return {
            "model_inputs": model_inputs,
            "mos": torch.tensor([r.mos_mapped for r in kept], dtype=torch.float32),
            "dataset_ids": torch.tensor([self._dataset_id(r.dataset) for r in kept], dtype=torch.long),
            "ids": [r.id for r in kept],
            "media": [str(r.media) for r in kept],
            "prompt_pool": use_pool,
        }

    def _check_vision_tokens(self, inputs: dict[str, Any]) -> None:
        self.family.placeholder_check(self.processor, inputs)

    def _labels(self, input_ids: torch.Tensor, answers: Sequence[str]) -> torch.Tensor:
        """-100 everywhere but each row's answer tokens (the row's tail: padding is on the left)."""
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        tok = self.processor.tokenizer
        for i, answer in enumerate(answers):
            ans = torch.tensor(tok(answer, add_special_tokens=False)["input_ids"], dtype=input_ids.dtype)
            n = len(ans)
            if n == 0 or n > input_ids.shape[1] or not torch.equal(input_ids[i, -n:], ans):
                raise ValueError(
                    f"answer {answer!r} does not tokenise to the tail of its row (a token merges across the "
                    "prompt/answer boundary); start answers with a special token such as <think>"
                )
            labels[i, -n:] = ans
        return labels


def prompt_of(prompt_cfg: Mapping[str, Any]) -> str:
    """The evaluation prompt: the prompt group's `text` (the first entry of a training pool)."""
    text = prompt_cfg.get("text")
    if not text:
        pool = prompt_cfg.get("pool") or []
        if not pool:
            raise ValueError(f"prompt config {dict(prompt_cfg)} has no text")
        text = pool[0]
    return str(text)
