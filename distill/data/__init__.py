"""Data: loaders by name -> fixed splits of uint8 tensors -> device-side augmented batches."""

from distill.data import benchmarks, images, small  # noqa: F401  (register the datasets by name)
from distill.data.base import (
    LOADERS,
    DatasetMeta,
    RawData,
    Splits,
    conform,
    load_dataset,
    load_ood,
    load_splits,
    register_dataset,
)
from distill.data.batches import Batch, DeviceLoader, eval_batches, make_augment

__all__ = [
    "LOADERS",
    "Batch",
    "DatasetMeta",
    "DeviceLoader",
    "RawData",
    "Splits",
    "conform",
    "eval_batches",
    "load_dataset",
    "load_ood",
    "load_splits",
    "make_augment",
    "register_dataset",
]
