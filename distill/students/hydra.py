"""The ``hydra`` student (Tran et al. 2020): a shared body and one head per teacher member
(:class:`distill.models.hydra.Hydra`); head m is distilled from teacher member m with the KD loss of
:mod:`distill.objectives.student` (one-to-one, as the BatchEnsemble student). Its prediction is the mean of the
heads' probabilities and its uncertainties and OOD scores are the ensemble's, mutual information included (the
default member-logits readout).

``students[].options`` (:class:`HydraOptions`):

* ``split``: the architecture stage where the heads begin (None: the last feature stage and the classifier);
* ``head_width``: the heads' width relative to the architecture's;
* ``head_lr_scale``: the heads' learning-rate multiplier (weight decay divided by it); ``M`` under SGD gives
  every head the update of a network trained alone on its own loss, which the mean over heads otherwise divides
  by M (:mod:`distill.models.hydra`);
* ``hinton_phase``: the paper's two-phase training, as the fraction of training in phase 1. In phase 1 every
  head is distilled from the ensemble's mean tempered prediction
  ``q_bar = (1/M) sum_m softmax(t_m / T)`` and the heads start as copies of one head, so they stay one
  "Hinton head"; in phase 2 head m learns member m. 0 (the default): one-to-one from the start, with
  independently initialised heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distill.objectives.base import Objective, Terms
from distill.objectives.student import KD, kd_loss
from distill.perturb.base import Perturbation
from distill.recipe import FRACTION, StudentCfg, ranged
from distill.students import StudentKind, register_student


@dataclass(frozen=True)
class HydraOptions:
    split: str | None = None
    head_width: float = 1.0
    hinton_phase: float = ranged(FRACTION, 0.0)
    head_lr_scale: float = 1.0


class HydraKD(KD):
    """One-to-one KD, after an optional phase in which every head learns the ensemble mean."""

    def __init__(
        self, teacher: nn.Module, perturb: Perturbation, alpha: float, temperature: float, hinton_phase: float
    ) -> None:
        super().__init__(teacher, perturb, alpha, temperature)
        self.hinton_phase = hinton_phase
        self.progress = 0.0

    def set_progress(self, fraction: float) -> None:
        """Called by the training loop before every step with the fraction of training done."""
        self.progress = fraction

    def loss(
        self, s_clean: torch.Tensor, s_pert: torch.Tensor, t_pert: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Terms]:
        if self.progress < self.hinton_phase:
            # T log q_bar as logits: kd_loss's softmax(. / T) gives back q_bar, the same target for every head
            t = self.temperature
            q_bar = (t_pert.float() / t).softmax(-1).mean(0, keepdim=True)  # (1, B, K)
            t_pert = (t * q_bar.clamp_min(1e-12).log()).expand_as(t_pert)
        return kd_loss(s_clean, s_pert, t_pert, y, self.alpha, self.temperature)


def _spec(cfg: StudentCfg, options: HydraOptions, teacher_size: int) -> dict:
    spec = {
        "kind": "hydra",
        "arch": cfg.arch,
        "heads": teacher_size,
        "split": options.split,
        "head_width": options.head_width,
        "identical_heads": options.hinton_phase > 0,
    }
    if options.head_lr_scale != 1.0:  # only where set, so the specs of earlier runs stay as they were
        spec["head_lr_scale"] = options.head_lr_scale
    return spec


def _objective(teacher: nn.Module, perturb: Perturbation, cfg: StudentCfg, options: Any) -> Objective:
    return HydraKD(teacher, perturb, cfg.alpha, cfg.temperature, options.hinton_phase)


register_student(StudentKind("hydra", _spec, _objective, HydraOptions))
