"""Per-step cost of each pipeline stage (teacher objectives, students by perturbation, BatchEnsemble) as a
ratio to one single-network step, measured in one process (ratios survive a noisy machine better than times).

    PYTHONPATH=. python tools/stage_step_cost.py THREADS [ARCH]     # e.g. 2 airnet_cpu

Batch 128 (per member for the teachers), 4 members, 32x32 RGB, median of 6 steps after 2 warm-up steps.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from distill.data.base import DatasetMeta
from distill.data.batches import Batch
from distill.models import build_model, ensemble_spec
from distill.objectives import objective_from_recipe
from distill.objectives.student import KD
from distill.perturb import make_perturbation

B, M = 128, 4
META = DatasetMeta("c", 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3)


def step_time(model: nn.Module, loss_fn: Callable, views: int, reps: int = 6) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(reps + 2):
        x, y = torch.rand(views, B, 3, 32, 32), torch.randint(0, 10, (views, B))
        start = time.perf_counter()
        loss, _ = loss_fn(model, Batch(x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]))
    arch = sys.argv[2] if len(sys.argv) > 2 else "airnet_cpu"
    torch.manual_seed(0)
    teacher = build_model(ensemble_spec(arch, M), META).eval()
    rows = {}
    de, _ = objective_from_recipe({"name": "de"}, "t")
    rows["single"] = step_time(build_model(ensemble_spec(arch, 1), META), de, 1)
    rows["de4"] = step_time(build_model(ensemble_spec(arch, M), META), de, M)
    for same in (False, True):
        obj, _ = objective_from_recipe({"name": "sdde", "lam": 0.005, "same_batch": same}, "t")
        rows["sdde4" + ("_same_batch" if same else "")] = step_time(
            build_model(ensemble_spec(arch, M), META), obj, 1 if same else M
        )
    perturbs = [("none", {}), ("ods", {}), ("confods", {}), ("mixup", {})]
    perturbs += [("disagree", {"steps": k}) for k in (1, 2, 3)]
    for name, params in perturbs:
        kd = KD(teacher, make_perturbation(name, params), 0.9, 4.0)
        rows[f"kd_{name}{params.get('steps', '')}"] = step_time(build_model(ensemble_spec(arch, 1), META), kd, 1)
    for name in ("none", "confods"):
        kd = KD(teacher, make_perturbation(name, {}), 0.9, 4.0)
        be = build_model({"kind": "batchensemble", "arch": arch, "members": M}, META)
        rows[f"be4_{name}"] = step_time(be, kd, 1)
    for k, v in rows.items():
        print(f"{k:20s} {v * 1000:8.1f} ms  x{v / rows['single']:.2f}")


if __name__ == "__main__":
    main()
