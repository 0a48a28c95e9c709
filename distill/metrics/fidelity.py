"""Fidelity of a student to its teacher (Stanton et al. 2021): ``teacher_probs``, ``student_probs``: ``(B, C)``.

The teacher's distribution is the mean of its members' probabilities.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.metrics.classification import EPS


def _check(teacher_probs: Tensor, student_probs: Tensor) -> tuple[Tensor, Tensor]:
    if teacher_probs.dim() != 2 or teacher_probs.shape != student_probs.shape or teacher_probs.shape[0] == 0:
        raise ValueError(
            f"need two non-empty (B, C) tensors of one shape, got {tuple(teacher_probs.shape)} and "
            f"{tuple(student_probs.shape)}"
        )
    return teacher_probs.detach().to(torch.float64), student_probs.detach().to(torch.float64)


def agreement(teacher_probs: Tensor, student_probs: Tensor) -> float:
    """Top-1 agreement: ``(1/B) sum_i [argmax_c t_ic = argmax_c s_ic]``."""
    t, s = _check(teacher_probs, student_probs)
    return (t.argmax(dim=1) == s.argmax(dim=1)).double().mean().item()


def kl_teacher_student(teacher_probs: Tensor, student_probs: Tensor) -> float:
    """Mean ``KL(teacher || student) = (1/B) sum_i sum_c t_ic (log t_ic - log s_ic)`` in nats (``0 log 0 = 0``;
    ``s_ic`` clamped to at least ``EPS``).
    """
    t, s = _check(teacher_probs, student_probs)
    kl = torch.special.xlogy(t, t) - t * s.clamp_min(EPS).log()
    return kl.sum(dim=1).mean().item()
