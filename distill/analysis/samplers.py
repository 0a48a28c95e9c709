"""Subspace samplers around one member's trajectory (Fort, Hu & Lakshminarayanan 2019, section 4.2), on
flattened weight vectors, and the BatchNorm recomputation every sampled vector needs.

Each sampler is built from the last ``k`` checkpoints ``W (k, P)`` of one member's trajectory, or from its final
weights ``w (P,)``, and draws weight vectors with an explicit ``torch.Generator``:

* :class:`WeightAverage`: the mean of the checkpoints (stochastic weight averaging, Izmailov et al. 2018); one
  deterministic function.
* :class:`DiagonalGaussian`: ``N(mu, diag(sigma^2))`` with the per-coordinate mean and (unbiased) standard
  deviation of the checkpoints (as SWAG-diagonal, Maddox et al. 2019).
* :class:`LowRankGaussian`: the Gaussian restricted to the top ``rank`` principal directions of the centred
  checkpoints: ``mu + sum_i z_i s_i v_i``, ``v_i`` the unit principal directions, ``s_i`` the standard deviation
  of the checkpoints along ``v_i`` (singular value / sqrt(k - 1)), ``z_i ~ N(0, 1)``. Rank 5 by default (at most
  ``k - 1``: ``k`` centred points span ``k - 1`` directions).
* :class:`RandomSubspace`: ``w + t d`` with ``d`` a uniformly random unit direction and ``t ~ U(0, t_max]``;
  an ``accept`` callback (validation accuracy above a threshold, in the landscape analysis) rejects a draw, in
  which case ``t`` is halved, up to ``max_tries`` times, keeping ``d``.
* :class:`DropoutSubspace`: ``w * m / (1 - p)`` with ``m ~ Bernoulli(1 - p)`` per coordinate (DropConnect on the
  flattened weights, rescaled so ``E[sample] = w``). Fort et al. draw ``p_keep`` at random per sample; here
  ``p`` is fixed, so the sampler's statistics are exact (``Var = w^2 p / (1 - p)``).

The paper's networks had no BatchNorm; ours do, and running statistics that belong to other weights make a
sampled network useless. :func:`recompute_bn` resets them and re-estimates them on training images with a
cumulative average (``momentum=None``), as ``torch.optim.swa_utils.update_bn`` does after weight averaging.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from distill.analysis.trajectory import flat_params

__all__ = [
    "DiagonalGaussian",
    "DropoutSubspace",
    "LowRankGaussian",
    "RandomSubspace",
    "WeightAverage",
    "flat_params",
    "recompute_bn",
    "set_flat_params",
]


@torch.no_grad()
def set_flat_params(module: nn.Module, vec: torch.Tensor) -> None:
    """Copy the flat vector ``vec (P,)`` (the layout of :func:`flat_params`) into ``module``'s parameters."""
    n = sum(p.numel() for p in module.parameters())
    if vec.dim() != 1 or vec.numel() != n:
        raise ValueError(f"weight vector of {tuple(vec.shape)} for a module with {n} parameters")
    # copy_ into each parameter, not vector_to_parameters' rebinding: a channels_last weight keeps its layout
    start = 0
    for p in module.parameters():
        p.copy_(vec[start : start + p.numel()].view_as(p))
        start += p.numel()


