"""Training-step sections: DE and SDDE teacher steps in every member mode, KD student steps with each
perturbation; and the step helpers (objective, optimizer, one timed step) the other sections share."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from distill.bench.config import BenchConfig, clone, make_student, make_teacher, step_batch
from distill.bench.timing import interleaved, stats
from distill.data.batches import Batch
from distill.objectives import objective_from_recipe
from distill.objectives.student import KD
from distill.perturb import make_perturbation

PERTURBATIONS = ("none", "gaussian", "ods", "confods", "disagree")


def bench_objective(name: str, cfg: BenchConfig, same_batch: bool = False, **extra):
    """DE and SDDE as the recipes configure them (per-member batches, mean-reduced member CEs); ``extra``:
    further objective fields (``diversity_bn``)."""
    spec = {"name": name, "same_batch": same_batch, "ce_reduction": "mean", **extra}
    if name == "sdde":
        spec["lam"] = cfg.lam
    return objective_from_recipe(spec, "bench.objective")[0]


def sgd_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)


def train_step(model: nn.Module, objective, batch: Batch) -> Callable[[], None]:
    """One optimizer step of ``objective`` on a fixed batch: forward, backward, step (as the loop does)."""
    opt = sgd_optimizer(model)
    model.train()

    def step() -> None:
        loss, _ = objective(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def member_modes(cfg: BenchConfig, teacher: nn.Module) -> list[str]:
    return ["loop", "vmap"] if teacher.homogeneous and cfg.members > 1 else ["loop"]


# --- teacher steps -------------------------------------------------------------------------------------------


def teacher_steps(cfg: BenchConfig, device: torch.device) -> dict:
    """DE and SDDE steps in every member mode (and SDDE reusing the training forward, and SDDE with the diversity
    batch in train-mode BatchNorm), interleaved."""
    base = make_teacher(cfg)
    headline = base.resolved_mode(device)
    x, y = step_batch(cfg, cfg.members)
    batch, shared = Batch(x, y), Batch(x[:1], y[:1])
    cases: dict[str, Callable[[], None]] = {}
    for mode in member_modes(cfg, base):
        cases[f"de/{mode}"] = train_step(clone(base, mode), bench_objective("de", cfg), batch)
        cases[f"sdde/{mode}"] = train_step(clone(base, mode), bench_objective("sdde", cfg), batch)
    cases[f"sdde_same_batch/{headline}"] = train_step(
        clone(base, headline), bench_objective("sdde", cfg, same_batch=True), shared
    )
    cases[f"sdde_train_bn/{headline}"] = train_step(
        clone(base, headline), bench_objective("sdde", cfg, diversity_bn="train"), batch
    )
    times = interleaved(cases, device, cfg.reps, cfg.warmup)
    steps = {k: stats(v) for k, v in times.items()}
    med = {k: v["median_ms"] for k, v in steps.items()}
    images = cfg.members * cfg.batch
    out = {
        "mode": headline,
        "member_images_per_step": images,
        "steps": steps,
        "de_member_images_per_s": images / (med[f"de/{headline}"] / 1000),
        "sdde_member_images_per_s": images / (med[f"sdde/{headline}"] / 1000),
        "sdde_over_de": med[f"sdde/{headline}"] / med[f"de/{headline}"],
        "sdde_same_batch_over_de": med[f"sdde_same_batch/{headline}"] / med[f"de/{headline}"],
        "sdde_train_bn_over_sdde": med[f"sdde_train_bn/{headline}"] / med[f"sdde/{headline}"],
    }
    if "de/vmap" in med:
        out["vmap_over_loop"] = {
            "de": med["de/vmap"] / med["de/loop"],
            "sdde": med["sdde/vmap"] / med["sdde/loop"],
        }
        out["sdde_over_de_by_mode"] = {m: med[f"sdde/{m}"] / med[f"de/{m}"] for m in ("loop", "vmap")}
    return out


# --- student steps -------------------------------------------------------------------------------------------


def student_steps(cfg: BenchConfig, device: torch.device) -> dict:
    """KD steps with each perturbation method (default parameters), against the plain KD step (``none``)."""
    teacher = make_teacher(cfg)  # frozen by KD
    student = make_student(cfg)
    x, y = step_batch(cfg, 1)
    batch = Batch(x, y)
    cases = {}
    for name in PERTURBATIONS:
        objective = KD(teacher, make_perturbation(name, {}), alpha=0.9, temperature=4.0)
        cases[name] = train_step(clone(student), objective, batch)
    times = interleaved(cases, device, cfg.reps, cfg.warmup)
    steps = {k: stats(v) for k, v in times.items()}
    plain = steps["none"]["median_ms"]
    params = {name: make_perturbation(name, {}).params for name in PERTURBATIONS}
    return {
        "teacher_mode": teacher.resolved_mode(device),
        "steps": steps,
        "over_plain_kd": {k: v["median_ms"] / plain for k, v in steps.items()},
        "params": {k: {f: getattr(p, f) for f in p.__dataclass_fields__} for k, p in params.items()},
    }
