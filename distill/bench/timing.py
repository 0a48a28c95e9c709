"""Timing primitives: interleaved repeated timings with synchronisation, medians, matmul rate, FLOP counts, peak
memory.

Cases are timed round-robin (case A, B, C, A, B, C, ...) after their warm-up, so a load change on a shared
machine hits every case alike and the ratios of medians measured in one run stay meaningful. On CUDA each call
is bracketed by CUDA events and synchronised; on the CPU by ``time.perf_counter``.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, synchronised (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        sync(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
    cases: dict[str, Callable[[], object]], device: torch.device, reps: int, warmup: int
) -> dict[str, list[float]]:
    """``warmup`` untimed calls of each case, then ``reps`` rounds timing every case once per round."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            times[name].append(time_call(fn, device))
    return times


def stats(times: list[float]) -> dict[str, float]:
    """Median and quartiles in milliseconds, and the number of timings."""
    ms = sorted(1000.0 * t for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0], ms[0], ms[0]]
    return {"median_ms": statistics.median(ms), "q1_ms": q[0], "q3_ms": q[2], "n": len(ms)}


class Phases:
    """Accumulates synchronised wall time per named phase within one call; ``laps`` keeps every call's totals."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.current: dict[str, float] = {}
        self.laps: list[dict[str, float]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - t0

    def lap(self) -> None:
        self.laps.append(self.current)
        self.current = {}

    def medians_ms(self) -> dict[str, float]:
        names = sorted({k for lap in self.laps for k in lap})
        return {k: 1000.0 * statistics.median(lap.get(k, 0.0) for lap in self.laps) for k in names}


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, reps: int = 20) -> float:
    """Measured FLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype`` (median of ``reps``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = [time_call(lambda: a @ b, device) for _ in range(reps)]
    return 2.0 * n**3 / statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
    convolutions, their backward passes included; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak CUDA memory allocated during ``fn`` above what was allocated before it; None on the CPU, where
    torch's allocations are not visible to tracemalloc and the resident-set high-water mark of the process
    does not isolate one call."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def weights_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
