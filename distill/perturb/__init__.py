"""The perturbation engine: ``perturb(teacher, x, y, generator) -> PerturbResult`` by name, with the teacher's
disagreement on the clean and the perturbed batch. One short file per method (after pytorch-ood's layout)."""

from distill.perturb import disagree, mixup, ods, simple  # noqa: F401  (registers the methods)
from distill.perturb.base import (
    DISAGREEMENT,
    PERTURBATIONS,
    Perturbation,
    PerturbEntry,
    PerturbResult,
    disagreement_stats,
    frozen_teacher,
    label_disagreement,
    make_perturbation,
    mutual_information,
    pairwise_kl,
    prob_std,
    register_perturbation,
    teacher_logits,
    unit_rms,
)

__all__ = [
    "DISAGREEMENT",
    "PERTURBATIONS",
    "PerturbEntry",
    "PerturbResult",
    "Perturbation",
    "disagreement_stats",
    "frozen_teacher",
    "label_disagreement",
    "make_perturbation",
    "mutual_information",
    "pairwise_kl",
    "prob_std",
    "register_perturbation",
    "teacher_logits",
    "unit_rms",
]
