"""Input-gradient diversity (Ross et al. 2020, as in the SDDE paper's baselines):
D = mean_b mean_{i<j} cos(g_i, g_j), g_m = d(sum_k z_mk)/dx, through double backprop."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill.objectives.diversity.base import DiversityTerm, DiversityView, Terms, register_term
from distill.saliency import input_gradients, pairwise_cosine


@dataclass(frozen=True)
class IGDParams:
    lam: float = 0.1


class InputGradientCosine(DiversityTerm):
    needs_input_grad = True
    double_backprop = True

    def __init__(self, p: IGDParams) -> None:
        self.p = p

    def __call__(self, view: DiversityView) -> tuple[torch.Tensor, Terms]:
        assert view.x is not None  # the objective sets x for terms that declare needs_input_grad
        g = input_gradients(view.local_logits, view.x).flatten(2)  # (M, B, D); this process's members when spread
        sim = pairwise_cosine(view.members(F.normalize(g.float(), dim=2)))
        return self.p.lam * sim, {"grad_cos": sim.detach()}


register_term("igd", IGDParams)(InputGradientCosine)
