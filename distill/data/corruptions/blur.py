"""Blur: defocus (an antialiased disk), glass (local pixel shuffling between Gaussian blurs), motion (a
one-sided streak at a random angle) and zoom (the mean of centre zooms).

Conventions shared by every corruption: :mod:`distill.data.corruptions`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.data.corruptions._ops import Draws, _clipped_zoom, _filter2d, _gaussian, _motion_blur, _scale
from distill.data.corruptions.registry import register_corruption


def _disk_kernel(radius: float, alias_blur: float, s: float) -> Tensor:
    """The original's ``disk``: the pixels with ``X^2 + Y^2 <= r^2`` (normalised), then cv2.GaussianBlur with a
    3x3 kernel (5x5 when r > 8) of sigma ``alias_blur``. Radius and sigma are scaled by ``s``, the Gaussian's
    half-size too (``max(1, round(s))``, twice that when r > 8); the grid is cropped to the kernel's support."""
    r, sigma = radius * s, alias_blur * s
    half = max(1, round(s)) * (2 if radius > 8 else 1)
    size = math.floor(r) + half
    t = torch.arange(-size, size + 1, dtype=torch.float64)
    disk = ((t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) <= r**2).to(torch.float64)
    disk /= disk.sum()
    u = torch.arange(-half, half + 1, dtype=torch.float64)
    k1 = torch.exp(-(u**2) / (2 * sigma**2))
    k1 /= k1.sum()
    blurred = F.conv2d(
        disk.view(1, 1, *disk.shape), (k1.view(-1, 1) * k1.view(1, -1)).view(1, 1, *[len(u)] * 2), padding=half
    )
    return blurred[0, 0]


@register_corruption("defocus_blur")
def defocus_blur(x: Tensor, severity: int, g: Draws) -> Tensor:
    """Convolution with an antialiased disk (cv2.filter2D, border reflect-101); (radius, alias_blur) =
    (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1) pixels at 32x32.

    At 32x32 severities 1..3 are thus a 3x3 Gaussian (the disk is one pixel), 4 a blurred plus, 5 a 3x3 box.
    Radius and sigma scale with the image (see the module docstring): on 8x8 images all five are sub-pixel and
    this is nearly the identity.
    """
    radius, alias_blur = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    return _filter2d(x, _disk_kernel(radius, alias_blur, _scale(x)), "reflect")


def _glass_shuffle(x: Tensor, delta: int, d: Tensor) -> Tensor:
    """One pass of the original's local pixel shuffle, as the generator actually computes it.

    The generator scans rows ``h = H - delta`` down to ``delta + 1``, and in each row the columns likewise, and
    at each pixel runs ``x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]`` with ``dx, dy`` drawn from
    ``-delta .. delta - 1`` (numpy's randint excludes the high end). On its ``(H, W, 3)`` arrays the right-hand
    side holds two views, so this is not a swap but a copy: pixel ``(h, w)`` takes the value of ``(h + dy,
    w + dx)``, which keeps its own (numpy/numpy#14428). Each pixel is thus written once, at its visit; it copies
    the source's final value if the source was visited before, its original value otherwise (for ``delta = 1``,
    always the original: the sources lie up and left, visited later). We resolve these references by pointer
    jumping (``log`` of the longest chain vectorised steps), no loop over pixels. ``d`` ``(B, nh, nw, 2)`` holds
    ``(dx, dy)`` of the visits in scan order.
    """
    b, c, h, w = x.shape
    nh, nw = h - 2 * delta, w - 2 * delta
    if nh <= 0 or nw <= 0:
        return x
    dev = x.device
    rows = torch.arange(h - delta, delta, -1, device=dev).view(1, nh, 1)  # visit order: descending
    cols = torch.arange(w - delta, delta, -1, device=dev).view(1, 1, nw)
    dx, dy = d[..., 0].to(dev), d[..., 1].to(dev)
    src_r, src_c = rows + dy, cols + dx
    in_scan = (src_r > delta) & (src_r <= h - delta) & (src_c > delta) & (src_c <= w - delta)
    earlier = in_scan & ((dy > 0) | ((dy == 0) & (dx > 0)))  # the source was visited (and written) before
    tgt = torch.arange(h * w, device=dev).repeat(b, 1)  # tgt[p]: p's value is the original of tgt[p] ...
    link = torch.zeros(b, h * w, dtype=torch.bool, device=dev)  # ... or, where link[p], the final of tgt[p]
    visits = (rows * w + cols).expand(b, nh, nw).reshape(b, -1)
    tgt.scatter_(1, visits, (src_r * w + src_c).reshape(b, -1))
    link.scatter_(1, visits, earlier.reshape(b, -1))
    while bool(link.any()):
        tgt, link = torch.where(link, tgt.gather(1, tgt), tgt), link & link.gather(1, tgt)
    return x.flatten(2).gather(2, tgt.unsqueeze(1).expand(b, c, h * w)).view(b, c, h, w)


