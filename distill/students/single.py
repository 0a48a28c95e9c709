"""The ``single`` student: one network distilled from the teacher's mean tempered prediction (Hinton KD, with
the perturbation engine's inputs as in Nam et al. 2021). Read as member logits (the default readout)."""

from __future__ import annotations

from typing import Any

from torch import nn

from distill.models import ensemble_spec
from distill.objectives.base import Objective
from distill.objectives.student import KD
from distill.perturb.base import Perturbation
from distill.recipe import StudentCfg
from distill.students import StudentKind, register_student


def _spec(cfg: StudentCfg, options: Any, teacher_size: int) -> dict:
    return ensemble_spec(cfg.arch, 1)


def _objective(teacher: nn.Module, perturb: Perturbation, cfg: StudentCfg, options: Any) -> Objective:
    return KD(teacher, perturb, cfg.alpha, cfg.temperature)


register_student(StudentKind("single", _spec, _objective))
