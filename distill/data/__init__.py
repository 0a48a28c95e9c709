"""Data: loaders by name -> fixed splits of uint8 tensors -> device-side augmented batches."""

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
from distill.registry import discover

discover(__name__, __path__)  # each loader's file registers its datasets by name

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
