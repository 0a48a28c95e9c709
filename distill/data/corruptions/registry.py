"""The registry of corruptions by name, and the entry points :func:`corrupt` and :func:`corruption_sweep`.

The conventions every registered function follows are in :mod:`distill.data.corruptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from distill import UserError
from distill.data.corruptions._ops import Draws, image_seed
from distill.registry import Registry

CorruptionFn = Callable[[Tensor, int, Draws], Tensor]
CORRUPTIONS: Registry[CorruptionFn] = Registry("")  # "corruption: unknown 'rain'; ..." says what it is
SEVERITIES = (1, 2, 3, 4, 5)
# CIFAR-10-C's 15 benchmark corruptions, in its order: the default everywhere.
BENCHMARK = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
# The four more its release ships (held out of the benchmark's mean): used only when named.
EXTRAS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


def register_corruption(name: str) -> Callable[[CorruptionFn], CorruptionFn]:
    return CORRUPTIONS.register(name)


# Corruptions that can instead draw from the reference's own photos, given a directory of them (frost):
# ``fn(x, severity, draws, directory)``. Registered by the module that defines them, so this one imports none.
PhotoFn = Callable[[Tensor, int, Draws, str | Path], Tensor]
PHOTO_VARIANTS: Registry[PhotoFn] = Registry("photo variant")


def register_photo_variant(name: str) -> Callable[[PhotoFn], PhotoFn]:
    return PHOTO_VARIANTS.register(name)


def corrupt(
    x: Tensor,
    name: str,
    severity: int,
    seed: int = 0,
    *,
    start: int = 0,
    frost_images: str | Path | None = None,
) -> Tensor:
    """Corrupt uint8 images ``(B, C, H, W)`` with corruption ``name`` at ``severity`` (1..5); returns uint8.

    ``x`` holds images ``start .. start + B - 1`` of the set being corrupted: image ``b`` draws its noise from a
    generator seeded by ``(seed, start + b)`` alone, so ``corrupt(x, n, s, seed)[i:j]`` equals
    ``corrupt(x[i:j], n, s, seed, start=i)`` byte for byte, whatever the batch. ``frost_images``: a directory
    holding CIFAR-10-C's frost photos (``frost1.png`` .. ``frost5.jpg``); ``frost`` then overlays crops of them
    as the reference does, instead of the procedural texture.
    """
    fn = CORRUPTIONS.lookup(name, "corruption")
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
        raise UserError(f"corruption '{name}': severity must be an integer in 1..5, got {severity!r}")
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"corrupt: expected uint8 images (B, C, H, W), got {tuple(x.shape)} {x.dtype}")
    if x.numel() == 0:
        return x.clone()
    if frost_images is not None and name in PHOTO_VARIANTS:
        variant = PHOTO_VARIANTS[name]

        def fn(xf: Tensor, sev: int, g: Draws) -> Tensor:
            return variant(xf, sev, g, frost_images)

    draws = Draws([image_seed(seed, start + b) for b in range(x.shape[0])])
    y = fn(x.float() / 255.0, int(severity), draws)
    return (y.clamp(0, 1) * 255).round_().to(torch.uint8)


def corruption_sweep(
    x: Tensor,
    names: Iterable[str] | None = None,
    severities: Iterable[int] = SEVERITIES,
    seed: int = 0,
    *,
    frost_images: str | Path | None = None,
) -> Iterator[tuple[str, int, Tensor]]:
    """Yield ``(name, severity, corrupt(x, name, severity, seed))`` for every name (default: the 15 of
    :data:`BENCHMARK`) and severity."""
    for name in BENCHMARK if names is None else list(names):
        for severity in severities:
            yield name, severity, corrupt(x, name, severity, seed, frost_images=frost_images)
