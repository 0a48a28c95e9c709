"""Output Diversified Sampling (Tashiro et al. 2020) as used by Nam et al. (2021), and its confidence-scaled
variant ConfODS.

One teacher member k is drawn uniformly per batch; with ``p = softmax(f_k(x) / T)`` and a fresh
``w ~ U(-1, 1)^(B x K)``:

    g = d(sum_bc w_bc p_bc) / dx,    d = sqrt(D) g / ||g||_2  (per sample, D = C H W: unit RMS per pixel)
    ODS:      x_tilde = clip(x + eta d, 0, 1)
    ConfODS:  x_tilde = clip(x + eta max_c(p_c) d, 0, 1)     (per sample: the member's confidence)

One step. Defaults follow the official code: ``eta = 1/255`` (``--kd-method-step-size 1.0``), and ``T`` is the
temperature of the softmax inside the random projection (the official code reuses the KD temperature there,
1.0 in its README commands; here it is its own parameter, default 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distill.perturb.base import (
    PerturbResult,
    finish,
    forward_no_grad,
    frozen_teacher,
    random_output_gradient,
    register_perturbation,
    teacher_logits,
    unit_rms,
)
from distill.recipe import NON_NEGATIVE, POSITIVE, ranged


@dataclass(frozen=True)
class ODSParams:
    eta: float = ranged(NON_NEGATIVE, 1 / 255)  # step size: the per-pixel RMS of the step before clipping, in [0, 1]
    temperature: float = ranged(POSITIVE, 1.0)  # softmax temperature inside the random output projection


def ods_step(
    teacher: nn.Module, x: Tensor, params: ODSParams, generator: torch.Generator | None, confidence: bool
) -> PerturbResult:
    """One (Conf)ODS step: one forward of all members on x with grad w.r.t. x, one on x_tilde without."""
    with frozen_teacher(teacher), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        logits = teacher_logits(teacher, xg)  # (M, B, K); the clean forward, reused for the stats
        g, p = random_output_gradient(logits, xg, generator, params.temperature)
    scale = torch.full((x.shape[0],), params.eta, device=x.device)
    if confidence:
        scale = scale * p.max(dim=-1).values
    x_tilde = (x + scale.view(-1, *([1] * (x.dim() - 1))).to(x.dtype) * unit_rms(g)).clamp(0, 1)
    return finish(x, x_tilde, logits, forward_no_grad(teacher, x_tilde))


@register_perturbation("ods", params=ODSParams)
def ods(
    teacher: nn.Module, x: Tensor, y: Tensor, params: ODSParams, generator: torch.Generator | None
) -> PerturbResult:
    """ODS: ``x_tilde = clip(x + eta * sqrt(D) g / ||g||, 0, 1)``."""
    return ods_step(teacher, x, params, generator, confidence=False)


@register_perturbation("confods", params=ODSParams)
def confods(
    teacher: nn.Module, x: Tensor, y: Tensor, params: ODSParams, generator: torch.Generator | None
) -> PerturbResult:
    """ConfODS: the ODS step scaled per sample by ``max_c p_c`` of the drawn member."""
    return ods_step(teacher, x, params, generator, confidence=True)
