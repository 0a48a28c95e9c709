"""What each model costs to deploy, measured: parameters, size on disk, FLOPs per image, CPU latency at batch 1
and throughput at the largest batch, in PyTorch and, for the model's exported ONNX file, in ONNX Runtime.

What is timed is the deployed computation: the module :mod:`distill.export` writes (the model plus its readout's
outputs: log predictive distribution and the three uncertainties), eval mode, no gradients, on the CPU, with
``torch.get_num_threads()`` threads for both runtimes. Cases are timed round-robin after their warm-up
(:func:`distill.bench.timing.interleaved`), so a load change on a shared machine hits every model alike and the
ratios between models stay meaningful even where the absolute times are noisy; every figure is a median.

* parameters: distinct parameter elements (a Hydra body counted once); buffers (BatchNorm statistics) not;
* size on disk: the run's ``model.safetensors`` (weights and buffers, float32);
* FLOPs per image: ``torch.utils.flop_counter`` at batch 1 (matmuls and convolutions, 2 FLOPs per
  multiply-add; elementwise work such as BatchNorm, activations and the readout's entropies is not counted).
  A BatchEnsemble student runs its members as M copies of the batch, so it counts M forward passes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill.bench.timing import count_flops, interleaved, stats
from distill.export import UncertaintyDeployable, export_onnx_checked
from distill.recipe import CostCfg
from distill.runs import RunDir

RELATIVE = ("flops_per_image", "params", "latency_ms", "images_per_s")


def _timing(times: list[float], batch: int) -> dict[str, float]:
    s = stats(times)
    return {
        "median_ms": s["median_ms"],
        "q1_ms": s["q1_ms"],
        "q3_ms": s["q3_ms"],
        "images_per_s": batch / (s["median_ms"] / 1000),
    }


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure_costs(
    runs: list[RunDir], image_shape: tuple[int, ...], cfg: CostCfg, out: Path, baseline: str | None
) -> tuple[dict[str, dict], list[str]]:
    """``{model key: cost}`` for every run and notes; ONNX files go to ``out/onnx/<key>.onnx``.

    ``baseline``: the model the ``relative`` ratios divide by (the single network), if present."""
    notes: list[str] = []
    cpu = torch.device("cpu")
    batches = sorted(set(cfg.batches))
    g = torch.Generator().manual_seed(0)
    inputs = {b: torch.rand(b, *image_shape, generator=g) for b in batches}
    cases: dict[str, Callable[[], object]] = {}
    results = {run.key: _run_entry(run, inputs, cfg, out, cases, notes) for run in runs}
    _fill_timings(results, interleaved(cases, cpu, cfg.reps, cfg.warmup), batches, baseline)
    meta = {
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "reps": cfg.reps,
        "warmup": cfg.warmup,
        "batches": batches,
        "latency_batch": batches[0],
        "throughput_batch": batches[-1],
        "baseline": baseline if baseline in results else None,
    }
    return {"config": meta, "models": results}, notes


def _run_entry(
    run: RunDir,
    inputs: dict[int, Tensor],
    cfg: CostCfg,
    out: Path,
    cases: dict[str, Callable[[], object]],
    notes: list[str],
) -> dict[str, Any]:
    """One run's cost entry without its timings (parameters, size on disk, FLOPs, the ONNX file); its timed
    calls are added to ``cases`` under ``runtime/key/batch``, so every model's are interleaved with the others'."""
    # the module as a user loads it from the export: contiguous, whatever layout the report predicted in
    model = copy.deepcopy(run.model).to(torch.device("cpu"), memory_format=torch.contiguous_format).eval()
    net = UncertaintyDeployable(model, run.info.get("spec", {})).eval()
    weights = run.path / "model.safetensors"
    first = inputs[min(inputs)]
    with torch.no_grad():
        flops = count_flops(lambda net=net: net(first[:1]))
    entry: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "disk_bytes": weights.stat().st_size if weights.is_file() else None,
        "flops_per_image": flops,
        "torch": {},
        "onnx": None,
        "onnx_check": None,
    }
    for b, x in inputs.items():

        def run_torch(net=net, x=x) -> None:
            with torch.no_grad():
                net(x)

        cases[f"torch/{run.key}/{b}"] = run_torch
    if cfg.onnx:
        path = out / "onnx" / f"{run.key}.onnx"
        try:
            entry["onnx_check"] = export_onnx_checked(model, run.info.get("spec", {}), first, path)
            sess = _ort_session(path)
            feed = sess.get_inputs()[0].name
            entry["onnx"] = {"file": str(path.relative_to(out)), "bytes": path.stat().st_size}
            for b, x in inputs.items():
                arr = x.numpy()
                cases[f"onnx/{run.key}/{b}"] = lambda sess=sess, feed=feed, arr=arr: sess.run(None, {feed: arr})
        except Exception as err:  # an export failure is reported, not fatal to the report
            notes.append(f"{run.key}: no ONNX timing ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    return entry


def _fill_timings(
    results: dict[str, dict], times: dict[str, list[float]], batches: list[int], baseline: str | None
) -> None:
    """The timings into each entry, its latency (smallest batch) and throughput (largest), and the ratios to
    ``baseline``'s."""
    for key, t in times.items():
        runtime, model_key, b = key.split("/")
        entry = results[model_key]
        if runtime == "torch":
            entry["torch"][f"b{b}"] = _timing(t, int(b))
        else:
            entry["onnx"].setdefault("timing", {})[f"b{b}"] = _timing(t, int(b))
    first, last = f"b{batches[0]}", f"b{batches[-1]}"
    for entry in results.values():
        entry["latency_ms"] = entry["torch"][first]["median_ms"]
        entry["images_per_s"] = entry["torch"][last]["images_per_s"]
    if baseline in results:
        base = results[baseline]
        for entry in results.values():
            entry["relative"] = {k: entry[k] / base[k] if base[k] else None for k in RELATIVE}
