"""Beyond one training step: inference latency and memory, a whole epoch through the real loop, and FLOP/s
against the matmul rate measured in the same run."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from distill.bench.config import BenchConfig, clone, epoch_splits, make_student, make_teacher, step_batch
from distill.bench.sections.steps import bench_objective, train_step
from distill.bench.timing import count_flops, interleaved, matmul_rate, peak_memory_bytes, stats, weights_bytes
from distill.data.batches import Batch
from distill.objectives import objective_from_recipe

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
    from distill.loop import FitSetup, RunInfo, fit
    from distill.recipe import recipe_from_dict, to_dict

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
    spec = ensemble_spec(cfg.epoch_arch, cfg.epoch_members)
    model = build_model(spec, splits.meta)
    objective = objective_from_recipe(recipe.teacher.objective, "teacher.objective")[0]
    with tempfile.TemporaryDirectory() as tmp:
        setup = FitSetup(
            out=Path(tmp) / "run",
            splits=splits,
            data=recipe.data,
            train=recipe.teacher.train,
            run=recipe.run,
            seed=0,
            info=RunInfo("bench", spec, splits.meta.to_json(), 0, to_dict(recipe)),
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
        step = train_step(clone(base, "loop"), bench_objective(name, cfg), batch)
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
