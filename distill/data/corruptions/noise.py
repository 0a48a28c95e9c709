"""Noise: Gaussian, shot (Poisson) and impulse (salt and pepper) noise, per pixel and channel.

Conventions shared by every corruption: :mod:`distill.data.corruptions`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.data.corruptions._ops import Draws
from distill.data.corruptions.registry import register_corruption


@register_corruption("gaussian_noise")
def gaussian_noise(x: Tensor, severity: int, g: Draws) -> Tensor:
    """``x + N(0, c^2)`` per pixel and channel; c = 0.04, 0.06, 0.08, 0.09, 0.10."""
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return x + c * g.randn(x.shape, x)


@register_corruption("shot_noise")
def shot_noise(x: Tensor, severity: int, g: Draws) -> Tensor:
    """``Poisson(c x) / c`` per pixel and channel; c = 500, 250, 100, 75, 50 (photons at full scale)."""
    c = [500, 250, 100, 75, 50][severity - 1]
    return g.poisson(x * c) / c


@register_corruption("impulse_noise")
def impulse_noise(x: Tensor, severity: int, g: Draws) -> Tensor:
    """Salt and pepper (skimage's ``random_noise(mode='s&p')``): each pixel value (each channel on its own)
    is replaced with probability c by 0 or 1 with equal chance; c = 0.01, 0.02, 0.03, 0.05, 0.07."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    flip = g.rand(x.shape, x) < c
    salt = (g.rand(x.shape, x) < 0.5).to(x.dtype)
    return torch.where(flip, salt, x)
