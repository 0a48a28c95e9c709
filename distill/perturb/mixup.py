"""Mixed inputs as a perturbation: function matching (Beyer et al. 2022, "Knowledge distillation: A good
teacher is patient and consistent").

    x_tilde_b = lam_b x_b + (1 - lam_b) x_pi(b),    lam_b ~ Beta(a, a),  pi a random permutation of the batch

The teacher labels every mixed image and the student learns to match it there, so the student sees the
teacher's function between training images, not only at them. No gradient step: the cost is one teacher
forward on x_tilde (plus the clean forward the disagreement statistics need).

Departures from Beyer et al., and why: they mix whole batches with one lam and use very long schedules
(thousands of epochs); here lam is drawn per sample (more distinct mixing ratios per batch, the same
expectation), and ``a`` defaults to 1 (lam uniform in [0, 1], the widest spread of mixing ratios).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distill.perturb.base import (
    PerturbResult,
    finish,
    frozen_teacher,
    register_perturbation,
    teacher_logits,
)
from distill.recipe import POSITIVE, ranged


@dataclass(frozen=True)
class MixupParams:
    alpha: float = ranged(POSITIVE, 1.0)  # Beta(alpha, alpha) of the mixing weight; 1: uniform


def mix(x: Tensor, alpha: float, generator: torch.Generator | None) -> Tensor:
    """Each image mixed with another of the batch: ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
    b = x.shape[0]
    gen_device = generator.device if generator is not None else x.device
    seed = int(torch.randint(2**62, (1,), generator=generator, device=gen_device).item())
    # torch's Beta sampler takes no generator: draw it under a CPU RNG forked and seeded from ours, so a
    # seeded run mixes the same way every time and the global RNG is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = torch.distributions.Beta(alpha, alpha).sample((b,))  # (B,)
        perm = torch.randperm(b)
    lam = lam.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return lam * x + (1 - lam) * x[perm.to(x.device)]


@register_perturbation("mixup", params=MixupParams)
def mixup(
    teacher: nn.Module, x: Tensor, y: Tensor, params: MixupParams, generator: torch.Generator | None
) -> PerturbResult:
    """Function matching: ``x_tilde = lam x + (1 - lam) x[perm]``, ``lam ~ Beta(alpha, alpha)`` per sample."""
    x_tilde = mix(x, params.alpha, generator)
    with frozen_teacher(teacher), torch.no_grad():
        logits = teacher_logits(teacher, torch.cat([x, x_tilde]))  # (M, 2B, K): one forward for both
    b = x.shape[0]
    return finish(x, x_tilde, logits[:, :b], logits[:, b:])
