"""The EnD² student network (Malinin, Mlodozeniec & Gales 2019): one network whose logits ``z`` parametrise a
Dirichlet over the simplex, ``alpha = exp(z)``.

It is a one-member :class:`~distill.models.ensemble.Ensemble` (same weights layout, Grad-CAM and execution
modes), so ``forward`` returns ``(z (1, B, K), cam_features)``. Everything that reads a model's "member logits"
through their mean softmax gets the Dirichlet's predictive distribution for free, since
``softmax(z) = exp(z) / sum_k exp(z_k) = alpha / alpha_0``. What a softmax cannot show, the concentration
``alpha_0`` and with it knowledge uncertainty, is read from the same ``z`` by the ``dirichlet`` readout
(:mod:`distill.students.dirichlet`).
"""

from __future__ import annotations

import torch
from torch import nn

from distill.data.base import DatasetMeta
from distill.models import register_kind
from distill.models.ensemble import Ensemble
from distill.models.registry import build_arch


class DirichletNet(Ensemble):
    """One network; ``forward(x)`` -> ``(z (1, B, K), cam)``; ``concentrations(x)`` -> ``alpha (B, K)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__([net])

    def concentrations(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self(x)
        return logits[0].float().exp()


@register_kind("dirichlet")
def _dirichlet(spec: dict, meta: DatasetMeta) -> nn.Module:
    """``{"kind": "dirichlet", "arch": "small_cnn"}``."""
    return DirichletNet(build_arch(spec["arch"], meta.channels, meta.num_classes, meta.size, meta.mean, meta.std))
