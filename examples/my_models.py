"""A plugin: registers the architecture ``my_cnn`` for recipes and the command line.

    python -m distill teacher --plugin examples/my_models.py --recipe R --out DIR   # R says teacher.arch: my_cnn

``MyCNN`` is an ordinary classifier: ``forward`` returns ``logits (B, K)`` only. distill wraps it
(``distill.models.contract.Member``) and takes Grad-CAM feature maps from its last ``nn.Conv2d`` with a hook.
The run directory records this file (path and sha256); later commands import it again from that record.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.models import register_arch


class MyCNN(nn.Module):
    """Two conv-BN-ReLU blocks, a 2x2 max-pool and a linear head on the flattened map:
    ``x (B, C, H, W) -> logits (B, K)``."""

    def __init__(self, channels: int, num_classes: int, size: tuple[int, int], width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(width * (size[0] // 2) * (size[1] // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_arch("my_cnn")
def my_cnn(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    return MyCNN(channels, num_classes, size)