@torch.no_grad()
def recompute_bn(
    module: nn.Module,
    x: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> bool:
    """Re-estimate every BatchNorm's running mean and variance of ``module`` on uint8 images ``x (N, C, H, W)``.

    Running statistics are reset, ``momentum`` is set to None (a cumulative average over the batches), the
    BatchNorm layers alone are put in train mode (dropout or other train-time behaviour elsewhere stays off)
    and the images are forwarded in order, without gradients and without augmentation. Momentum and every
    module's train/eval flag are restored afterwards; parameters are not touched. Returns whether ``module``
    has any BatchNorm (when it has none, nothing is forwarded).
    """
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return False
    device = device or next(module.parameters()).device
    flags = [(m, m.training) for m in module.modules()]
    momenta = [bn.momentum for bn in bns]
    try:
        module.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for i in range(0, len(x), batch_size):
            module(x[i : i + batch_size].to(device).float().div_(255))
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for m, flag in flags:
            m.training = flag
    return True


def _check_trajectory(w: torch.Tensor, least: int = 1) -> torch.Tensor:
    if w.dim() != 2 or w.shape[0] < least:
        raise ValueError(f"expected checkpoints (k >= {least}, P), got shape {tuple(w.shape)}")
    return w.detach().to(torch.float64)


class WeightAverage:
    """The mean of the checkpoints ``W (k, P)``; every sample is that mean."""

    name = "average"
    deterministic = True

    def __init__(self, w: torch.Tensor) -> None:
        self.mean = _check_trajectory(w).mean(dim=0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean.float().expand(n, -1).clone()


class DiagonalGaussian:
    """``N(mu, diag(sigma^2))`` fitted to the checkpoints ``W (k >= 2, P)``: ``mu`` the per-coordinate mean, ``sigma``
    the per-coordinate unbiased standard deviation, times ``scale``."""

    name = "diagonal"
    deterministic = False

    def __init__(self, w: torch.Tensor, scale: float = 1.0) -> None:
        w = _check_trajectory(w, least=2)
        self.mean = w.mean(dim=0)
        self.std = w.std(dim=0, correction=1) * scale

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        return (self.mean + z * self.std).float()


class LowRankGaussian:
    """The checkpoints' Gaussian on their top ``rank`` principal directions (PCA of the centred ``W (k >= 2, P)``).

    ``directions (r, P)`` are unit vectors, ``std (r,)`` the standard deviation of the checkpoints along each
    (singular value / sqrt(k - 1)); a sample is ``mean + sum_i z_i std_i directions_i``, ``z ~ N(0, I_r)``.
    ``r = min(rank, k - 1)``, less any direction with zero spread.
    """

    name = "low_rank"
    deterministic = False

    def __init__(self, w: torch.Tensor, rank: int = 5, scale: float = 1.0) -> None:
        w = _check_trajectory(w, least=2)
        k = w.shape[0]
        self.mean = w.mean(dim=0)
        _, s, vh = torch.linalg.svd(w - self.mean, full_matrices=False)
        r = min(rank, k - 1, len(s))
        keep = s[:r] > s.max().clamp_min(1e-30) * 1e-10
        self.directions = vh[:r][keep]
        self.std = s[:r][keep] / math.sqrt(k - 1) * scale

    @property
    def rank(self) -> int:
        return len(self.std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.rank, generator=generator, dtype=torch.float64)
        return (self.mean + (z * self.std) @ self.directions).float()


class RandomSubspace:
    """``w + t d`` around the final weights ``w (P,)``: ``d`` uniform on the unit sphere, ``t ~ U(0, t_max]``.

    With ``accept(vec) -> bool``, a rejected draw is retried at ``t / 2`` (same direction), at most ``max_tries``
    times in all; a sample that is never accepted is left out. :meth:`draw` returns the kept vectors and a record
    ``{"t", "tries", "accepted"}`` per attempted sample.
    """

    name = "random"
    deterministic = False

    def __init__(self, w: torch.Tensor, t_max: float, max_tries: int = 6) -> None:
        if w.dim() != 1:
            raise ValueError(f"expected final weights (P,), got shape {tuple(w.shape)}")
        if t_max <= 0 or max_tries < 1:
            raise ValueError(f"need t_max > 0 and max_tries >= 1, got {t_max}, {max_tries}")
        self.w = w.detach().to(torch.float64)
        self.t_max, self.max_tries = float(t_max), int(max_tries)

    def direction(self, generator: torch.Generator | None = None) -> torch.Tensor:
        d = torch.randn(self.w.numel(), generator=generator, dtype=torch.float64)
        return d / d.norm()

    def draw(
        self,
        n: int,
        generator: torch.Generator | None = None,
        accept: Callable[[torch.Tensor], bool] | None = None,
    ) -> tuple[list[torch.Tensor], list[dict]]:
        kept, records = [], []
        for _ in range(n):
            d = self.direction(generator)
            t = (1.0 - float(torch.rand((), generator=generator, dtype=torch.float64))) * self.t_max  # (0, t_max]
            for tries in range(1, self.max_tries + 1):
                vec = (self.w + t * d).float()
                if accept is None or accept(vec):
                    kept.append(vec)
                    records.append({"t": t, "tries": tries, "accepted": True})
                    break
                t /= 2
            else:
                records.append({"t": t * 2, "tries": self.max_tries, "accepted": False})
        return kept, records

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        kept, _ = self.draw(n, generator)
        return torch.stack(kept)


class DropoutSubspace:
    """``w * m / (1 - p)``, ``m ~ Bernoulli(1 - p)`` per coordinate of the final weights ``w (P,)``."""

    name = "dropout"
    deterministic = False

    def __init__(self, w: torch.Tensor, p: float = 0.1) -> None:
        if w.dim() != 1:
            raise ValueError(f"expected final weights (P,), got shape {tuple(w.shape)}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.w, self.p = w.detach().float(), float(p)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        keep = torch.rand(n, self.w.numel(), generator=generator) >= self.p
        return self.w * keep / (1 - self.p)
