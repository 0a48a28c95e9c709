"""The benchmark's sections. Each calls the real objectives (``objective_from_recipe``, ``KD`` with
``make_perturbation``) and the real loop (``fit``), and returns plain JSON-able dicts."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from distill.bench.config import (
    BenchConfig,
    clone,
    epoch_splits,
    make_student,
    make_teacher,
    step_batch,
)
from distill.bench.timing import (
    Phases,
    count_flops,
    interleaved,
    matmul_rate,
    peak_memory_bytes,
    stats,
    weights_bytes,
)
from distill.data.batches import Batch
from distill.objectives import objective_from_recipe
from distill.objectives.student import KD
from distill.perturb import make_perturbation

PERTURBATIONS = ("none", "gaussian", "ods", "confods", "disagree")


def _objective(name: str, cfg: BenchConfig, same_batch: bool = False):
    """DE and SDDE as the recipes configure them (per-member batches, mean-reduced member CEs)."""
    spec = {"name": name, "same_batch": same_batch, "ce_reduction": "mean"}
    if name == "sdde":
        spec["lam"] = cfg.lam
    return objective_from_recipe(spec, "bench.objective")[0]


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)


def _train_step(model: nn.Module, objective, batch: Batch) -> Callable[[], None]:
    """One optimizer step of ``objective`` on a fixed batch: forward, backward, step (as the loop does)."""
    opt = _optimizer(model)
    model.train()

    def step() -> None:
        loss, _ = objective(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _modes(cfg: BenchConfig, teacher: nn.Module) -> list[str]:
    return ["loop", "vmap"] if teacher.homogeneous and cfg.members > 1 else ["loop"]


# --- teacher steps -------------------------------------------------------------------------------------------


def teacher_steps(cfg: BenchConfig, device: torch.device) -> dict:
    """DE and SDDE steps in every member mode (and SDDE reusing the training forward), interleaved."""
    base = make_teacher(cfg)
    headline = base.resolved_mode(device)
    x, y = step_batch(cfg, cfg.members)
    batch, shared = Batch(x, y), Batch(x[:1], y[:1])
    cases: dict[str, Callable[[], None]] = {}
    for mode in _modes(cfg, base):
        cases[f"de/{mode}"] = _train_step(clone(base, mode), _objective("de", cfg), batch)
        cases[f"sdde/{mode}"] = _train_step(clone(base, mode), _objective("sdde", cfg), batch)
    cases[f"sdde_same_batch/{headline}"] = _train_step(
        clone(base, headline), _objective("sdde", cfg, same_batch=True), shared
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
    }
    if "de/vmap" in med:
        out["vmap_over_loop"] = {
            "de": med["de/vmap"] / med["de/loop"],
            "sdde": med["sdde/vmap"] / med["sdde/loop"],
        }
        out["sdde_over_de_by_mode"] = {m: med[f"sdde/{m}"] / med[f"de/{m}"] for m in ("loop", "vmap")}
    return out


# --- where the SDDE step goes --------------------------------------------------------------------------------


class _TimedModel(nn.Module):
    """Wraps the ensemble: a training-mode call is the training forward, an eval-mode call (SDDE's
    ``eval_mode(model)``) the diversity forward."""

    def __init__(self, inner: nn.Module, phases: Phases) -> None:
        super().__init__()
        self.inner, self.phases = inner, phases

    @property
    def size(self) -> int:
        return self.inner.size

    def forward(self, x: torch.Tensor):
        with self.phases.phase("train_forward" if self.inner.training else "diversity_forward"):
            return self.inner(x)


@contextlib.contextmanager
def _timed_saliency(phases: Phases) -> Iterator[None]:
    """Time the objective's own calls of ``gradcam`` and ``cam_similarity`` (patched on its module, restored)."""
    import distill.objectives.teacher as teacher_mod

    originals = {name: getattr(teacher_mod, name) for name in ("gradcam", "cam_similarity")}

    def timed(name: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            with phases.phase(name):
                return fn(*args, **kwargs)

        return call

    for name, fn in originals.items():
        setattr(teacher_mod, name, timed(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(teacher_mod, name, fn)


def sdde_breakdown(cfg: BenchConfig, device: torch.device) -> dict:
    """Phases of the SDDE and the DE step, synchronised at each boundary, medians over ``reps`` steps.

    SDDE's backward also runs the training path's backward; that part is estimated by DE's backward (same
    forward, same batch), the rest is the CAM loss's backward: the double backprop through the heads and the
    backward through the diversity forward."""
    base = make_teacher(cfg)
    mode = base.resolved_mode(device)
    x, y = step_batch(cfg, cfg.members)
    batch = Batch(x, y)
    result: dict[str, dict[str, float]] = {}
    for name in ("de", "sdde"):
        phases = Phases(device)
        model = _TimedModel(clone(base, mode), phases)
        objective = _objective(name, cfg)
        opt = _optimizer(model)
        model.train()

        def step(model=model, objective=objective, opt=opt, phases=phases) -> None:
            with phases.phase("objective"):
                loss, _ = objective(model, batch)
            with phases.phase("backward"):
                loss.backward()
            with phases.phase("optimizer"):
                opt.step()
                opt.zero_grad(set_to_none=True)

        with _timed_saliency(phases):
            for _ in range(cfg.warmup):
                step()
            phases.laps.clear()
            phases.current = {}
            for _ in range(cfg.reps):
                step()
                phases.lap()
        result[name] = phases.medians_ms()
    s, d = result["sdde"], result["de"]
    inner = sum(s.get(k, 0.0) for k in ("train_forward", "diversity_forward", "gradcam", "cam_similarity"))
    phases_ms = {
        "train_forward": s["train_forward"],
        "diversity_forward": s.get("diversity_forward", 0.0),
        "gradcam_first_order": s.get("gradcam", 0.0),
        "cam_similarity": s.get("cam_similarity", 0.0),
        "objective_rest": max(s["objective"] - inner, 0.0),
        "backward": s["backward"],
        "optimizer": s["optimizer"],
    }
    total = sum(phases_ms.values())
    training_bwd = min(d["backward"], s["backward"])
    parts_ms = {
        "training forward + its backward + CE + optimizer": s["train_forward"]
        + training_bwd
        + phases_ms["objective_rest"]
        + s["optimizer"],
        "diversity forward (eval mode)": phases_ms["diversity_forward"],
        "CAM double backprop (Grad-CAM, similarity, their backward incl. through the diversity forward)": (
            phases_ms["gradcam_first_order"] + phases_ms["cam_similarity"] + s["backward"] - training_bwd
        ),
    }
    return {
        "mode": mode,
        "sdde_phases_ms": phases_ms,
        "sdde_phase_fractions": {k: v / total for k, v in phases_ms.items()},
        "de_phases_ms": {"train_forward": d["train_forward"], "backward": d["backward"], "optimizer": d["optimizer"]},
        "parts_ms": parts_ms,
        "parts_fractions": {k: v / total for k, v in parts_ms.items()},
        "instrumented_sdde_step_ms": total,
    }


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
        cases[name] = _train_step(clone(student), objective, batch)
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


# --- inference -----------------------------------------------------------------------------------------------


def inference(cfg: BenchConfig, device: torch.device) -> dict:
    """Eval-mode, no-grad forward latency of the teacher ensemble and the student; peak memory on CUDA."""
    models = {"teacher": make_teacher(cfg).eval(), "student": make_student(cfg).eval()}
    cases: dict[str, Callable[[], object]] = {}
    for b in cfg.inference_batches:
        g = torch.Generator().manual_seed(3)
        xb = torch.rand(b, cfg.channels, cfg.size, cfg.size, generator=g).to(device)
        for name, model in models.items():

            def run(model=model, xb=xb) -> None:
                with torch.no_grad():
                    model(xb)

            cases[f"{name}/b{b}"] = run
    times = interleaved(cases, device, cfg.reps, cfg.warmup)
    out: dict = {"teacher_mode": models["teacher"].resolved_mode(device), "cases": {}}
    for key, fn in cases.items():
        name, b = key.split("/")
        peak = peak_memory_bytes(fn, device)
        med = stats(times[key])
        out["cases"][key] = {
            **med,
            "images_per_s": int(b[1:]) / (med["median_ms"] / 1000),
            "peak_memory_mb": None if peak is None else peak / 2**20,
        }
    out["weights_mb"] = {k: weights_bytes(m) / 2**20 for k, m in models.items()}
    if device.type != "cuda":
        out["peak_memory_note"] = (
            "n/a on CPU: torch's CPU allocations are invisible to tracemalloc and the process's resident-set "
            "high-water mark does not isolate one forward; weights_mb is exact"
        )
    return out


# --- a whole epoch through the real loop ---------------------------------------------------------------------


def epoch(cfg: BenchConfig, device: torch.device, data_root: Path | None) -> dict:
    """One epoch of the teacher recipe (SDDE) through :func:`distill.loop.fit`, in a throw-away directory."""
    from distill.loop import FitSetup, fit
    from distill.recipe import recipe_from_dict

    splits, source, data_cfg = epoch_splits(cfg, data_root)
    tree = {
        "seed": 0,
        "data": data_cfg,
        "teacher": {
            "arch": cfg.epoch_arch,
            "members": cfg.epoch_members,
            "objective": {"name": "sdde", "lam": cfg.lam, "same_batch": False, "ce_reduction": "mean"},
            "train": {
                "epochs": 1,
                "batch_size": cfg.epoch_batch,
                "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
                "schedule": {"name": "cosine", "eta_min": 1e-6},
            },
        },
        "run": {"mixed_precision": cfg.epoch_mixed_precision, "progress": False, "cpu": device.type == "cpu"},
    }
    recipe = recipe_from_dict(tree)
    from distill.models import build_model, ensemble_spec

    torch.manual_seed(0)
    model = build_model(ensemble_spec(cfg.epoch_arch, cfg.epoch_members), splits.meta)
    objective = objective_from_recipe(recipe.teacher.objective, "teacher.objective")[0]
    with tempfile.TemporaryDirectory() as tmp:
        setup = FitSetup(
            out=Path(tmp) / "run",
            splits=splits,
            data=recipe.data,
            train=recipe.teacher.train,
            run=recipe.run,
            seed=0,
            info={"role": "bench"},
        )
        summary = fit(model, objective, setup)
    seconds = summary["epoch_times_s"][0]
    steps = len(splits.train_y) // cfg.epoch_batch
    return {
        "data": source,
        "train_images": len(splits.train_y),
        "image_shape": list(splits.train_x.shape[1:]),
        "arch": cfg.epoch_arch,
        "members": cfg.epoch_members,
        "objective": "sdde (same_batch: false)",
        "batch_per_member": cfg.epoch_batch,
        "steps": steps,
        "mixed_precision": cfg.epoch_mixed_precision,
        "mode": model.resolved_mode(device),
        "epoch_s": seconds,
        "member_images_per_s": steps * cfg.epoch_batch * cfg.epoch_members / seconds,
        "val_acc_after_1_epoch": summary["history"][0].get("val_acc"),
    }


# --- FLOP/s against the measured matmul rate -----------------------------------------------------------------


def flops(cfg: BenchConfig, device: torch.device, teacher: dict) -> dict:
    """FLOPs of one DE and one SDDE step (FlopCounterMode: matmuls and convolutions, forward and backward),
    the achieved rate at the medians measured in ``teacher``, and the share of the measured matmul rate."""
    base = make_teacher(cfg)
    mode = teacher["mode"]
    x, y = step_batch(cfg, cfg.members)
    batch = Batch(x, y)
    # The algorithm's FLOPs are counted in loop mode (vmap's batching rules add counted work, e.g. grouped
    # convolutions' backward) and divided by the step time measured in the headline mode.
    out: dict = {"mode": mode, "counted_in": "loop"}
    for name in ("de", "sdde"):
        step = _train_step(clone(base, "loop"), _objective(name, cfg), batch)
        try:
            n = count_flops(step)
        except Exception as err:  # a flop formula missing for an op is not worth failing the benchmark
            out[name] = {"error": f"{type(err).__name__}: {err}"[:200]}
            continue
        sec = teacher["steps"][f"{name}/{mode}"]["median_ms"] / 1000
        out[name] = {"gflop_per_step": n / 1e9, "achieved_gflop_per_s": n / sec / 1e9}
    rates = {"fp32": matmul_rate(device, torch.float32, cfg.matmul_n)}
    if device.type == "cuda":
        rates["bf16"] = matmul_rate(device, torch.bfloat16, cfg.matmul_n)
        out["tf32"] = {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_conv": torch.backends.cudnn.allow_tf32,
        }
    if "gflop_per_step" in out["de"] and "gflop_per_step" in out["sdde"]:
        out["sdde_over_de_flops"] = out["sdde"]["gflop_per_step"] / out["de"]["gflop_per_step"]
    out["matmul_n"] = cfg.matmul_n
    out["matmul_gflop_per_s"] = {k: v / 1e9 for k, v in rates.items()}
    for name in ("de", "sdde"):
        if "achieved_gflop_per_s" in out[name]:
            out[name]["share_of_matmul"] = {k: out[name]["achieved_gflop_per_s"] * 1e9 / v for k, v in rates.items()}
    return out
