"""Helpers shared by the corruptions: seeded draws, luma, padding, Gaussian and kernel filtering, bilinear
sampling, the motion-blur streak and the original's ``clipped_zoom``."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as cv2.COLOR_RGB2GRAY


def _scale(x: Tensor) -> float:
    """Pixel parameters of the 32x32 generator are multiplied by this."""
    return min(x.shape[-2:]) / 32.0


def _rand(g: torch.Generator, shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.rand(shape, generator=g, device=g.device).to(like.device)


def _randn(g: torch.Generator, shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.randn(shape, generator=g, device=g.device).to(like.device)


def _uniform(g: torch.Generator, shape: tuple[int, ...], like: Tensor, low: float, high: float) -> Tensor:
    return low + (high - low) * _rand(g, shape, like)


def _grey(x: Tensor) -> Tensor:
    """``(B, 1, H, W)`` luma: ITU-R 601 for RGB, the image itself for grey, the channel mean otherwise."""
    if x.shape[1] == 3:
        return sum(w * x[:, c : c + 1] for c, w in enumerate(_GREY))
    return x.mean(1, keepdim=True)


def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source indices of a padded axis, for any pad width (torch's own reflect pad needs pad < n).

    ``reflect``: d c b | a b c d | c b a (cv2's BORDER_REFLECT_101, scipy's 'mirror');
    ``symmetric``: c b a | a b c d | d c b (scipy's and skimage's 'reflect'); ``replicate``: a a | a b c d | d d.
    """
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect":
        p = 2 * (n - 1)
        i = i.remainder(p)
        return torch.where(i >= n, p - i, i)
    if mode == "symmetric":
        p = 2 * n
        i = i.remainder(p)
        return torch.where(i >= n, p - 1 - i, i)
    raise ValueError(f"unknown padding mode {mode!r}")


def _pad(x: Tensor, r: int, mode: str) -> Tensor:
    h, w = x.shape[-2:]
    x = x.index_select(-2, _pad_index(h, r, r, mode, x.device))
    return x.index_select(-1, _pad_index(w, r, r, mode, x.device))


def _filter2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Correlate every channel with one odd square ``kernel`` (as cv2.filter2D), padding by ``mode``."""
    b, c, h, w = x.shape
    r = kernel.shape[-1] // 2
    y = _pad(x, r, mode).reshape(b * c, 1, h + 2 * r, w + 2 * r)
    return F.conv2d(y, kernel.to(x).view(1, 1, *kernel.shape[-2:])).view(b, c, h, w)


def _gaussian(x: Tensor, sigma: float, mode: str = "replicate", truncate: float = 4.0) -> Tensor:
    """scipy.ndimage.gaussian_filter over H and W (radius ``int(truncate * sigma + 0.5)``), as skimage's gaussian.

    skimage's default mode 'nearest' is ``replicate``; its 'reflect' is ``symmetric``.
    """
    r = int(truncate * sigma + 0.5)
    if sigma <= 0 or r == 0:
        return x
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x)
    b, c, h, w = x.shape
    y = _pad(x, r, mode).reshape(b * c, 1, h + 2 * r, w + 2 * r)
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return y.view(b, c, h, w)


def _pixel_grid(x: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column coordinates ``(H, W)`` of every pixel, in pixels."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(h, 1).expand(h, w)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, w).expand(h, w)
    return rows, cols


def _sample(x: Tensor, rows: Tensor, cols: Tensor, padding: str, centred_edges: bool) -> Tensor:
    """Bilinear samples of ``x`` at pixel coordinates ``rows``, ``cols`` (each ``(B, H, W)``).

    ``padding='reflection'`` reflects about the edge pixels' centres (cv2's BORDER_REFLECT_101) when
    ``centred_edges`` and about the image's edges (scipy's 'reflect') otherwise; ``'border'`` replicates.
    """
    h, w = x.shape[-2:]
    if centred_edges:
        gx, gy = 2 * cols / max(w - 1, 1) - 1, 2 * rows / max(h - 1, 1) - 1
    else:
        gx, gy = (2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=centred_edges)


def _smear(x: Tensor, angles: Tensor, steps: Tensor, weights: Tensor, padding: str = "border") -> Tensor:
    """``sum_k weights[k] * x(p + steps[k] * (cos a, sin a))``: x moved along a line at each image's angle.

    ``angles`` ``(B,)`` in degrees (x to the right, y down, as ImageMagick); ``steps`` in pixels, bilinear.
    """
    rows, cols = _pixel_grid(x)
    a = torch.deg2rad(angles.to(x))
    cos, sin = a.cos().view(-1, 1, 1), a.sin().view(-1, 1, 1)
    out = torch.zeros_like(x)
    for step, weight in zip(steps.tolist(), weights.tolist()):  # a loop over taps, not pixels
        out += weight * _sample(x, rows + step * sin, cols + step * cos, padding, True)
    return out


def _motion_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick's MotionBlurImage(radius, sigma, angle), at size scale ``s``.

    ImageMagick: ``2 * ceil(radius) + 1`` taps ``i = 0, 1, ...`` with weights ``exp(-i^2 / (2 sigma^2))``
    (normalised), tap ``i`` read ``round(i * (cos a, sin a))`` pixels away, edges replicated. Here tap ``i`` is
    read ``i * s`` pixels away with bilinear interpolation (an antialiased streak rather than one rounded to
    whole pixels, so that it can be shorter than a pixel per tap on images smaller than 32x32).
    """
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(i**2) / (2 * sigma**2))
    return _smear(x, angles, i * _scale(x), weights / weights.sum())


@functools.lru_cache(maxsize=256)
def _zoom_matrix(n: int, zoom: float) -> Tensor:
    """``(n, n)`` matrix of the original's ``clipped_zoom`` along one axis.

    Crop the centre ``ceil(n / zoom)`` pixels (top at ``(n - ch) // 2``), resize them to ``round(ch * zoom)``
    with scipy.ndimage.zoom (order 1: linear, corner pixels aligned), keep the centre ``n`` (trim
    ``(out - n) // 2``). The original crops with the height on both axes; we use each axis's own size.
    """
    ch = math.ceil(n / zoom)
    top = (n - ch) // 2
    out = round(ch * zoom)  # Python's round, as scipy's zoom
    trim = (out - n) // 2
    j = torch.arange(n, dtype=torch.float64) + trim
    pos = top + (j * (ch - 1) / (out - 1) if out > 1 else torch.zeros(n, dtype=torch.float64))
    lo = pos.floor().clamp(0, n - 1)
    frac = pos - lo
    hi = (lo + 1).clamp(max=n - 1)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((torch.arange(n), lo.long()), 1 - frac, accumulate=True)
    m.index_put_((torch.arange(n), hi.long()), frac, accumulate=True)
    return m


def _clipped_zoom(x: Tensor, zoom: float) -> Tensor:
    h, w = x.shape[-2:]
    mh, mw = _zoom_matrix(h, zoom).to(x), _zoom_matrix(w, zoom).to(x)
    return mh @ x @ mw.T
