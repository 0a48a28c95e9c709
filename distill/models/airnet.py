"""Airbench-style CIFAR nets: ``airnet_cpu`` (what ``recipes/cifar10_cpu.yaml`` trains) and ``airnet`` (the GPU
net of ``recipes/cifar10_fast.yaml``).

After Jordan's airbench (2024): a 2x2 patch stem, then three groups of conv -> 2x2 max-pool -> BN -> GELU ->
conv -> BN -> GELU, global max-pool and a bias-free linear head scaled down (airbench's 1/9 logit scale,
which keeps early softmax outputs soft). Departures from airbench, and why:
- the stem has stride 2 (airbench: stride 1, whitened by the data's patch covariance, frozen). Stride 2 cuts
  the cost 3x, which is what lets a 4-member teacher, a single net and five students train on 2 CPU cores in
  the pipeline's budget (docs/performance.md measures the options); the stem is learned, not whitened, so
  the net is a plain registry entry with no data-dependent initialisation;
- widths 32 / 64 / 128 (airbench94: 64 / 256 / 256), measured in docs/performance.md.
Grad-CAM layer: the second group's output (4x4 on 32x32 input), as coarse as ResNet-18's last stage on
CIFAR; the third group's output is 2x2, too coarse for a saliency map to say where a member looks.

``airnet`` is airbench94's topology: a stride-1 2x2 stem of 24 channels and widths 64 / 256 / 256 (Grad-CAM
layer 7x7). Its stem is learned, not whitened and frozen, and training has none of airbench's other tricks
(lookahead, test-time flips, label smoothing): a plain registry entry the recipes can train like any other.
Airbench reports 94% in about 10 epochs with those tricks; what this net reaches without them is measured by
``tools/device_check.sh`` (not yet on a GPU).
"""

from __future__ import annotations

import torch
from torch import nn

from distill.models.registry import register_arch


def _group(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(cout),
        nn.GELU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.GELU(),
    )


class AirNet(nn.Module):
    def __init__(
        self, channels: int, num_classes: int, widths: tuple[int, int, int], stem: int = 24, stem_stride: int = 2
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, stem, 2, stride=stem_stride, bias=True), nn.GELU())
        self.features = nn.Sequential(_group(stem, widths[0]), _group(widths[0], widths[1]))
        self.last = _group(widths[1], widths[2])
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = 1 / 9

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.features(self.stem(x))  # (B, w1, H/8, W/8); stride-1 stem: (B, w1, (H-1)//4, (W-1)//4)
        pooled = self.last(cam).amax(dim=(2, 3))  # (B, w2)
        return self.head(pooled) * self.scale, cam


@register_arch("airnet_cpu")
def airnet_cpu(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    """Widths 32 / 64 / 128, 0.3 M parameters: about 2,000 training images/s on 2 CPU cores."""
    return AirNet(channels, num_classes, (32, 64, 128))


@register_arch("airnet_cpu_wide")
def airnet_cpu_wide(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    """Widths 48 / 96 / 192, 0.66 M parameters: about half airnet_cpu's speed."""
    return AirNet(channels, num_classes, (48, 96, 192), stem=32)


@register_arch("airnet")
def airnet(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    """airbench94's widths 64 / 256 / 256 and stride-1 stem, 1.97 M parameters: the GPU net."""
    return AirNet(channels, num_classes, (64, 256, 256), stem=24, stem_stride=1)
