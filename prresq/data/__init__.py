"""Data: JSONL records, synthetic IQA, single-dataset batch sampler, data flows, collator, DataModule."""

from prresq.data.records import DataError, DatasetSpec, Record, load_dataset, load_datasets

__all__ = ["DataError", "DatasetSpec", "Record", "load_dataset", "load_datasets"]
