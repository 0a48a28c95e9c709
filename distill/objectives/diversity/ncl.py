"""Negative correlation learning (Liu and Yao 1999; Shui et al. 2018):
D = mean_b mean_{i != j} <p_i - p_bar, p_j - p_bar>, with p_bar (the members' mean probabilities) detached."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.objectives.diversity.base import DiversityTerm, DiversityView, Terms, register_term


@dataclass(frozen=True)
class NCLParams:
    lam: float = 0.1


class NCLTerm(DiversityTerm):
    def __init__(self, p: NCLParams) -> None:
        self.p = p

    def __call__(self, view: DiversityView) -> tuple[torch.Tensor, Terms]:
        p = view.probs  # (M, B, K)
        dev = p - p.mean(0, keepdim=True).detach()
        m = p.shape[0]
        gram = torch.einsum("ibk,jbk->bij", dev, dev)  # (B, M, M)
        off = gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)
        ncl = (off / max(m * (m - 1), 1)).mean()
        return self.p.lam * ncl, {"ncl": ncl.detach()}


register_term("ncl", NCLParams)(NCLTerm)
