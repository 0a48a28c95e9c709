"""The perturbation engine: ``perturb(teacher, x, y, generator) -> PerturbResult`` by name, with the teacher's
disagreement on the clean and the perturbed batch. One short file per method (after pytorch-ood's layout)."""

from distill.perturb.base import (
    DISAGREEMENT,
    PERTURBATIONS,
    Perturbation,
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
from distill.registry import discover

discover(__name__, __path__)  # each perturbation file registers itself

__all__ = [
    "DISAGREEMENT",
    "PERTURBATIONS",
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
