"""`accelerate launch tests/ddp_worker.py OUT_INDICES CLI_ARGS...`: the distill CLI, with two things a test needs.

* ``test_ddp_probe``: a network without BatchNorm or dropout (a conv, ReLU and a linear head), so a data-parallel
  step is exactly a one-process step on the union of the ranks' batches (BatchNorm would normalise each rank's
  half-batch with its own statistics, dropout draws per process).
* Every sample order the training loader draws is written to ``OUT_INDICES/rank<r>.json``: the indices each
  process trained on, per epoch and view, in step order.

Not collected by pytest (no ``test_`` prefix); tests/test_distributed.py imports it for the one-process run too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from distill.data.batches import DeviceLoader
from distill.models.registry import ARCHS, register_arch

ARCH = "test_ddp_probe"


class Probe(nn.Module):
    def __init__(self, channels: int, num_classes: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.head = nn.Linear(4 * size[0] * size[1], num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = torch.relu(self.conv(x))  # (B, 4, H, W)
        return self.head(cam.flatten(1)), cam


def register() -> None:
    if ARCH not in ARCHS:
        register_arch(ARCH)(Probe)


def record_orders(folder: Path, rank: int) -> None:
    """Wrap DeviceLoader._order so each call's indices land in folder/rank<rank>.json."""
    seen: list[dict] = []
    real = DeviceLoader._order

    def recording(self: DeviceLoader, epoch: int, view: int, n: int) -> torch.Tensor:
        idx = real(self, epoch, view, n)
        seen.append({"epoch": epoch, "view": view, "world": self.world, "indices": idx.tolist()})
        (folder / f"rank{rank}.json").write_text(json.dumps(seen))
        return idx

    DeviceLoader._order = recording


def main() -> int:
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    register()
    record_orders(folder, int(os.environ.get("RANK", "0")))
    from distill.cli import main as cli

    return cli(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
