"""Diversity terms ``D_k`` of teacher objectives ``CE + sum_k lam_k D_k``, one file each."""

from distill.objectives.diversity.base import (
    DIVERSITY_TERMS,
    DiversityTerm,
    DiversityView,
    make_terms,
    register_term,
    resolve_terms,
    term_name,
)
from distill.registry import discover

discover(__name__, __path__)  # each term file registers itself

__all__ = [
    "DIVERSITY_TERMS",
    "DiversityTerm",
    "DiversityView",
    "make_terms",
    "register_term",
    "resolve_terms",
    "term_name",
]
