"""SDDE's saliency diversity (Dereka et al. 2023): D = mean over samples and member pairs i < j of the cosine
between standardised Grad-CAM maps of the true (or pseudo-) label, computed with ``create_graph`` so the
maps themselves are pushed apart (:func:`distill.saliency.cam_similarity`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.objectives.diversity.base import DiversityTerm, DiversityView, Terms, register_term
from distill.saliency import gradcam, pairwise_cosine, standardised_maps


@dataclass(frozen=True)
class CamParams:
    lam: float = 0.005  # the official CIFAR value on the mean member CE
    crop: int = 1  # border pixels removed from each CAM


class CamSimilarity(DiversityTerm):
    double_backprop = True
    needs_features = True

    def __init__(self, p: CamParams) -> None:
        self.p = p

    def __call__(self, view: DiversityView) -> tuple[torch.Tensor, Terms]:
        # cam_similarity, with each member's map made where the member is (members spread over processes)
        cams = gradcam(view.local_logits, view.feats, view.labels, create_graph=True)
        div = pairwise_cosine(view.members(standardised_maps(cams, self.p.crop, size=view.map_size(cams))))
        return self.p.lam * div, {"div": div.detach()}


register_term("cam", CamParams)(CamSimilarity)
