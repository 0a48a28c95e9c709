"""Where the SDDE step's time goes: its phases (training forward, diversity forward, Grad-CAM, CAM similarity,
backward, optimizer) timed against the DE step's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from distill.bench.config import BenchConfig, clone, make_teacher, step_batch
from distill.bench.sections.steps import bench_objective, sgd_optimizer
from distill.bench.timing import Phases
from distill.data.batches import Batch


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
    """Time the cam term's own calls of ``gradcam`` and of the similarity (``standardised_maps`` and
    ``pairwise_cosine``, both booked as ``cam_similarity``), patched on its module and restored."""
    import distill.objectives.diversity.cam as cam_mod

    phase_of = {"gradcam": "gradcam", "standardised_maps": "cam_similarity", "pairwise_cosine": "cam_similarity"}
    originals = {name: getattr(cam_mod, name) for name in phase_of}

    def timed(name: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            with phases.phase(phase_of[name]):
                return fn(*args, **kwargs)

        return call

    for name, fn in originals.items():
        setattr(cam_mod, name, timed(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(cam_mod, name, fn)


def sdde_breakdown(cfg: BenchConfig, device: torch.device) -> dict:
    """Phases of the SDDE and the DE step, synchronised at each boundary, medians over ``reps`` steps.

    SDDE's backward also runs the training path's backward; that part is estimated by DE's backward (same
    forward, same batch), the rest is the CAM loss's backward: the double backprop through the heads and the
    backward through the diversity forward."""
    base = make_teacher(cfg)
    mode = base.resolved_mode(device)
    x, y = step_batch(cfg, cfg.members)
    batch = Batch(x, y)
    d = _phase_medians("de", clone(base, mode), batch, cfg, device)
    s = _phase_medians("sdde", clone(base, mode), batch, cfg, device)
    return _breakdown(s, d, mode)


def _phase_medians(name: str, net: nn.Module, batch: Batch, cfg: BenchConfig, device: torch.device) -> dict[str, float]:
    """Median ms of each phase of objective ``name``'s training step on ``net``, after ``cfg.warmup`` steps."""
    phases = Phases(device)
    model = _TimedModel(net, phases)
    objective = bench_objective(name, cfg)
    opt = sgd_optimizer(model)
    model.train()

    def step() -> None:
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
    return phases.medians_ms()


def _breakdown(s: dict[str, float], d: dict[str, float], mode: str) -> dict:
    """The SDDE step's phases (``s``) and its parts, the training path's backward estimated by DE's (``d``)."""
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
