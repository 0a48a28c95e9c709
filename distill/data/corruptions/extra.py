"""The four extra corruptions of the CIFAR-10-C release, outside its 15-corruption benchmark: speckle noise,
Gaussian blur, spatter (water or mud splashes) and saturate. Registered, but swept only when named
(:data:`~distill.data.corruptions.registry.EXTRAS`).

Conventions shared by every corruption: :mod:`distill.data.corruptions`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.data.corruptions._ops import _GREY, Draws, _gaussian, _pad, _scale
from distill.data.corruptions.registry import register_corruption


@register_corruption("speckle_noise")
def speckle_noise(x: Tensor, severity: int, g: Draws) -> Tensor:
    """``x + x N(0, c^2)`` per pixel and channel (multiplicative noise); c = 0.06, 0.1, 0.12, 0.16, 0.2."""
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    return x + x * c * g.randn(x.shape, x)


@register_corruption("gaussian_blur")
def gaussian_blur(x: Tensor, severity: int, g: Draws) -> Tensor:
    """skimage's ``gaussian`` (border 'nearest', truncate 4) over H and W; sigma = 0.4, 0.6, 0.7, 0.8, 1 pixels at
    32x32, scaled by ``s``."""
    sigma = [0.4, 0.6, 0.7, 0.8, 1][severity - 1]
    return _gaussian(x, sigma * _scale(x), mode="replicate")


# ------------------------------------------------------------------------------------------- spatter: cv2 steps
# The water branch of spatter runs a chain of OpenCV operations on 8-bit images; these are torch versions of
# them, written from OpenCV's source (3.x / 4.x), with its integer arithmetic and rounding. cv2 is not a
# dependency here, so they are checked against hand cases and properties (tests/test_corruptions.py), not
# against cv2's bytes.


def _shift(x: Tensor, dy: int, dx: int, fill: float) -> Tensor:
    """``out[..., i, j] = x[..., i + dy, j + dx]``, ``fill`` outside."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    out[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        ..., max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def _correlate3(x: Tensor, kernel: list[list[float]], mode: str) -> Tensor:
    """3x3 correlation of ``(B, 1, H, W)`` in float64 (exact on integer images), padding by ``mode``."""
    k = torch.tensor(kernel, dtype=torch.float64, device=x.device).view(1, 1, 3, 3)
    return F.conv2d(_pad(x.double(), 1, mode), k)


_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)  # tan(22.5 deg) in cv2's 15-bit fixed point


def _canny(v: Tensor, low: float, high: float) -> Tensor:
    """cv2.Canny(v, low, high) (aperture 3, L1 gradient) of 8-bit levels ``v`` ``(B, 1, H, W)``: the edge mask.

    Sobel derivatives with replicated borders; magnitude ``|dx| + |dy|``; non-maximum suppression along the
    gradient quantised to 0 / 45 / 90 / 135 degrees with cv2's fixed-point tangent tests and its asymmetric
    comparisons (``>`` on one side, ``>=`` on the other, magnitudes outside the image 0); then hysteresis: the
    8-connected runs of suppressed maxima above ``low`` that hold one above ``high``.
    """
    dx = _correlate3(v, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "replicate").long()
    dy = _correlate3(v, [[-1, -2, -1], [0, 0, 0], [1, 2, 1]], "replicate").long()
    mag = dx.abs() + dy.abs()
    ax, ay = dx.abs(), dy.abs() << 15
    tg22x = ax * _TG22
    tg67x = tg22x + (ax << 16)
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg67x)
    diagonal = ~horizontal & ~vertical
    s = torch.where((dx ^ dy) < 0, -1, 1)

    def at(dr: int, dc: int) -> Tensor:
        return _shift(mag, dr, dc, 0)

    keep = horizontal & (mag > at(0, -1)) & (mag >= at(0, 1))
    keep |= vertical & (mag > at(-1, 0)) & (mag >= at(1, 0))
    same = (mag > at(-1, -1)) & (mag > at(1, 1))  # s = 1: up-left and down-right
    opposite = (mag > at(-1, 1)) & (mag > at(1, -1))  # s = -1: up-right and down-left
    keep |= diagonal & torch.where(s > 0, same, opposite)
    candidate = keep & (mag > low)
    edges = candidate & (mag > high)
    while True:  # hysteresis: grow the strong edges through 8-connected candidates (a loop over steps)
        grown = candidate & (F.max_pool2d(edges.float(), 3, 1, 1) > 0)
        if torch.equal(grown, edges):
            return edges
        edges = grown


