"""The benchmark's sections. Each calls the real objectives (``objective_from_recipe``, ``KD`` with
``make_perturbation``) and the real loop (``fit``), and returns plain JSON-able dicts.

- :mod:`~distill.bench.sections.steps`: training steps: DE and SDDE teacher steps, KD student steps with each
  perturbation (and the step helpers the other sections share);
- :mod:`~distill.bench.sections.breakdown`: where the SDDE step's time goes, phase by phase;
- :mod:`~distill.bench.sections.throughput`: inference latency, a whole epoch through the real loop, FLOP/s
  against the measured matmul rate.
"""

from __future__ import annotations

from distill.bench.sections.breakdown import sdde_breakdown
from distill.bench.sections.steps import student_steps, teacher_steps
from distill.bench.sections.throughput import epoch, flops, inference

__all__ = ["epoch", "flops", "inference", "sdde_breakdown", "student_steps", "teacher_steps"]
