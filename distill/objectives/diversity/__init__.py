"""Diversity terms ``D_k`` of teacher objectives ``CE + sum_k lam_k D_k``, one file each."""

from distill.objectives.diversity import adp, cam, igd, ncl, oe  # noqa: F401  (registers the terms)
from distill.objectives.diversity.base import (
    DIVERSITY_TERMS,
    DiversityTerm,
    DiversityView,
    make_terms,
    register_term,
    resolve_terms,
)

__all__ = ["DIVERSITY_TERMS", "DiversityTerm", "DiversityView", "make_terms", "register_term", "resolve_terms"]
