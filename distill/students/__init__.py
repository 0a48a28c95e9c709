"""Student kinds: the seam through which training, the report and export treat every kind of student alike.

A kind is one small file (here, or a user's: ``tests/test_one_file_extension.py`` is one) that registers up to three
things:

* a :class:`StudentKind` under the recipe's ``students[].kind``: how to build the student's model spec from the
  recipe and the teacher's size, and its objective (with typed ``students[].options``, checked key by key);
* a model kind (:func:`distill.models.register_kind`) where its network is not one the package builds already: a
  :class:`~distill.models.contract.DistillModel`, whose declared members tell training, prediction and the report
  how it runs;
* a :class:`~distill.students.readout.Readout` under the model spec's ``kind``, where its outputs are not
  plain member logits: how to read the model's output ``logits (M, B, K)`` as a predictive distribution,
  uncertainty scores (total, data, knowledge) and OOD scores, and what its exported file outputs.

Kinds: ``single`` (one network, Hinton KD), ``batchensemble`` (Nam et al. 2021, one-to-one), ``hydra`` (Tran et
al. 2020, one-to-one heads on a shared body), ``dirichlet`` (EnD², Malinin et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from distill.objectives.base import Objective
from distill.perturb.base import Perturbation
from distill.recipe import StudentCfg
from distill.registry import Registry, discover
from distill.students.readout import MEMBERS, READOUTS, Readout, readout_for, register_readout

SpecFn = Callable[[StudentCfg, Any, int], dict]  # (recipe section, its options, teacher size) -> model spec
ObjectiveFn = Callable[[nn.Module, Perturbation, StudentCfg, Any], Objective]  # (teacher, perturb, cfg, options)


@dataclass(frozen=True)
class StudentKind:
    name: str
    spec: SpecFn
    objective: ObjectiveFn
    options: type | None = None  # a frozen dataclass of the kind's ``options``; None: the kind takes none


STUDENT_KINDS: Registry[StudentKind] = Registry("student kind")


def register_student(kind: StudentKind) -> StudentKind:
    return STUDENT_KINDS.register(kind.name, kind, params=kind.options)


def student_kind(cfg: StudentCfg) -> tuple[StudentKind, Any]:
    """The registered kind of a recipe's student section and its options, built and checked."""
    kind = STUDENT_KINDS.lookup(cfg.kind, f"students[{cfg.name}].kind")
    return kind, STUDENT_KINDS.build_params(cfg.kind, cfg.options, f"students[{cfg.name}].options")


def student_spec(cfg: StudentCfg, teacher_size: int) -> dict:
    kind, opts = student_kind(cfg)
    return kind.spec(cfg, opts, teacher_size)


def student_objective(cfg: StudentCfg, teacher: nn.Module, perturb: Perturbation) -> Objective:
    kind, opts = student_kind(cfg)
    return kind.objective(teacher, perturb, cfg, opts)


__all__ = [
    "MEMBERS",
    "READOUTS",
    "STUDENT_KINDS",
    "Readout",
    "StudentKind",
    "readout_for",
    "register_readout",
    "register_student",
    "student_kind",
    "student_objective",
    "student_spec",
]

discover(__name__, __path__)  # each kind's file registers itself
