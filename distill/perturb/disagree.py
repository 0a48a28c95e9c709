"""Disagreement search: a few steps of normalised-gradient ascent on an explicit measure of how much the teacher's
members disagree, inside an eps-ball around x.

With ``J(x)`` the chosen ``objective`` (per sample, members' ``p_m = softmax(f_m(x) / T)``):

* ``mi``:  ``H(p_bar) - (1/M) sum_m H(p_m)``, the mutual information (= the generalised Jensen-Shannon divergence
  ``(1/M) sum_m KL(p_m || p_bar)``, so the "KL to the mean" would be the same objective);
* ``kl``:  ``1/(M(M-1)) sum_{i != j} KL(p_i || p_j)``, the mean pairwise KL (unbounded: favours confident
  disagreement, which MI caps at log M);
* ``std``: the population std over members of ``p_mc``, mean over classes c.

Steps t = 0 .. K-1 (``steps``), from ``x_0 = x`` or, with ``random_start``, a uniform draw in the ball:

    g_t = dJ(x_t)/dx                        (direction "objective")
    g_t = d(sum w * p_k(x_t))/dx            (direction "random": ODS's random output projection, a fresh member
                                             k and w ~ U(-1, 1)^(B x K) each step)
    l2:   x_{t+1} = P(x_t + step_size * sqrt(D) g_t / ||g_t||_2)       (D = C H W; unit RMS per pixel, as ODS)
    linf: x_{t+1} = P(x_t + step_size * sign(g_t))

``P`` projects onto the eps-ball around x, then clips to [0, 1] (clipping moves each pixel towards x, so the
result stays in the ball). The l2 ball is measured in the same per-pixel RMS units as ODS:
``||x_tilde - x||_2 <= eps * sqrt(D)``, i.e. ``RMS(x_tilde - x) <= eps``; the linf ball is ``|x_tilde - x| <= eps``.

``select: best`` (default) returns, per sample, the iterate x_1 .. x_K with the highest J (the start point is
not a candidate: the method always returns a step of the search); ``last`` returns x_K. Either costs nothing
extra: J(x_t) comes from the forward of step t, and J(x_K) from the final (perturbed) forward. Forwards of all
members: K with grad w.r.t. the input, 1 without, plus 1 clean one when ``random_start``.

``start: mixup`` centres the search on a mixed image ``lam x + (1 - lam) x[perm]`` (perturb/mixup.py) instead of
on x: mixing lands between training images, where members disagree, and the search climbs from there
(plus 1 clean forward, for the clean statistics).

With ``direction: random``, ``steps: 1``, ``norm: l2``, ``random_start: false`` and ``eps >= step_size`` this is
ODS with ``eta = step_size`` (the same draws from the same generator give the same x_tilde).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from distill.perturb.base import (
    DISAGREEMENT,
    PerturbResult,
    finish,
    forward_no_grad,
    frozen_teacher,
    rand,
    randn,
    random_output_gradient,
    register_perturbation,
    teacher_logits,
    unit_rms,
)
from distill.perturb.mixup import mix
from distill.recipe import NON_NEGATIVE, POSITIVE, ints, ranged


@dataclass(frozen=True)
class DisagreeParams:
    objective: Literal["mi", "kl", "std"] = "mi"
    steps: int = ranged(ints(1), 5)
    norm: Literal["l2", "linf"] = "l2"
    # ball radius: per-pixel RMS for l2, max |delta| for linf, in [0, 1] pixel units
    eps: float = ranged(NON_NEGATIVE, 2 / 255)
    step_size: float = ranged(NON_NEGATIVE, 1 / 255)  # per step: per-pixel RMS for l2, per-pixel size for linf
    random_start: bool = False
    direction: Literal["objective", "random"] = "objective"
    select: Literal["best", "last"] = "best"
    temperature: float = ranged(POSITIVE, 1.0)  # softmax temperature of the objective and of the random direction
    # "mixup": search around a mixed image (see perturb/mixup.py) instead of the training image itself, so
    # the search starts between training images, where members disagree more.
    start: Literal["clean", "mixup"] = "clean"
    mix_alpha: float = ranged(POSITIVE, 1.0)  # Beta(mix_alpha, mix_alpha) mixing weight when start is "mixup"


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(x_new: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Onto the eps-ball around x (l2 in per-pixel RMS units: radius eps * sqrt(D)), then onto [0, 1]."""
    delta = x_new - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        radius = eps * math.sqrt(delta[0].numel())
        n = delta.flatten(1).float().norm(dim=1).clamp_min(1e-12)
        delta = delta * _per_sample((radius / n).clamp(max=1.0), delta).to(delta.dtype)
    return (x + delta).clamp(0, 1)


def random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform draw from the ball (linf: a cube; l2: direction ~ N(0, I), radius ~ r U^(1/D)), clipped."""
    if norm == "linf":
        delta = (rand(tuple(x.shape), generator, x) * 2 - 1) * eps
    else:
        d = x[0].numel()
        direction = randn(tuple(x.shape), generator, x)
        direction = direction / _per_sample(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        radius = eps * math.sqrt(d) * rand((x.shape[0],), generator, x).pow(1.0 / d)
        delta = direction * _per_sample(radius, x)
    return (x + delta.to(x.dtype)).clamp(0, 1)


@register_perturbation("disagree", params=DisagreeParams)
def disagree(
    teacher: nn.Module, x: Tensor, y: Tensor, params: DisagreeParams, generator: torch.Generator | None
) -> PerturbResult:
    objective = DISAGREEMENT[params.objective]
    t = params.temperature
    x_orig, logits_clean = x, None
    if params.start == "mixup":  # the ball is centred on the mixed image; the clean stats stay on x
        logits_clean = forward_no_grad(teacher, x)
        x = mix(x, params.mix_alpha, generator)
    x_cur = random_start(x, params.eps, params.norm, generator) if params.random_start else x.detach()
    if params.random_start and logits_clean is None:
        logits_clean = forward_no_grad(teacher, x)
    best_x = best_j = best_logits = None

    def keep(x_t: Tensor, j: Tensor, logits: Tensor) -> None:
        nonlocal best_x, best_j, best_logits
        if best_x is None or params.select == "last":
            best_x, best_j, best_logits = x_t, j, logits
            return
        better = j > best_j
        best_x = torch.where(_per_sample(better, x_t), x_t, best_x)
        best_logits = torch.where(better.view(1, -1, 1), logits, best_logits)
        best_j = torch.where(better, j, best_j)

    for step in range(params.steps):
        with frozen_teacher(teacher), torch.enable_grad():
            xg = x_cur.detach().clone().requires_grad_(True)
            logits = teacher_logits(teacher, xg)  # (M, B, K): one forward of all members
            j = objective(logits, t)  # (B,)
            if params.direction == "objective":
                (g,) = torch.autograd.grad(j.sum(), xg)
            else:
                g, _ = random_output_gradient(logits, xg, generator, t)
        logits, j = logits.detach(), j.detach()
        if step == 0 and logits_clean is None:
            logits_clean = logits
        if step > 0:
            keep(x_cur, j, logits)
        move = unit_rms(g) if params.norm == "l2" else g.sign()
        x_cur = project(x_cur + params.step_size * move, x, params.eps, params.norm).detach()

    logits = forward_no_grad(teacher, x_cur)
    keep(x_cur, objective(logits, t), logits)
    extra = {
        "objective_clean": objective(logits_clean, t).mean(),
        "objective_perturbed": best_j.mean(),
    }
    return finish(x_orig, best_x, logits_clean, best_logits, extra)
