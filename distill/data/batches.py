"""Batches that live on the loop's device: shuffled indices into a uint8 tensor, augmented with kornia.

Data is decoded once into a uint8 tensor and moved to the device once; each step gathers a batch, scales
it to [0, 1] pixels and augments it on the device. Models normalise internally, so every tensor that the
objectives and the perturbation engine see is in [0, 1] pixel space.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Batch:
    x: torch.Tensor  # (V, B, C, H, W) float in [0, 1]; V views, one per member when orders differ
    y: torch.Tensor  # (V, B) int64
    outlier: torch.Tensor | None = None  # (B, C, H, W): an outlier-exposure batch, when configured
    transfer: torch.Tensor | None = None  # (B, C, H, W): unlabelled transfer images (data.transfer), for students


def make_augment(crop_padding: int, flip: bool, size: tuple[int, int]) -> nn.Module | None:
    """Random crop with zero padding and horizontal flip, on whole batches (kornia), or None."""
    if crop_padding <= 0 and not flip:
        return None
    import kornia.augmentation as K

    ops: list[nn.Module] = []
    if crop_padding > 0:
        ops.append(K.RandomCrop(size, padding=crop_padding))
    if flip:
        ops.append(K.RandomHorizontalFlip())
    return nn.Sequential(*ops)


class DeviceLoader:
    """Epochs of ``views`` independently shuffled orders over device-resident uint8 images.

    Each of the ``views`` orders is a seeded permutation of (seed, epoch, view), so the data order of an
    epoch does not depend on what ran before it: a resumed run sees the same batches. Under several
    processes each takes every ``world``-th index of each permutation (its shard), with drop_last.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        views: int = 1,
        seed: int = 0,
        augment: nn.Module | None = None,
        rank: int = 0,
        world: int = 1,
        outlier_x: torch.Tensor | None = None,
        transfer_x: torch.Tensor | None = None,
    ) -> None:
        self.x, self.y = x, y  # (N, C, H, W) uint8 and (N,), already on the device
        self.batch_size, self.views, self.seed = batch_size, views, seed
        self.augment, self.rank, self.world = augment, rank, world
        self.outlier_x = outlier_x
        self.transfer_x = transfer_x  # (N', C, H, W) uint8: B of them per step, in their own seeded order
        per_rank = len(y) // world
        self.steps = per_rank // batch_size
        if self.steps == 0:
            raise ValueError(f"batch size {batch_size} x {world} processes exceeds the {len(y)} training images")

    def __len__(self) -> int:
        return self.steps

    def _order(self, epoch: int, view: int, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 1009 + view)
        return torch.randperm(n, generator=g)[self.rank :: self.world][: self.steps * self.batch_size]

    def _images(self, idx: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        xb = source[idx.to(source.device)].float().div_(255)
        return self.augment(xb) if self.augment is not None else xb

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        b = self.batch_size
        orders = torch.stack([self._order(epoch, v, len(self.y)) for v in range(self.views)])  # (V, S*B)
        out_order = self._extra_order(self.outlier_x, epoch, 10_007)
        transfer_order = self._extra_order(self.transfer_x, epoch, 10_009)
        for step in range(start, self.steps):
            idx = orders[:, step * b : (step + 1) * b]  # (V, B)
            xb = self._images(idx.reshape(-1), self.x)
            xb = xb.view(self.views, b, *xb.shape[1:])
            yb = self.y[idx.reshape(-1).to(self.y.device)].view(self.views, b)
            outlier = None
            if out_order is not None:
                outlier = self._images(out_order[step * b : (step + 1) * b], self.outlier_x)
            transfer = None
            if transfer_order is not None:
                transfer = self._images(transfer_order[step * b : (step + 1) * b], self.transfer_x)
            yield Batch(x=xb, y=yb, outlier=outlier, transfer=transfer)

    def _extra_order(self, x: torch.Tensor | None, epoch: int, view: int) -> torch.Tensor | None:
        """A seeded order over an extra image set (outliers, transfer images), repeated to cover every step's
        ``batch_size`` when the set is smaller than the epoch's batches."""
        if x is None:
            return None
        order = self._order(epoch, view, len(x))
        return order.repeat(1 + self.steps * self.batch_size // max(len(order), 1))


def eval_batches(x: torch.Tensor, batch_size: int, device: torch.device | str) -> Iterator[torch.Tensor]:
    """uint8 images -> float [0, 1] batches on ``device``, in order, without augmentation."""
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size].to(device).float().div_(255)
