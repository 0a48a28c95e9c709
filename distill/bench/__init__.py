"""The benchmark: teacher and student step costs as ratios measured in one run, inference, an epoch, FLOP/s.

``run_bench(device, model, out, quick)`` writes ``out/bench.json`` and ``out/bench.md``. Every number is a
median of repeated, synchronised timings after warm-up (CUDA events on a GPU, ``time.perf_counter`` on the
CPU), with the cases of a section interleaved so that ratios compare like with like on a shared machine.

Sections: ``teacher`` (DE and SDDE steps in each member mode; DE member-images/s; SDDE / DE), ``sdde_breakdown``
(training forward, diversity forward, CAM double backprop), ``student`` (each perturbation's KD step / plain KD),
``inference`` (teacher vs student at two batch sizes; peak memory on CUDA), ``epoch`` (the teacher recipe through
:func:`distill.loop.fit`), ``flops`` (FlopCounterMode FLOPs per step against a matmul measured in the same run).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from distill import UserError
from distill.bench.config import BenchConfig, bench_config
from distill.bench.report import markdown
from distill.bench.sections import epoch, flops, inference, sdde_breakdown, student_steps, teacher_steps
from distill.checkpoint import atomic_write_text

SECTIONS = ("teacher", "sdde_breakdown", "student", "inference", "epoch", "flops")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}"


def env_prefix() -> str:
    """``OMP_NUM_THREADS=n `` when set: it changes the numbers, so the printed command carries it."""
    n = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={n} " if n else ""


def _command(
    cfg: BenchConfig, model: str | None, out: Path, threads: int | None, data_root: Path | None, sections: tuple
) -> str:
    parts = [f"{env_prefix()}python -m distill bench", f"--device {cfg.device}"]
    if model is not None:
        parts.append(f"--model {model}")
    parts.append(f"--out {out}")
    if cfg.quick:
        parts.append("--quick")
    if threads is not None:
        parts.append(f"--threads {threads}")
    if data_root is not None:
        parts.append(f"--data-root {data_root}")
    if tuple(sections) != tuple(SECTIONS):
        parts.append("--sections " + " ".join(sections))
    return " ".join(parts)


def run_bench(
    device: str = "cpu",
    model: str | None = None,
    out: Path = Path("runs/bench"),
    quick: bool = False,
    *,
    threads: int | None = None,
    data_root: Path | None = None,
    sections: tuple[str, ...] = SECTIONS,
) -> dict:
    """Run the benchmark and write ``out/bench.json`` and ``out/bench.md``; returns the JSON's content.

    ``device``: "cpu" or "cuda". ``model``: the teacher members' architecture (default small_cnn on the CPU,
    resnet18 on CUDA). ``quick``: tiny sizes (a smoke test, seconds). ``threads``: torch CPU threads for the
    run (default: leave torch's setting). ``data_root``: the epoch's dataset (default ../shared/data/...;
    synthetic data of the same shape when absent, said in the output). ``sections``: a subset to run.
    """
    _check_args(device, sections)
    out = Path(out)
    cfg = bench_config(device, model, quick)
    dev = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    result: dict = {
        "config": {
            "device": device,
            "device_name": _device_name(dev),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "threads": torch.get_num_threads(),
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": _command(cfg, model, out, threads, data_root, sections),
            **{k: v for k, v in cfg.__dict__.items() if k != "device"},
        }
    }
    try:
        _measure(result, cfg, dev, data_root, sections)
    finally:
        torch.set_num_threads(old_threads)
    result["config"]["bench_wall_s"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(result, indent=2, default=str))
    atomic_write_text(out / "bench.md", markdown(result))
    return result


def _check_args(device: str, sections: tuple[str, ...]) -> None:
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise UserError(f"bench sections {sorted(unknown)}: expected some of {', '.join(SECTIONS)}")


def _measure(
    result: dict, cfg: BenchConfig, dev: torch.device, data_root: Path | None, sections: tuple[str, ...]
) -> None:
    """The chosen sections' numbers into ``result``, in :data:`SECTIONS` order (flops divides by the teacher's
    step, so it measures the teacher section too)."""
    if "teacher" in sections or "flops" in sections:
        result["teacher"] = teacher_steps(cfg, dev)
    if "sdde_breakdown" in sections:
        result["sdde_breakdown"] = sdde_breakdown(cfg, dev)
    if "student" in sections:
        result["student"] = student_steps(cfg, dev)
    if "inference" in sections:
        result["inference"] = inference(cfg, dev)
    if "epoch" in sections:
        result["epoch"] = epoch(cfg, dev, data_root)
    if "flops" in sections:
        result["flops"] = flops(cfg, dev, result["teacher"])


__all__ = ["SECTIONS", "env_prefix", "run_bench"]
