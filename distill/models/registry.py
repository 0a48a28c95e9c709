"""Architectures by name. Every built network maps [0, 1] pixels to ``(logits (B, K), cam_features (B, C, H, W))``.

``cam_features`` is the feature map whose Grad-CAM the saliency objectives use. The registered architectures
return it from ``forward`` (the fast path: Grad-CAM is hook-free, differentiable twice and DDP-safe); an
architecture that returns logits only (a user's module, :mod:`distill.models.contract`) gets it from a hook on its
``cam_layer``. :func:`build_arch` checks which by a probe forward when it builds the network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from distill.models.contract import as_member
from distill.registry import Registry

# builder(in_channels, num_classes, image_size) -> net with forward(x) -> (logits, cam_features)
Builder = Callable[[int, int, tuple[int, int]], nn.Module]
# each entry's cam_layer: the layer whose output a logits-only architecture's Grad-CAM reads (None: its last nn.Conv2d)
ARCHS: Registry[Builder] = Registry("architecture")


def register_arch(name: str, cam_layer: str | None = None) -> Callable[[Builder], Builder]:
    """Register ``builder(channels, num_classes, (H, W)) -> nn.Module`` under ``name``. The module may return
    ``logits (B, K)`` or ``(logits, features)`` (:mod:`distill.models.contract`); ``cam_layer`` names the layer whose
    output is the Grad-CAM feature map of a logits-only module (default: its last ``nn.Conv2d``)."""
    return ARCHS.register(name, cam_layer=cam_layer)


def cam_layer(arch: str) -> str | None:
    """The Grad-CAM layer ``arch`` was registered with (None: its last ``nn.Conv2d``, or not registered)."""
    entry = ARCHS.get_entry(arch)
    return None if entry is None else entry.cam_layer


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
    builder = ARCHS.lookup(arch, "arch")
    return wrap_arch(arch, builder(channels, num_classes, tuple(size)), channels, num_classes, size, mean, std)


def wrap_arch(
    arch: str,
    net: nn.Module,
    channels: int,
    num_classes: int,
    size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Normalized:
    """``net`` (built by ``arch``'s builder, possibly with weights loaded) checked against the model contract by
    a probe forward, adapted to ``(logits, features)`` and standardised with ``mean`` / ``std``.

    The built-in architectures (builders in ``distill.models``) return ``(logits, features)`` by construction, so
    they skip the probe (0.9 s per wrn28_10 member on one core); ``tests/test_contract.py`` probes every one."""
    if not getattr(ARCHS.get(arch), "__module__", "").startswith("distill.models."):
        net = as_member(net, channels, tuple(size), num_classes, name=f"arch '{arch}'", cam_layer=cam_layer(arch))
    return Normalized(net, mean, std)
