"""Weather: snow (motion-blurred flakes over a brightened image), frost (a procedural frost texture) and fog
(a plasma fractal).

Conventions shared by every corruption: :mod:`distill.data.corruptions`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.data.corruptions._ops import (
    _GREY,
    _clipped_zoom,
    _gaussian,
    _grey,
    _motion_blur,
    _rand,
    _randn,
    _smear,
    _uniform,
)
from distill.data.corruptions.registry import register_corruption


@register_corruption("snow")
def snow(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Snow flakes: a layer ``N(loc, scale^2)`` per pixel, centre-zoomed by ``zoom``, zeroed below ``threshold``,
    motion-blurred (``radius``, ``sigma``, angle uniform in [-135, -45]); the image is brightened to
    ``mix x + (1 - mix) max(x, 1.5 grey(x) + 0.5)`` and the layer and its 180-degree rotation are added.
    (loc, scale, zoom, threshold, radius, sigma, mix) =
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8).

    Departures: the motion blur is ours (see :func:`_motion_blur`) instead of ImageMagick's through Wand, so the
    layer is not rounded to 8 bits around it as the original's PNG round trip does; the flakes are drawn one per
    pixel at any size (their streaks scale with the image). Grey images brighten with ``grey(x) = x``.
    """
    loc, scale, zoom, threshold, radius, sigma, mix = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ][severity - 1]
    b, _, h, w = x.shape
    layer = _clipped_zoom(loc + scale * _randn(g, (b, 1, h, w), x), zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = _motion_blur(layer, radius, sigma, _uniform(g, (b,), x, -135.0, -45.0))
    x = mix * x + (1 - mix) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def _frost_texture(g: torch.Generator, b: int, like: Tensor) -> Tensor:
    """A seeded, procedural stand-in for a crop of the frost photos: ``(B, 1, H, W)`` in [0, 1], mean about 0.5.

    In 32x32 pixel units scaled by ``s``: a fine crystalline texture (ridged noise, ``1 - |n|`` of smoothed white
    noise at sigma 1.5 and 0.75, which draws a network of thin bright veins, plus short needles: sparse seeds
    smeared into 5-pixel segments along three directions 60 degrees apart, at a random rotation per image, as ice
    grows hexagonally), modulated by a coarse density (smoothed noise at sigma 4: frosted and clearer patches).
    The result is standardised per image and mapped to ``0.5 + 0.2 z``, clipped to [0, 1]: a mean and spread
    we chose for bright frost crystals, not ones measured on the photos.
    """
    h, w = like.shape[-2:]
    s = min(h, w) / 32.0

    def smooth_noise(sigma: float) -> Tensor:
        n = _gaussian(_randn(g, (b, 1, h, w), like), sigma * s, mode="reflect")
        return n / n.flatten(1).std(1).clamp_min(1e-6).view(b, 1, 1, 1)

    veins = (
        0.6 * (1 - smooth_noise(1.5).abs()).clamp_min(0) ** 2 + 0.4 * (1 - smooth_noise(0.75).abs()).clamp_min(0) ** 2
    )
    seeds = (_rand(g, (b, 1, h, w), like) < 0.02).float() * _uniform(g, (b, 1, h, w), like, 0.5, 1.0)
    base = _uniform(g, (b,), like, 0.0, 60.0)
    length = 5 * s
    taps = max(2, math.ceil(2 * length))
    steps = torch.linspace(-length / 2, length / 2, taps, dtype=torch.float64)
    weights = torch.full((taps,), 2.0 / taps, dtype=torch.float64)
    needles = sum(_smear(seeds, base + turn, steps, weights, padding="zeros") for turn in (0.0, 60.0, 120.0))
    density = torch.sigmoid(1.5 * smooth_noise(4.0))
    flat = ((veins + needles) * density).flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)
    return (0.5 + 0.2 * z).clamp(0, 1).view(b, 1, h, w)


_FROST_TINT = (0.85, 0.93, 1.0)  # frost photos are a cold, bluish white


@register_corruption("frost")
def frost(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """``a x + b frost`` with a frost texture in [0, 1]; (a, b) = (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4),
    (0.75, 0.45).

    Departure: the original adds a random 32x32 crop of one of six frost photographs (resized by 0.2), files we
    do not ship; we add a procedural, seeded frost-like texture instead (:func:`_frost_texture`: bright veins and
    hexagonal needles, tinted bluish white), with its features scaled with the image. Grey images get the luma
    of the tinted texture.
    """
    a, bw = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    tex = _frost_texture(g, x.shape[0], x)
    if x.shape[1] == 3:
        tint = torch.tensor(_FROST_TINT, device=x.device).view(1, 3, 1, 1)
    else:
        tint = torch.tensor(sum(w * t for w, t in zip(_GREY, _FROST_TINT)), device=x.device)
    return a * x + bw * tex * tint


def _plasma_fractal(g: torch.Generator, b: int, mapsize: int, decay: float) -> Tensor:
    """The original's diamond-square height map ``(B, mapsize, mapsize)`` in [0, 1] (toroidal, mapsize a power of
    two): new points are the mean of their 4 neighbours plus ``wibble * U(-wibble, wibble)``, ``wibble`` starting
    at 100 and divided by ``decay`` at each halving of the step. Computed on the generator's device."""
    m = torch.zeros(b, mapsize, mapsize, dtype=torch.float64, device=g.device)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        noise = torch.rand(total.shape, generator=g, device=g.device, dtype=torch.float64) * 2 - 1
        return total / 4 + wibble * wibble * noise

    while step >= 2:
        half = step // 2
        corners = m[:, ::step, ::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        m[:, half::step, half::step] = wibbled_mean(squares)
        centres, corners = m[:, half::step, half::step], m[:, ::step, ::step]
        m[:, ::step, half::step] = wibbled_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, ::step] = wibbled_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    m -= m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True).clamp_min(1e-12)


@register_corruption("fog")
def fog(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """``(x + t * plasma) * max(x) / (max(x) + t)`` with a plasma fractal (diamond-square) of wibble decay d, the
    same on every channel, ``max`` over the whole image; (t, d) = (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2),
    (1.5, 1.75).

    The original draws a 32x32 map for 32x32 images; we draw the smallest power of two covering the image and
    crop it (the coarse structure, drawn first, then spans the image at every size).
    """
    t, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    b, _, h, w = x.shape
    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    plasma = _plasma_fractal(g, b, mapsize, decay)[:, :h, :w].to(x).unsqueeze(1)
    peak = x.amax((1, 2, 3), keepdim=True)
    return (x + t * plasma) * peak / (peak + t)
