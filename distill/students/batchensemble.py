"""The ``batchensemble`` student (Nam et al. 2021): a BatchEnsemble with one member per teacher member, each
distilled from its own teacher member (one-to-one KD). Read as member logits (the default readout)."""

from __future__ import annotations

from typing import Any

from torch import nn

from distill.objectives.base import Objective
from distill.objectives.student import KD
from distill.perturb.base import Perturbation
from distill.recipe import StudentCfg
from distill.students import StudentKind, register_student


def _spec(cfg: StudentCfg, options: Any, teacher_size: int) -> dict:
    return {"kind": "batchensemble", "arch": cfg.arch, "members": teacher_size}


def _objective(teacher: nn.Module, perturb: Perturbation, cfg: StudentCfg, options: Any) -> Objective:
    return KD(teacher, perturb, cfg.alpha, cfg.temperature)


register_student(StudentKind("batchensemble", _spec, _objective))
