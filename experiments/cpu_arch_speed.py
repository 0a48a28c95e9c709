"""Training and inference throughput of candidate CPU CIFAR nets (the measurement behind airnet_cpu).

    python experiments/cpu_arch_speed.py THREADS BATCH [contiguous]      # e.g. 2 256

Median of 5 training steps after 2 warm-up steps; channels-last weights and inputs (``contiguous``: the default
layout instead, for the channels-last comparison); random 32x32 inputs.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch import nn


class Air(nn.Module):
    """airbench-style: a 2x2 stem, then per width: conv, max-pool, BN, act, conv, BN, act; max-pool, linear."""

    def __init__(self, widths: tuple[int, ...], stem: int = 24, stride: int = 1, act: type = nn.GELU) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 2, stride=stride), act()]
        cin = stem
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(w), act()]
            layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), act()]
            cin = w
        self.f = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.f(x).amax((2, 3)))


CANDIDATES = {
    "stride1_32_64_128": lambda: Air((32, 64, 128)),
    "stride1_32_64_128_relu": lambda: Air((32, 64, 128), act=nn.ReLU),
    "stride2_64_128_256": lambda: Air((64, 128, 256), stem=32, stride=2),
    "stride2_48_96_192 (airnet_cpu_wide)": lambda: Air((48, 96, 192), stem=32, stride=2),
    "stride2_32_64_128 (airnet_cpu)": lambda: Air((32, 64, 128), stem=24, stride=2),
}


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]))
    b = int(sys.argv[2])
    layout = torch.contiguous_format if sys.argv[3:] == ["contiguous"] else torch.channels_last
    for name, make in CANDIDATES.items():
        model = make().to(memory_format=layout)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(b, 3, 32, 32).contiguous(memory_format=layout)
        y = torch.randint(0, 10, (b,))
        times = []
        for _ in range(7):
            start = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            start = time.perf_counter()
            model(x)
            infer = time.perf_counter() - start
        params = sum(p.numel() for p in model.parameters())
        train = b / statistics.median(times[2:])
        print(f"{name:38s} params {params / 1e3:7.1f}k  train img/s {train:6.0f}  eval img/s {b / infer:6.0f}")


if __name__ == "__main__":
    main()
