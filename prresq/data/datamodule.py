"""`QualityDataModule`: JSONL quality datasets -> Lightning loaders of collated prompt batches.

Built by Hydra from `conf/data/*.yaml`; the training entry point injects what depends on the
model and the prompt, then hands the module to the Trainer::

    dm = hydra.utils.instantiate(cfg.data)                  # QualityDataModule
    processor = load_processor(model_dir, dm.min_pixels, dm.max_pixels)
    dm.attach(processor, cfg.prompt, hydra.utils.instantiate(cfg.dataflow))
    trainer = L.Trainer(..., use_distributed_sampler=False)  # the batch sampler shards itself
    trainer.fit(module, datamodule=dm)

Each dataset spec is `{name, jsonl, root: <media root, default the JSONL's folder>, mos_range:
null | [lo, hi]}`, or `{name, benchmark: <adapter>, root: <dataset folder>, split, options}` to read
the dataset's own label files through `prresq.data.benchmarks` (see `prresq.data.records`); either
takes `mos_scaling: observed | fixed`. MOS are min-max mapped to `mos_map_to` per dataset. `dataset_names` maps the
`dataset_ids` of a batch to names (train, prior, val, test specs in that order; same name = same id).

Training batches come from `SingleDatasetBatchSampler` (one dataset per global batch, sharded over
DDP ranks); its position is part of `state_dict()`, so a Lightning checkpoint taken mid-epoch
resumes at the next batch. `train_split = "prior"` trains on the prior-knowledge split instead
(supervised warm-up with an `answer_fn`). Validation and test loaders keep file order; under DDP
they are sharded with `DistributedSampler(shuffle=False)`, which repeats a few samples to even
out the ranks: deduplicate by `ids` when gathering. With a `synthetic` block (the generator's
`_target_` and options, `conf/synthetic/*.yaml`), `prepare_data` writes the synthetic set first
(cached; local rank 0 writes, the other ranks wait for it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import lightning as L
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from prresq.config import to_plain
from prresq.data.collate import PromptCollator
from prresq.data.dataflow import Flow, build_flow, fit_flow
from prresq.data.records import DatasetSpec, LoadedDataset, OnBad, Record, load_dataset
from prresq.data.sampler import SingleDatasetBatchSampler

log = logging.getLogger(__name__)

Split = Literal["train", "prior", "val", "test"]
SpecList = Sequence[Mapping[str, Any]] | Mapping[str, Any] | None


class RecordDataset(Dataset[Record]):
    """Records of one or several datasets, concatenated in order; items are `Record`s (media loaded by the collator)."""

    def __init__(self, parts: Sequence[LoadedDataset]) -> None:
        self.parts = list(parts)
        self.records = [r for p in self.parts for r in p.records]

    @property
    def sizes(self) -> list[int]:
        return [len(p) for p in self.parts]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]


class ResumableLoader(DataLoader):
    """A DataLoader over a `SingleDatasetBatchSampler` that counts the batches handed to the training loop.

    Workers prefetch ahead of the loop, so the sampler's own count overshoots; this one does not.
    `state_dict`/`load_state_dict` make it resumable for Lightning's fit loop as well.
    """

    consumed: int = 0
    consumed_epoch: int = 0
    counting: bool = False  # False until iterated (and after a state load): the sampler's resume point holds

    def __iter__(self) -> Iterator[Any]:
        sampler = self.batch_sampler
        self.consumed, self.consumed_epoch, self.counting = sampler.resume_at, sampler.epoch, True
        for batch in super().__iter__():
            self.consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The sampler state with the batches the loop actually received (Lightning saves it too)."""
        sampler = self.batch_sampler
        state = sampler.state_dict()
        counted = self.counting and self.consumed_epoch == sampler.epoch
        state["batches_yielded"] = self.consumed if counted else sampler.resume_at
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state_dict)
        self.counting = False


def _specs(value: SpecList) -> list[DatasetSpec]:
    value = to_plain(value)
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    return [DatasetSpec.from_config(v) for v in value]