@register_corruption("glass_blur")
def glass_blur(x: Tensor, severity: int, g: Draws) -> Tensor:
    """Gaussian blur (sigma), quantise to 8 bits, ``iterations`` passes of local pixel shuffling with a reach of
    ``max_delta`` pixels, Gaussian blur again; (sigma, max_delta, iterations) = (0.05, 1, 1), (0.25, 1, 1),
    (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2) at 32x32.

    The shuffle is what the generator computes, which is not the swap it writes (see :func:`_glass_shuffle`):
    with ``max_delta = 1`` every pixel but the first two rows and columns takes the value of itself or its left,
    upper or upper-left neighbour, at random. Sigma scales with the image; ``max_delta`` becomes
    ``max(1, round(s))`` pixels, since a pixel cannot move less than one: on images smaller than 32x32 the
    shuffle is relatively stronger than in CIFAR-10-C.
    """
    sigma, max_delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    s = _scale(x)
    delta = max(1, round(max_delta * s))
    b, _, h, w = x.shape
    x = (_gaussian(x, sigma * s) * 255).round_() / 255
    for _ in range(iterations):
        d = g.randint(-delta, delta, (b, max(h - 2 * delta, 0), max(w - 2 * delta, 0), 2), x)
        x = _glass_shuffle(x, delta, d)
    return _gaussian(x, sigma * s)


@register_corruption("motion_blur")
def motion_blur(x: Tensor, severity: int, g: Draws) -> Tensor:
    """ImageMagick's motion blur (a one-sided streak with Gaussian tap weights) at an angle uniform in
    [-45, 45] degrees per image; (radius, sigma) = (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5) at 32x32.

    The original calls ImageMagick through Wand; we compute ImageMagick's kernel in torch, taps rounded to whole
    pixels as ImageMagick rounds them (see :func:`_motion_blur`), so at 32x32 this is ImageMagick's result up
    to float rounding. Other sizes scale radius and sigma by ``s``.
    """
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    angles = g.uniform((x.shape[0],), x, -45.0, 45.0)
    return _motion_blur(x, radius, sigma, angles)


# The original's np.arange(1, 1 + k / 100, 0.01) reaches one step further than written for severity 1 and 2
# (float error): 1.00..1.06, 1.00..1.11, 1.00..1.15, 1.00..1.20, 1.00..1.25.
_ZOOMS = [[1 + 0.01 * i for i in range(n)] for n in (7, 12, 16, 21, 26)]


@register_corruption("zoom_blur")
def zoom_blur(x: Tensor, severity: int, g: Draws) -> Tensor:
    """Mean of the image and its centre zooms ``clipped_zoom(x, z)`` for z = 1.00, 1.01, ... up to 1.06, 1.11,
    1.15, 1.20, 1.25 (numpy's ``arange(1, 1.06, 0.01)`` etc. as the original: the float endpoints of severities
    1 and 2 are included). Zoom factors are relative and need no scaling; the original's integer crop and
    resize sizes make small zooms the identity on small images (all of severity 1 at 8x8).
    """
    zooms = _ZOOMS[severity - 1]
    out = x.clone()
    for z in zooms:  # a loop over zoom factors
        out += _clipped_zoom(x, z)
    return out / (len(zooms) + 1)
