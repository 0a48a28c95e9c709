"""Architectures by name. Every network maps [0, 1] pixels to ``(logits (B, K), cam_features (B, C, H, W))``.

``cam_features`` is the feature map whose Grad-CAM the saliency objectives use; returning it from
``forward`` makes Grad-CAM hook-free, so it is differentiable (double backprop) and DDP-safe.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from distill import unknown

# builder(in_channels, num_classes, image_size) -> net with forward(x) -> (logits, cam_features)
Builder = Callable[[int, int, tuple[int, int]], nn.Module]
ARCHS: dict[str, Builder] = {}


def register_arch(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        ARCHS[name] = fn
        return fn

    return deco


class Normalized(nn.Module):
    """Per-channel standardisation in front of a network, so callers work in [0, 1] pixel space."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net((x - self.mean) / self.std)


def build_arch(
    arch: str,
    channels: int,
    num_classes: int,
    size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Normalized:
    if arch not in ARCHS:
        raise unknown("arch", "architecture", arch, ARCHS)
    return Normalized(ARCHS[arch](channels, num_classes, tuple(size)), mean, std)
