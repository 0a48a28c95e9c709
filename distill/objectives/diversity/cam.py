"""SDDE's saliency diversity (Dereka et al. 2023): D = mean over samples and member pairs i < j of the cosine
between standardised Grad-CAM maps of the true (or pseudo-) label, computed with ``create_graph`` so the
maps themselves are pushed apart (:func:`distill.saliency.cam_similarity`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.objectives.diversity.base import DiversityTerm, DiversityView, Terms, register_term
from distill.saliency import cam_similarity, gradcam


@dataclass(frozen=True)
class CamParams:
    lam: float = 0.005  # the official CIFAR value on the mean member CE
    crop: int = 1  # border pixels removed from each CAM


class CamSimilarity(DiversityTerm):
    double_backprop = True

    def __init__(self, p: CamParams) -> None:
        self.p = p

    def __call__(self, view: DiversityView) -> tuple[torch.Tensor, Terms]:
        div = cam_similarity(gradcam(view.logits, view.feats, view.labels, create_graph=True), self.p.crop)
        return self.p.lam * div, {"div": div.detach()}


register_term("cam", CamParams)(CamSimilarity)
