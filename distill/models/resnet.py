"""CIFAR ResNets: ResNet-18 (3x3 stem, no max-pool), ResNet-20/32 (He et al. 2016), WRN-28-10."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.registry import register_arch


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            # Projection shortcut (option B) for every variant, ResNet-20/32 included: simpler than the
            # zero-padding option A of He et al., and the common choice in PyTorch reproductions.
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet18(nn.Module):
    """CIFAR ResNet-18. Grad-CAM layer: the output of ``layer3`` (as in the official SDDE code)."""

    def __init__(self, channels: int, num_classes: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.layer1 = _stage(64, 64, 2, 1)
        self.layer2 = _stage(64, 128, 2, 2)
        self.layer3 = _stage(128, 256, 2, 2)
        self.layer4 = _stage(256, 512, 2, 2)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.layer3(self.layer2(self.layer1(self.stem(x))))
        out = self.layer4(cam)
        return self.fc(out.mean(dim=(2, 3))), cam


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. for CIFAR: widths 16/32/64. Grad-CAM layer: the last stage's output."""

    def __init__(self, channels: int, num_classes: int, n: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = _stage(16, 16, n, 1)
        self.layer2 = _stage(16, 32, n, 2)
        self.layer3 = _stage(32, 64, n, 2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(cam.mean(dim=(2, 3))), cam


class WideBlock(nn.Module):
    """Pre-activation wide basic block (Zagoruyko and Komodakis 2016)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(self.dropout(F.relu(self.bn2(y))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-k. Grad-CAM layer: the final BN-ReLU output of the last group."""

    def __init__(self, channels: int, num_classes: int, depth: int = 28, k: int = 10, dropout: float = 0.0):
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * k, 32 * k, 64 * k]
        self.stem = nn.Conv2d(channels, w[0], 3, 1, 1, bias=False)
        groups = []
        for i, stride in enumerate((1, 2, 2)):
            groups += [
                WideBlock(w[i] if j == 0 else w[i + 1], w[i + 1], stride if j == 0 else 1, dropout) for j in range(n)
            ]
        self.blocks = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(cam.mean(dim=(2, 3))), cam


@register_arch("resnet18")
def resnet18(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    return ResNet18(channels, num_classes, size)


@register_arch("resnet20")
def resnet20(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    return CifarResNet(channels, num_classes, 3)


@register_arch("resnet32")
def resnet32(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    return CifarResNet(channels, num_classes, 5)


@register_arch("wrn28_10")
def wrn28_10(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    return WideResNet(channels, num_classes, 28, 10)


@register_arch("wrn16_2")
def wrn16_2(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    """A small WRN for tests and CPU-sized runs."""
    return WideResNet(channels, num_classes, 16, 2)