# cv2's DIST_L2 5x5 chamfer weights (1, 1.4, 2.1969) in its 16-bit fixed point
_CHAMFER = {1: round(1.0 * 65536), 2: round(1.4 * 65536), 3: round(2.1969 * 65536)}
_CHAMFER_STEPS = [
    (dr, dc, _CHAMFER[1] if abs(dr) + abs(dc) == 1 else _CHAMFER[2] if abs(dr) == abs(dc) else _CHAMFER[3])
    for dr in range(-2, 3)
    for dc in range(-2, 3)
    if (dr, dc) != (0, 0) and not (abs(dr) == 2 and abs(dc) in (0, 2))
]  # the 16 moves of the 5x5 mask: 4 straight, 4 diagonal, 8 knight's


def _distance_to(mask: Tensor, cap: float) -> Tensor:
    """cv2.distanceTransform(~mask, DIST_L2, 5) capped at ``cap``: the 5x5 chamfer distance of every pixel to the
    nearest ``True`` pixel of ``mask`` ``(B, 1, H, W)``, float32.

    The shortest chamfer path, found by relaxing the 16 moves to a fixed point in cv2's fixed-point units (what
    its two raster passes compute); only distances up to ``cap`` are resolved, which is all the caller keeps.
    """
    big = int((cap + 3) * 65536)
    d = torch.where(mask, 0, big).long()
    while True:  # a loop over relaxation sweeps, at most about cap of them
        best = d
        for dr, dc, step in _CHAMFER_STEPS:
            best = torch.minimum(best, _shift(d, dr, dc, big) + step)
        best = best.clamp(max=big)
        if torch.equal(best, d):
            return (d.double() / 65536).clamp(max=cap).float()
        d = best


def _equalize_hist(v: Tensor) -> Tensor:
    """cv2.equalizeHist of 8-bit levels ``v`` ``(B, 1, H, W)`` (integers in float), image by image.

    The lowest occupied level maps to 0 and level ``l`` to ``round(255 n(lowest < level <= l) / n(level >
    lowest))``, in float32 and rounding half to even as cv2; a constant image stays as it is.
    """
    b = v.shape[0]
    levels = v.long().flatten(1)
    hist = torch.zeros(b, 256, dtype=torch.long, device=v.device).scatter_add_(1, levels, torch.ones_like(levels))
    lowest = levels.amin(1, keepdim=True)
    below = hist.gather(1, lowest)
    total = levels.shape[1]
    cum = hist.cumsum(1) - below  # count of levels in (lowest, l]
    scale = torch.tensor(255.0, dtype=torch.float32) / (total - below).clamp_min(1).float()
    lut = (cum.float() * scale).round().clamp(0, 255)
    lut = torch.where(below == total, torch.arange(256, device=v.device).float().expand(b, 256), lut)
    return lut.gather(1, levels).view_as(v).to(v.dtype)


_SPATTER = [
    (0.62, 0.1, 0.7, 0.7, 0.5, False),
    (0.65, 0.1, 0.8, 0.7, 0.5, False),
    (0.65, 0.3, 1, 0.69, 0.5, False),
    (0.65, 0.1, 0.7, 0.69, 0.6, True),
    (0.65, 0.1, 0.5, 0.68, 0.6, True),
]
_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
_MUD = (63 / 255, 42 / 255, 20 / 255)


