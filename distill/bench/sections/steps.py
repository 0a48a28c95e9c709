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
from distill.perturb import PERTURBATIONS, make_perturbation


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


def in_bf16(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``step`` under bf16 autocast, as ``run.mixed_precision: bf16`` runs the loop (Accelerate's autocast)."""

    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            step()

    return run


def plain_member_loop(teacher: nn.Module, batch: Batch) -> Callable[[], None]:
    """The "official-style" baseline: each member its own module, optimizer and fp32 step, one after the other
    (forward, CE, backward, step), as per-member training scripts do; no objective, no ensemble wrapper."""
    members = [m.train() for m in clone(teacher).members]
    opts = [sgd_optimizer(m) for m in members]

    def step() -> None:
        for m, opt, x, y in zip(members, opts, batch.x, batch.y):
            logits, _ = m(x)
            torch.nn.functional.cross_entropy(logits, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


# --- teacher steps -------------------------------------------------------------------------------------------


def teacher_steps(cfg: BenchConfig, device: torch.device) -> dict:
    """DE and SDDE steps in every member mode (on CUDA also under bf16 autocast), SDDE reusing the training forward,
    SDDE with the diversity batch in train-mode BatchNorm, and the plain per-member fp32 loop, interleaved."""
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
    if device.type == "cuda":  # bf16 is what tensor cores are for; this CPU has no bf16 units (docs/performance.md)
        for mode in member_modes(cfg, base):
            for name in ("de", "sdde"):
                cases[f"{name}/{mode}/bf16"] = in_bf16(
                    train_step(clone(base, mode), bench_objective(name, cfg), batch), device
                )
    cases["plain_fp32_loop"] = plain_member_loop(base, batch)
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
    de_cases = {k: v for k, v in med.items() if k.startswith("de/")}
    best = min(de_cases, key=de_cases.get)
    out["best_de"] = best
    out["plain_over_best_de"] = med["plain_fp32_loop"] / de_cases[best]  # > 1: the best DE step is faster
    sdde_best = best.replace("de/", "sdde/", 1)
    out["best_sdde_over_best_de"] = med[sdde_best] / de_cases[best]
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
