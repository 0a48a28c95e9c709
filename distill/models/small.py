"""Small CNNs for 8x8 and 28x28 grey images (digits, MNIST)."""

from __future__ import annotations

import torch
from torch import nn

from distill.models.registry import register_arch


def _block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SmallCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU blocks (a 2x2 max-pool after the first when the input is 16 px or more),
    global average pooling and a linear head. Grad-CAM layer: the third block's output (8x8 on digits,
    so one border pixel can be cropped and a 6x6 map remains; 14x14 on MNIST)."""

    def __init__(self, channels: int, num_classes: int, size: tuple[int, int], width: int = 32) -> None:
        super().__init__()
        pool = nn.MaxPool2d(2) if min(size) >= 16 else nn.Identity()
        self.features = nn.Sequential(_block(channels, width), pool, _block(width, 2 * width))
        self.cam_layer = _block(2 * width, 2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.cam_layer(self.features(x))  # (B, 2w, H', W')
        return self.head(cam.mean(dim=(2, 3))), cam


class LeNet(nn.Module):
    """LeNet-style: 5x5 conv(32)-BN-ReLU-pool, 5x5 conv(64)-BN-ReLU (Grad-CAM layer), pool, FC 128, FC K."""

    def __init__(self, channels: int, num_classes: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(channels, 32, 5), nn.MaxPool2d(2))
        self.cam_layer = _block(32, 64, 5)
        h, w = size[0] // 4, size[1] // 4
        self.head = nn.Sequential(
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * h * w, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.cam_layer(self.features(x))
        return self.head(cam), cam


@register_arch("small_cnn")
def small_cnn(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    return SmallCNN(channels, num_classes, size)


@register_arch("tiny_cnn")
def tiny_cnn(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    """A quarter-width SmallCNN: a cheap student or a test model."""
    return SmallCNN(channels, num_classes, size, width=8)


@register_arch("lenet")
def lenet(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    return LeNet(channels, num_classes, size)
