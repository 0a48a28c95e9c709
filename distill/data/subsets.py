"""The subsets that evaluation and analysis take from a split: drawn class-stratified and seeded, never its head.

A split comes out of its loader in whatever order the files had (an image folder's is class by class), so its
first N images can all be one class (every corrupted CIFAR-10 image of an earlier report was an airplane).
:func:`eval_subset` draws with :func:`distill.data.base.stratified_subset` instead, and :func:`subset_record` is
what a report or a summary writes down about a draw.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.data.base import stratified_subset


def eval_subset(y: Tensor, n: int, seed: int) -> Tensor:
    """Sorted indices of ``min(n, len(y))`` items of labels ``y (N,)``, every class in proportion (±1), the same
    for the same ``(y, n, seed)``; empty for ``n <= 0``; every index when ``n >= len(y)``."""
    if n <= 0 or len(y) == 0:
        return torch.zeros(0, dtype=torch.long)
    return stratified_subset(y, min(n, len(y)), seed, seeded_ties=True)


def subset_record(y: Tensor, seed: int, num_classes: int) -> dict[str, int | list[int]]:
    """``{"size", "seed", "class_counts"}`` of a drawn subset whose labels are ``y (n,)``."""
    return {"size": len(y), "seed": seed, "class_counts": torch.bincount(y.long(), minlength=num_classes).tolist()}
