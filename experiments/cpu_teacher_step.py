"""Where the CIFAR-10 CPU teacher step goes, and whether packing the members into grouped convolutions helps
(does bf16 autocast or channels-last beat today's CPU loop?). One thread, medians of interleaved timings after warm-up.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/cpu_teacher_step.py

1. the DE step of recipes/cifar10_cpu.yaml's teacher (4 x airnet_cpu, batch 128 per member, per-member batches,
   summed CE, SGD) with contiguous and with channels-last weights (the recipe's run.channels_last), and
   channels-last under bf16 autocast (the recipe's run.mixed_precision=bf16: Accelerate's CPU autocast). bf16
   pays only on CPUs with native bf16 dot products (AVX512-BF16 or AMX); elsewhere oneDNN emulates it;
2. the share of the channels-last step per operator (torch.profiler, 3 steps);
3. forward + backward of one 3x3 convolution per airnet_cpu layer shape: the 4 members one after the other vs
   one grouped convolution over the members' stacked channels (Packed-Ensembles' execution, equal to the
   separate members when every member has its own batch);
4. on 2 cores: the loop with 2 intra-op threads vs the members split over 2 Python threads with 1 intra-op
   thread each (convolutions release the GIL, and a DE's members have independent losses, so each thread can
   run its members' forward and backward): whether member-parallel execution beats intra-op parallelism.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from distill.data.base import DatasetMeta
from distill.data.batches import Batch
from distill.models import build_model, ensemble_spec
from distill.models.ensemble import to_channels_last
from distill.objectives import objective_from_recipe

M, B = 4, 128


def medians(cases: dict[str, Callable[[], None]], reps: int = 7, warmup: int = 2) -> dict[str, float]:
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}


def teacher_step(channels_last: bool, bf16: bool = False) -> Callable[[], None]:
    torch.manual_seed(0)
    meta = DatasetMeta("cifar10", 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3)
    model = build_model(ensemble_spec("airnet_cpu", M), meta).train()
    if channels_last:
        to_channels_last(model)
    obj = objective_from_recipe({"name": "de", "same_batch": False, "ce_reduction": "sum"}, "teacher.objective")[0]
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.rand(M, B, 3, 32, 32, generator=g), torch.randint(10, (M, B), generator=g))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the loop autocasts the objective only
            loss, _ = obj(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def conv_cases(c: int, h: int) -> dict[str, Callable[[], None]]:
    cl = torch.channels_last
    xs = [torch.randn(B, c, h, h).contiguous(memory_format=cl).requires_grad_() for _ in range(M)]
    ws = [torch.randn(c, c, 3, 3).contiguous(memory_format=cl).requires_grad_() for _ in range(M)]
    xg = torch.randn(B, M * c, h, h).contiguous(memory_format=cl).requires_grad_()
    wg = torch.randn(M * c, c, 3, 3).contiguous(memory_format=cl).requires_grad_()

    def separate() -> None:
        for x, w in zip(xs, ws):
            F.conv2d(x, w, padding=1).sum().backward()

    def grouped() -> None:
        F.conv2d(xg, wg, padding=1, groups=M).sum().backward()

    return {"separate": separate, "grouped": grouped}


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and its native bf16 instructions, from /proc/cpuinfo (Linux; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    return name, [f for f in ("avx512_bf16", "amx_bf16") if f in text]


def member_parallel_cases() -> dict[str, Callable[[], None]]:
    """Forward + backward + SGD step of 4 channels-last airnet_cpu members on their own batches (a DE with the
    summed CE): one after the other, and split over 2 Python threads (members 0, 2 and 1, 3)."""
    torch.manual_seed(0)
    meta = DatasetMeta("cifar10", 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3)
    model = to_channels_last(build_model(ensemble_spec("airnet_cpu", M), meta).train())
    g = torch.Generator().manual_seed(1)
    x = torch.rand(M, B, 3, 32, 32, generator=g)  # (M, B, C, H, W)
    y = torch.randint(10, (M, B), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def members(ids: list[int]) -> None:
        for i in ids:
            logits, _ = model.members[i](x[i].contiguous(memory_format=torch.channels_last))  # (B, K), CAM features
            F.cross_entropy(logits, y[i], reduction="sum").backward()

    def loop() -> None:
        members(list(range(M)))
        opt.step()
        opt.zero_grad(set_to_none=True)

    def two_threads() -> None:
        threads = [threading.Thread(target=members, args=(list(range(k, M, 2)),)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {"loop": loop, "two_threads": two_threads}


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    name, flags = cpu_info()
    print(f"CPU {name}; native bf16: {', '.join(flags) or 'none found in /proc/cpuinfo'}")
    steps = {
        "contiguous": teacher_step(False),
        "channels_last": teacher_step(True),
        "channels_last_bf16": teacher_step(True, bf16=True),
    }
    med = medians(steps)
    print(
        f"DE teacher step, {M} x airnet_cpu, batch {B} per member: "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in med.items())
    )
    print(f"contiguous / channels-last: {med['contiguous'] / med['channels_last']:.2f}x")
    print(f"contiguous / channels-last bf16: {med['contiguous'] / med['channels_last_bf16']:.2f}x")
    # the CPU goal: today's loop (the recipe's channels-last fp32) over the fastest measured alternative
    goal = med["channels_last"] / med["channels_last_bf16"]
    print(f"channels-last / channels-last bf16 (the goal ratio): {goal:.2f}x")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            steps["channels_last"]()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print("share of the channels-last step: " + ", ".join(
        f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in events[:5]))  # fmt: skip
    print("3x3 conv forward + backward, 4 members (ms): shape | separate | grouped | separate / grouped")
    for c, h in [(32, 16), (32, 8), (64, 8), (64, 4), (128, 4), (128, 2)]:
        r = medians(conv_cases(c, h), reps=5)
        print(f"  {c} ch {h}x{h} | {r['separate']:.1f} | {r['grouped']:.1f} | {r['separate'] / r['grouped']:.2f}x")
    threads = torch.get_num_threads()
    cases = member_parallel_cases()
    times: dict[str, float] = {}
    for name, n in (("loop", 1), ("loop", 2), ("two_threads", 1)):  # intra-op threads per case
        torch.set_num_threads(n)
        times[f"{name}, {n} intra-op"] = medians({name: cases[name]})[name]
    torch.set_num_threads(threads)
    print("DE member step, 4 members, 2 cores (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"loop at 2 intra-op threads / members on 2 threads: "
          f"{times['loop, 2 intra-op'] / times['two_threads, 1 intra-op']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
