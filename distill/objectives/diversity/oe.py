"""Outlier exposure as SDDE_OOD uses it (Dereka et al. 2023): D = mean_m mean_b (logsumexp_c z_mbc - mean_c
z_mbc) on the outlier batch, which pushes each member towards uniform predictions there. With this term the
objective's diversity inputs are the outlier batch, so every other term (the CAMs) is computed on it too."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.objectives.diversity.base import DiversityTerm, DiversityView, Terms, register_term


@dataclass(frozen=True)
class OEParams:
    lam: float = 0.5  # the paper's outlier weight


class OutlierExposure(DiversityTerm):
    needs_outliers = True

    def __init__(self, p: OEParams) -> None:
        self.p = p

    def __call__(self, view: DiversityView) -> tuple[torch.Tensor, Terms]:
        z = view.logits.float()
        oe = (torch.logsumexp(z, dim=2) - z.mean(dim=2)).mean()
        return self.p.lam * oe, {"oe": oe.detach()}


register_term("oe", OEParams)(OutlierExposure)
