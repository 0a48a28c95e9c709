"""Objectives: what the loop minimises. Teacher objectives (DE, SDDE, baselines) and the student's KD."""

from distill.objectives import label_smoothing, teacher  # noqa: F401  (register the teacher objectives)
from distill.objectives.base import TEACHER_OBJECTIVES, Objective, Terms, objective_from_recipe, register_objective

__all__ = ["TEACHER_OBJECTIVES", "Objective", "Terms", "objective_from_recipe", "register_objective"]
