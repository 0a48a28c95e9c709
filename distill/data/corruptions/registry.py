"""The registry of corruptions by name, and the entry points :func:`corrupt` and :func:`corruption_sweep`.

The conventions every registered function follows are in :mod:`distill.data.corruptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from distill import UserError

CorruptionFn = Callable[[Tensor, int, torch.Generator], Tensor]
CORRUPTIONS: dict[str, CorruptionFn] = {}
SEVERITIES = (1, 2, 3, 4, 5)


def register_corruption(name: str) -> Callable[[CorruptionFn], CorruptionFn]:
    def deco(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = fn
        return fn

    return deco


def corrupt(x: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """Corrupt uint8 images ``(B, C, H, W)`` with corruption ``name`` at ``severity`` (1..5); returns uint8.

    Deterministic: the same images, name, severity and seed give the same output.
    """
    if name not in CORRUPTIONS:
        raise UserError(f"corruption: unknown '{name}'; expected one of: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
        raise UserError(f"corruption '{name}': severity must be an integer in 1..5, got {severity!r}")
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"corrupt: expected uint8 images (B, C, H, W), got {tuple(x.shape)} {x.dtype}")
    if x.numel() == 0:
        return x.clone()
    g = torch.Generator().manual_seed(int(seed))
    y = CORRUPTIONS[name](x.float() / 255.0, int(severity), g)
    return (y.clamp(0, 1) * 255).round_().to(torch.uint8)


def corruption_sweep(
    x: Tensor, names: Iterable[str] | None = None, severities: Iterable[int] = SEVERITIES, seed: int = 0
) -> Iterator[tuple[str, int, Tensor]]:
    """Yield ``(name, severity, corrupt(x, name, severity, seed))`` for every name (default: all 15) and severity."""
    for name in list(CORRUPTIONS) if names is None else list(names):
        for severity in severities:
            yield name, severity, corrupt(x, name, severity, seed)
