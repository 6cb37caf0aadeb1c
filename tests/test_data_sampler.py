"""SingleDatasetBatchSampler: one dataset per (global) batch, seeded, DDP slices, exact mid-epoch resume."""

from __future__ import annotations

import pytest

from prresq.data.sampler import SingleDatasetBatchSampler

SIZES = [23, 40, 9]  # concatenated: [0, 23) [23, 63) [63, 72)


def _dataset(sampler: SingleDatasetBatchSampler, batch: list[int]) -> set[int]:
    return {sampler.dataset_of(i) for i in batch}


@pytest.mark.parametrize("drop_last", [True, False])
def test_every_batch_is_from_one_dataset(drop_last):
    s = SingleDatasetBatchSampler(SIZES, batch_size=4, seed=1, drop_last=drop_last)
    batches = list(s)
    assert len(batches) == len(s) == (5 + 10 + 2 if drop_last else 6 + 10 + 3)
    assert all(len(b) == 4 and len(_dataset(s, b)) == 1 for b in batches)
    seen = {i for b in batches for i in b}
    if drop_last:
        assert all(len(b) == len(set(b)) for b in batches)
    else:  # every sample is seen; the last partial batch is filled from the same dataset
        assert seen == set(range(sum(SIZES)))
    assert len({next(iter(_dataset(s, b))) for b in batches}) == 3  # batches of all datasets, interleaved
    first_datasets = [next(iter(_dataset(s, b))) for b in batches[:8]]
    assert len(set(first_datasets)) > 1


def test_seeded_and_epoch_dependent():
    a = SingleDatasetBatchSampler(SIZES, batch_size=4, seed=7)
    b = SingleDatasetBatchSampler(SIZES, batch_size=4, seed=7)
    assert list(a) == list(b)
    assert list(SingleDatasetBatchSampler(SIZES, batch_size=4, seed=8)) != list(a)
    e0 = list(a)
    a.set_epoch(1)
    assert list(a) != e0
    a.set_epoch(0)
    assert list(a) == e0


def test_no_shuffle_keeps_order():
    s = SingleDatasetBatchSampler([6, 4], batch_size=2, shuffle=False)
    assert list(s) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_resume_mid_epoch_yields_exactly_the_remaining_batches():
    s = SingleDatasetBatchSampler(SIZES, batch_size=4, seed=3)
    s.set_epoch(2)
    full = list(s)
    it = iter(s)
    consumed = [next(it) for _ in range(6)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["batches_yielded"] == 6
    resumed = SingleDatasetBatchSampler(SIZES, batch_size=4, seed=3)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # Lightning sets the same epoch again on resume
    rest = list(resumed)
    assert consumed + rest == full
    assert list(resumed) == full  # the next pass over the epoch starts from the beginning again
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # a new epoch forgets the resume point
    assert len(list(resumed)) == len(full)


@pytest.mark.parametrize("drop_last", [True, False])
def test_ddp_slices_are_disjoint_and_from_one_dataset(drop_last):
    world = 3
    samplers = [
        SingleDatasetBatchSampler(SIZES, batch_size=2, seed=5, drop_last=drop_last, num_replicas=world, rank=r)
        for r in range(world)
    ]
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
    for step in zip(*per_rank):
        global_batch = [i for b in step for i in b]
        assert all(len(b) == 2 for b in step)
        assert len(_dataset(samplers[0], global_batch)) == 1  # the whole step is one dataset
        if drop_last:
            assert len(set(global_batch)) == len(global_batch)  # ranks never share a sample
    if drop_last:
        rank_sets = [{i for b in p for i in b} for p in per_rank]
        assert not (rank_sets[0] & rank_sets[1] or rank_sets[1] & rank_sets[2] or rank_sets[0] & rank_sets[2])


def test_small_dataset_and_invalid_arguments():
    s = SingleDatasetBatchSampler([3, 16], batch_size=4, seed=0, drop_last=True)
    assert all(s.dataset_of(b[0]) == 1 for b in s)  # 3 < 4: no batch from dataset 0
    with pytest.raises(ValueError, match="no batch"):
        SingleDatasetBatchSampler([3], batch_size=4, drop_last=True)
    with pytest.raises(ValueError):
        SingleDatasetBatchSampler([8], batch_size=2, num_replicas=2, rank=2)
    with pytest.raises(ValueError):
        SingleDatasetBatchSampler([], batch_size=2)
