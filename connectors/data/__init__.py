"""Data in: the user's CSV/JSONL files and the built-in real datasets."""

from connectors.data.datasets import (
    DATASETS,
    SPLIT_SEED,
    TEST_FRACTION,
    Dataset,
    DatasetInfo,
    dataset_dir,
    dataset_info,
    fetch,
    load,
    load_file_dataset,
    stratified_split,
)
from connectors.data.files import (
    Duplicate,
    InvalidRowsError,
    ReadResult,
    RowProblem,
    derived_id,
    read_items,
)

__all__ = [
    "DATASETS",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "Dataset",
    "DatasetInfo",
    "Duplicate",
    "InvalidRowsError",
    "ReadResult",
    "RowProblem",
    "dataset_dir",
    "dataset_info",
    "derived_id",
    "fetch",
    "load",
    "load_file_dataset",
    "read_items",
    "stratified_split",
]