class QualityDataModule(L.LightningDataModule):
    """Train / prior / val / test quality datasets (JSONL), collated by `PromptCollator`."""

    def __init__(
        self,
        train: SpecList = None,
        val: SpecList = None,
        test: SpecList = None,
        prior: SpecList = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        drop_last: bool = True,
        on_bad_sample: OnBad = "raise",
        mos_map_to: Sequence[float] = (1.0, 5.0),
        processor: Any = None,
        prompt: str | Sequence[str] | Mapping[str, Any] | None = None,
        flow: Flow | Mapping[str, Any] | str | None = None,
        answer_fn: Callable[[Record], str] | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        synthetic: Mapping[str, Any] | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        val_subset: int | None = None,
    ) -> None:
        super().__init__()
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample={on_bad_sample!r}: expected 'raise' or 'skip'")
        self.specs: dict[str, list[DatasetSpec]] = {
            "train": _specs(train),
            "prior": _specs(prior),
            "val": _specs(val),
            "test": _specs(test),
        }
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.drop_last = drop_last
        self.on_bad_sample: OnBad = on_bad_sample
        self.mos_map_to = tuple(float(x) for x in to_plain(mos_map_to))
        if len(self.mos_map_to) != 2 or not self.mos_map_to[0] < self.mos_map_to[1]:
            raise ValueError(f"data.mos_map_to={list(self.mos_map_to)}: must be [low, high] with low < high")
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.synthetic = to_plain(synthetic)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.val_subset = val_subset
        self.train_split: Literal["train", "prior"] = "train"
        self.datasets: dict[str, RecordDataset] = {}
        names: dict[str, int] = {}
        for split in ("train", "prior", "val", "test"):
            for spec in self.specs[split]:
                names.setdefault(spec.name, len(names))
        self.dataset_ids: dict[str, int] = names
        self.processor: Any = None
        self.prompt: list[str] = []
        self.eval_prompt: str | None = None
        self.flow: Flow | None = None
        self.answer_fn = answer_fn
        self._loader: ResumableLoader | None = None
        self._pending_state: dict[str, Any] | None = None
        if processor is not None or prompt is not None or flow is not None:
            self.attach(processor, prompt, flow, answer_fn)

    @property
    def dataset_names(self) -> dict[int, str]:
        """Dataset id (as in a batch's `dataset_ids`) -> dataset name."""
        return {i: n for n, i in self.dataset_ids.items()}

    def attach(
        self,
        processor: Any,
        prompt: str | Sequence[str] | Mapping[str, Any] | None,
        flow: Flow | Mapping[str, Any] | str | None = None,
        answer_fn: Callable[[Record], str] | None = None,
        eval_prompt: str | None = None,
    ) -> QualityDataModule:
        """Inject the processor, the prompt (text, pool, or a `conf/prompt` mapping) and the data flow.

        A mapping `{text, pool, ...}` trains with `pool` when set (one prompt drawn per sample) and
        evaluates with `text`; a list is a pool whose first entry is the evaluation prompt. Call it
        again to switch prompts (e.g. stage 2); loaders built afterwards use the new prompt.
        """
        prompt = to_plain(prompt)
        if isinstance(prompt, Mapping):
            if not prompt.get("text"):
                raise ValueError(f"prompt config {prompt}: needs 'text'")
            pool = prompt.get("pool") or [prompt["text"]]
            eval_prompt = eval_prompt or prompt["text"]
            prompt = pool
        if prompt is not None:
            self.prompt = [prompt] if isinstance(prompt, str) else list(prompt)
            self.eval_prompt = eval_prompt or self.prompt[0]
        self.processor = processor if processor is not None else self.processor
        self.flow = build_flow(to_plain(flow)) if flow is not None or self.flow is None else self.flow
        self.flow = fit_flow(self.flow, self.processor)
        if answer_fn is not None:
            self.answer_fn = answer_fn
        return self

    # ---------------------------------------------------------------- data
    def prepare_data(self) -> None:
        """Write the synthetic set when configured (`synthetic`: the generator's `_target_` and options; cached).

        Lightning calls this hook on local rank 0 of each node only (its other ranks wait at a barrier).
        Called directly on another local rank (`prresq.train` prepares the data before the Trainer
        exists), it waits until local rank 0 has written the set instead of writing it too.
        """
        if not self.synthetic:
            return
        if "_target_" not in self.synthetic:
            raise ValueError(
                f"data.synthetic {sorted(self.synthetic)}: needs `_target_`, the generator (e.g. "
                "prresq.data.synthetic.generate_synthetic_iqa; see conf/synthetic/)"
            )
        instantiate(self.synthetic, write=self._local_rank() == 0, _convert_="all")

    def _local_rank(self) -> int:
        """This process's rank on its node: the Trainer's, or before there is one the launcher's environment."""
        if self.trainer is not None:
            return int(self.trainer.local_rank)
        return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")) or 0)

    def setup(self, stage: str | None = None) -> None:
        """Read and validate the JSONL files of every configured split (once)."""
        for split, specs in self.specs.items():
            if split in self.datasets or not specs:
                continue
            parts = [load_dataset(s, map_to=self.mos_map_to, on_bad_sample=self.on_bad_sample) for s in specs]
            self.datasets[split] = RecordDataset(parts)
            log.info("%s: %s", split, {p.spec.name: len(p) for p in parts})

    def _dataset(self, split: Split) -> RecordDataset:
        if split not in self.datasets:
            if not self.specs[split]:
                raise ValueError(f"no {split!r} datasets configured")
            self.setup()
        return self.datasets[split]

    def collator(self, split: Split, answer_fn: Callable[[Record], str] | None = None) -> PromptCollator:
        """The collator of a split: training splits use the prompt pool, evaluation the evaluation prompt."""
        if self.processor is None or not self.prompt:
            raise RuntimeError("QualityDataModule needs a processor and a prompt: call attach(processor, prompt, flow)")
        training = split in ("train", "prior")
        return PromptCollator(
            self.processor,
            self.prompt if training else (self.eval_prompt or self.prompt[0]),
            flow=self.flow,
            answer_fn=answer_fn if answer_fn is not None else (self.answer_fn if training else None),
            seed=self.seed,
            dataset_ids=self.dataset_ids,
            on_bad_sample=self.on_bad_sample,
        )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _training_loader(
        self, split: Split, answer_fn: Callable[[Record], str] | None = None, batch_size: int | None = None
    ) -> ResumableLoader:
        dataset = self._dataset(split)
        world, rank = self._world()
        sampler = SingleDatasetBatchSampler(
            dataset.sizes,
            batch_size=batch_size or self.batch_size,
            seed=self.seed,
            drop_last=self.drop_last,
            num_replicas=world,
            rank=rank,
        )
        return ResumableLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.collator(split, answer_fn),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> ResumableLoader:
        loader = self._training_loader(self.train_split)
        state = self._pending_state
        if state is not None and state.get("split", "train") == self.train_split:
            loader.load_state_dict(state["sampler"])
            self._pending_state = None
        self._loader = loader
        return loader

    def prior_dataloader(
        self, answer_fn: Callable[[Record], str] | None = None, batch_size: int | None = None
    ) -> ResumableLoader:
        """Loader over the prior-knowledge split (single-dataset batches), e.g. for a supervised warm-up."""
        return self._training_loader("prior", answer_fn, batch_size)

    def _eval_loader(self, split: Split) -> DataLoader | list:
        if not self.specs[split]:
            return []
        dataset: Dataset = self._dataset(split)
        if split == "val" and self.val_subset and self.val_subset < len(dataset):
            # An evenly strided subset: every photo and level stays represented (files are grouped by photo).
            step = len(dataset) / self.val_subset
            dataset = Subset(dataset, [int(i * step) for i in range(self.val_subset)])
        world, rank = self._world()
        sampler = DistributedSampler(dataset, world, rank, shuffle=False) if world > 1 else None
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            sampler=sampler,
            collate_fn=self.collator(split),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """The training sampler's position (epoch, batches consumed by the loop); saved in Lightning checkpoints."""
        if self._loader is None:
            return dict(self._pending_state) if self._pending_state else {}
        return {"split": self.train_split, "sampler": self._loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position; applied to the next training loader (or the current one)."""
        if not state_dict:
            return
        if self._loader is not None and state_dict.get("split", "train") == self.train_split:
            self._loader.load_state_dict(state_dict["sampler"])
        else:
            self._pending_state = dict(state_dict)
