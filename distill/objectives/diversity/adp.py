"""Adaptive diversity promoting (Pang et al. 2019), its two weighted terms:
``CE - alpha H(p_bar) - beta log det(G + eps I)``, where G (M x M) is the Gram matrix of the members'
L2-normalised non-true-class probability vectors; both averaged over samples. The paper weights the two
terms separately, so they are two terms here: ``adp_entropy`` (D = -H, lam = alpha) and ``adp_log_det``
(D = -log det, lam = beta)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill.objectives.diversity.base import DiversityTerm, DiversityView, Terms, register_term


@dataclass(frozen=True)
class EntropyParams:
    lam: float = 2.0  # the paper's alpha


class EnsembleEntropy(DiversityTerm):
    def __init__(self, p: EntropyParams) -> None:
        self.p = p

    def __call__(self, view: DiversityView) -> tuple[torch.Tensor, Terms]:
        p_bar = view.probs.mean(0)  # (B, K)
        entropy = -(p_bar * p_bar.clamp_min(1e-12).log()).sum(-1).mean()
        return self.p.lam * -entropy, {"entropy": entropy.detach()}


@dataclass(frozen=True)
class LogDetParams:
    lam: float = 0.5  # the paper's beta
    eps: float = 1e-5


class LogDet(DiversityTerm):
    def __init__(self, p: LogDetParams) -> None:
        self.p = p

    def __call__(self, view: DiversityView) -> tuple[torch.Tensor, Terms]:
        p = view.probs  # (M, B, K)
        m, b, k = p.shape
        keep = torch.ones(b, k, dtype=torch.bool, device=p.device)
        keep[torch.arange(b, device=p.device), view.labels] = False
        non_true = F.normalize(p[:, keep].view(m, b, k - 1), dim=-1)  # (M, B, K-1)
        gram = torch.einsum("ibk,jbk->bij", non_true, non_true)
        # float64: with eps = 1e-5 the Gram matrix is near-singular and float32 logdet loses digits
        eye = torch.eye(m, device=p.device, dtype=torch.float64)
        log_det = torch.logdet(gram.double() + self.p.eps * eye).mean().float()
        return self.p.lam * -log_det, {"log_det": log_det.detach()}


register_term("adp_entropy", EntropyParams)(EnsembleEntropy)
register_term("adp_log_det", LogDetParams)(LogDet)
