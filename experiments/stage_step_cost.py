"""Per-step cost of each pipeline stage (teacher objectives, students by perturbation, BatchEnsemble) as a
ratio to one single-network step, measured in one process (ratios survive a noisy machine better than times).

    PYTHONPATH=. python experiments/stage_step_cost.py THREADS [ARCH] [MODE ...]     # e.g. 2 airnet_cpu

Batch 128 (per member for the teachers), 4 members, 32x32 RGB, median of 6 steps after 2 warm-up steps.
MODE (default: all four, one after the other in this process):

* ``contiguous``: contiguous weights, fp32;
* ``cl``: the trained model channels-last, the student's frozen teacher contiguous (the loop before the teacher
  took ``run.channels_last``);
* ``cl_teacher``: the trained model and the frozen teacher channels-last (``run.channels_last: true`` today);
* ``cl_teacher_bf16``: the same under CPU bf16 autocast (``run.mixed_precision: bf16``).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from distill.data.base import DatasetMeta
from distill.data.batches import Batch
from distill.models import build_model, ensemble_spec
from distill.models.ensemble import to_channels_last
from distill.objectives import objective_from_recipe
from distill.objectives.student import KD
from distill.perturb import make_perturbation

B, M = 128, 4
META = DatasetMeta("c", 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3)
MODES = ("contiguous", "cl", "cl_teacher", "cl_teacher_bf16")


def step_time(model: nn.Module, loss_fn: Callable, views: int, mode: str, reps: int = 6) -> float:
    if mode != "contiguous":
        to_channels_last(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(reps + 2):
        x, y = torch.rand(views, B, 3, 32, 32), torch.randint(0, 10, (views, B))
        start = time.perf_counter()
        bf16 = mode.endswith("bf16")
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss, _ = loss_fn(model, Batch(x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def stage_costs(arch: str, mode: str) -> dict[str, float]:
    """Median step seconds of each stage in one layout / precision ``mode``."""
    torch.manual_seed(0)
    teacher = build_model(ensemble_spec(arch, M), META).eval()
    if mode.startswith("cl_teacher"):
        to_channels_last(teacher)
    rows = {}
    de, _ = objective_from_recipe({"name": "de"}, "t")
    rows["single"] = step_time(build_model(ensemble_spec(arch, 1), META), de, 1, mode)
    rows["de4"] = step_time(build_model(ensemble_spec(arch, M), META), de, M, mode)
    for same in (False, True):
        obj, _ = objective_from_recipe({"name": "sdde", "lam": 0.005, "same_batch": same}, "t")
        rows["sdde4" + ("_same_batch" if same else "")] = step_time(
            build_model(ensemble_spec(arch, M), META), obj, 1 if same else M, mode
        )
    perturbs = [("none", {}), ("ods", {}), ("confods", {}), ("mixup", {})]
    perturbs += [("disagree", {"steps": k}) for k in (1, 2, 3)]
    for name, params in perturbs:
        kd = KD(teacher, make_perturbation(name, params), 0.9, 2.0)
        rows[f"kd_{name}{params.get('steps', '')}"] = step_time(build_model(ensemble_spec(arch, 1), META), kd, 1, mode)
    for name in ("none", "confods"):
        kd = KD(teacher, make_perturbation(name, {}), 0.9, 2.0)
        be = build_model({"kind": "batchensemble", "arch": arch, "members": M}, META)
        rows[f"be4_{name}"] = step_time(be, kd, 1, mode)
    return rows


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]))
    arch = sys.argv[2] if len(sys.argv) > 2 else "airnet_cpu"
    modes = sys.argv[3:] or list(MODES)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        sys.exit(f"MODE {unknown[0]}: expected one of {', '.join(MODES)}")
    table = {mode: stage_costs(arch, mode) for mode in modes}
    first = table[modes[0]]
    print("| step | " + " | ".join(f"{m} ms (x single)" for m in modes) + f" | {modes[0]} / {modes[-1]} |")
    print("|---" * (len(modes) + 2) + "|")
    for k in first:
        cells = [f"{table[m][k] * 1000:.1f} (x{table[m][k] / table[m]['single']:.2f})" for m in modes]
        print(f"| {k} | " + " | ".join(cells) + f" | {first[k] / table[modes[-1]][k]:.2f}x |")


if __name__ == "__main__":
    main()
