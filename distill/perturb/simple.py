"""Baselines: no perturbation, and isotropic Gaussian noise.

``none``: ``x_tilde = x``. ``gaussian``: ``x_tilde = clip(x + eta * N(0, I), 0, 1)``.

The default ``eta = 1/255`` is the step of the official code of Nam et al. (2021)
(``--kd-method-step-size 1.0``, divided by 255, used for both Gaussian and ODS): before clipping the noise then
has the same per-pixel RMS as an ODS step of the same ``eta``, so the two compare at equal size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distill.perturb.base import PerturbResult, finish, forward_no_grad, randn, register_perturbation
from distill.recipe import NON_NEGATIVE, ranged


@dataclass(frozen=True)
class NoneParams:
    pass


@register_perturbation("none", params=NoneParams)
def none(
    teacher: nn.Module, x: Tensor, y: Tensor, params: NoneParams, generator: torch.Generator | None
) -> PerturbResult:
    """``x_tilde = x``: one teacher forward, returned as both the clean and the perturbed logits."""
    logits = forward_no_grad(teacher, x)
    return finish(x, x, logits, logits)


@dataclass(frozen=True)
class GaussianParams:
    eta: float = ranged(NON_NEGATIVE, 1 / 255)  # noise std, in [0, 1] pixel units


@register_perturbation("gaussian", params=GaussianParams)
def gaussian(
    teacher: nn.Module, x: Tensor, y: Tensor, params: GaussianParams, generator: torch.Generator | None
) -> PerturbResult:
    """``x_tilde = clip(x + eta * n, 0, 1)``, ``n ~ N(0, I)`` drawn from ``generator``."""
    x_tilde = (x + params.eta * randn(tuple(x.shape), generator, x).to(x.dtype)).clamp(0, 1)
    return finish(x, x_tilde, forward_no_grad(teacher, x), forward_no_grad(teacher, x_tilde))
