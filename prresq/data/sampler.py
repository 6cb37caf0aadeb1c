"""`SingleDatasetBatchSampler`: every (global) batch comes from one dataset; seeded, DDP-aware, resumable.

Ranking rewards compare the images of a batch, so a batch must never mix datasets whose MOS
scales differ. Each epoch every dataset's indices are shuffled (seed, epoch, dataset), cut into
global batches of `batch_size * num_replicas`, and the batches of all datasets are interleaved in
a seeded random order. Rank `r` takes the `r`-th `batch_size` slice of each global batch, so the
global batch of a step (all ranks together) is one dataset. With `drop_last=False` a dataset's
last, partial global batch is filled up with indices from the start of its own permutation.

Resuming: `state_dict()` -> `{"epoch", "batches_yielded"}`; after `load_state_dict` the next
iteration over the same epoch skips the batches already yielded. Lightning calls `set_epoch`.

    sampler = SingleDatasetBatchSampler([120, 80], batch_size=8, seed=42)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


class SingleDatasetBatchSampler(Sampler[list[int]]):
    """Batches of indices into a concatenation of datasets of sizes `dataset_sizes`, one dataset per batch."""

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        batch_size: int,
        seed: int = 0,
        drop_last: bool = True,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"batch_size={batch_size}, num_replicas={num_replicas}, rank={rank}: invalid")
        if not dataset_sizes or any(n < 0 for n in dataset_sizes):
            raise ValueError(f"dataset_sizes={list(dataset_sizes)}: need >= 1 dataset with a size >= 0")
        self.dataset_sizes = [int(n) for n in dataset_sizes]
        self.offsets = [sum(self.dataset_sizes[:i]) for i in range(len(self.dataset_sizes))]
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.batches_yielded = 0
        self._resume_at = 0
        self.global_batch_size = batch_size * num_replicas
        for d, n in enumerate(self.dataset_sizes):
            if drop_last and 0 < n < self.global_batch_size:
                log.warning(
                    "dataset %d has %d samples < global batch %d: it yields no batch with drop_last=True",
                    d,
                    n,
                    self.global_batch_size,
                )
        if len(self) == 0:
            raise ValueError(
                f"no batch of {self.global_batch_size} from datasets of sizes {self.dataset_sizes} "
                f"(drop_last={drop_last})"
            )

    def _batches_of(self, n: int) -> int:
        g = self.global_batch_size
        return n // g if self.drop_last else -(-n // g)

    def __len__(self) -> int:
        return sum(self._batches_of(n) for n in self.dataset_sizes)

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All global batches of `epoch` (indices into the concatenation), in yield order."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        batches: list[list[int]] = []
        for n, offset in zip(self.dataset_sizes, self.offsets):
            if n == 0:
                continue
            order = (torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)).tolist()
            k = self._batches_of(n)
            need = k * self.global_batch_size
            while len(order) < need:  # fill the last batch from the start of the same dataset
                order = order + order[: need - len(order)]
            batches += [
                [offset + i for i in order[b * self.global_batch_size : (b + 1) * self.global_batch_size]]
                for b in range(k)
            ]
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def dataset_of(self, index: int) -> int:
        """Which dataset a concatenated index belongs to."""
        for d in range(len(self.offsets) - 1, -1, -1):
            if index >= self.offsets[d]:
                return d
        raise IndexError(index)

    def __iter__(self) -> Iterator[list[int]]:
        start, self._resume_at = self._resume_at, 0
        self.batches_yielded = start
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches(self.epoch)[start:]:
            self.batches_yielded += 1
            yield batch[lo:hi]

    @property
    def resume_at(self) -> int:
        """Batches of the current epoch the next iteration skips (0 unless resumed)."""
        return self._resume_at

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start; a new epoch forgets a pending resume point."""
        if epoch != self.epoch:
            self._resume_at = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_yielded": self.batches_yielded, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at batch `batches_yielded` of `epoch` on the next iteration."""
        if "seed" in state and state["seed"] != self.seed:
            log.warning("sampler state saved with seed %s, resuming with seed %s", state["seed"], self.seed)
        self.epoch = int(state["epoch"])
        self.batches_yielded = self._resume_at = int(state["batches_yielded"])