def _colour(rgb: tuple[float, float, float], x: Tensor) -> Tensor:
    """``(1, C, 1, 1)``: the colour on RGB images, its luma on grey ones."""
    if x.shape[1] == 3:
        return torch.tensor(rgb, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return torch.tensor(sum(w * c for w, c in zip(_GREY, rgb)), device=x.device, dtype=x.dtype)


@register_corruption("spatter")
def spatter(x: Tensor, severity: int, g: Draws) -> Tensor:
    """Splashes: a liquid layer ``N(loc, scale^2)`` per pixel, Gaussian-blurred (sigma), zeroed below
    ``threshold``; (loc, scale, sigma, threshold, k, mud) = (0.62, 0.1, 0.7, 0.7, 0.5, no), (0.65, 0.1, 0.8,
    0.7, 0.5, no), (0.65, 0.3, 1, 0.69, 0.5, no), (0.65, 0.1, 0.7, 0.69, 0.6, yes), (0.65, 0.1, 0.5, 0.68, 0.6,
    yes).

    Water (severities 1-3): the layer as 8 bits (truncated), its Canny edges (50, 150), the distance to them
    (capped at 20), 3x3 box blur (truncated to 8 bits), histogram equalisation, an emboss filter (saturated to
    8 bits), a 3x3 box blur (rounded); the layer times that shading, over its maximum, times k, is added in pale
    turquoise. Mud (severities 4-5): the pixels above the threshold, Gaussian-blurred with sigma k, zeroed below
    0.8, replace the image with mud brown by that weight.

    The integer steps truncate or round as the original does (not by the quantisation convention): they feed
    thresholds and a histogram equalisation, where one level is not a small change. Departures: an image
    without any splash (the original divides 0 by 0 and writes NaN) is left as it is; a layer above 1 is
    clipped to 255 (the original's uint8 cast wraps around); sigmas and the distance cap scale with the image
    (``s``), the 3x3 steps and Canny stay per pixel. Grey images get the colour's luma.
    """
    loc, scale, sigma, threshold, k, mud = _SPATTER[severity - 1]
    b, _, h, w = x.shape
    s = _scale(x)
    layer = _gaussian(loc + scale * g.randn((b, 1, h, w), x).double(), sigma * s, mode="replicate")
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    if mud:
        m = _gaussian((layer > threshold).double(), k * s, mode="replicate")
        m = torch.where(m < 0.8, torch.zeros_like(m), m).to(x.dtype)
        return x * (1 - m) + m * _colour(_MUD, x)
    v = (layer * 255).floor().clamp(0, 255)  # astype(np.uint8)
    dist = _distance_to(_canny(v, 50, 150), 20 * s).double()
    dist = (_correlate3(dist, [[1.0] * 3] * 3, "reflect") * (1.0 / 9)).float().floor().double()  # blur, astype
    dist = _equalize_hist(dist)
    dist = _correlate3(dist, [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], "reflect").clamp(0, 255)  # filter2D, CV_8U
    dist = (_correlate3(dist, [[1.0] * 3] * 3, "reflect") * (1.0 / 9)).round()  # cv2.blur of 8-bit: rounded
    m = v * dist
    peak = m.amax((1, 2, 3), keepdim=True)
    m = torch.where(peak > 0, m / peak.clamp_min(1e-12), torch.zeros_like(m)) * k
    return x + m.to(x.dtype) * _colour(_WATER, x)


@register_corruption("saturate")
def saturate(x: Tensor, severity: int, g: Draws) -> Tensor:
    """In HSV, ``S <- clip(a S + b, 0, 1)`` with H and V kept; (a, b) = (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1),
    (2.5, 0.2): severities 1 and 2 wash the colours out, 3 to 5 exaggerate them.

    With H and V fixed every channel is ``V (1 - S f(H))``, so ``x' = V - (V - x) S' / S`` and no HSV round trip is
    needed. Where ``S = 0`` (grey pixels) skimage sets ``H = 0``, so a positive ``b`` tints them red:
    ``(V, V (1 - b), V (1 - b))``, as in the original. Grey images (any channel count but 3) get the luma of that
    RGB result, ``x (1 - 0.701 b)``.
    """
    a, b = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    if x.shape[1] != 3:
        return x * (1 - (1 - _GREY[0]) * b)
    v = x.amax(1, keepdim=True)
    delta = v - x.amin(1, keepdim=True)
    sat = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    sat_new = (sat * a + b).clamp(0, 1)
    coloured = v - (v - x) * (sat_new / sat.clamp_min(1e-12))
    red = torch.tensor([0.0, 1.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # the f(H) of H = 0
    grey = v * (1 - sat_new * red)
    return torch.where(delta > 0, coloured, grey)
