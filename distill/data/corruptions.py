"""The 15 CIFAR-10-C corruptions x 5 severities (Hendrycks & Dietterich, ICLR 2019) on uint8 batches, in torch.

The parameter tables are those of the CIFAR-10-C generator (``ImageNet-C/create_c/make_cifar_c.py`` in
hendrycks/robustness), not the ImageNet-C ones. Each corruption is a small function registered by name in
:data:`CORRUPTIONS`; :func:`corrupt` is the entry point and :func:`corruption_sweep` walks names x severities.

Conventions shared by every corruption (each docstring says only where it departs from them):

- A registered function takes float images ``(B, C, H, W)`` in ``[0, 1]`` on any device, the severity 1..5 and
  a ``torch.Generator``; it returns float images of the same shape. :func:`corrupt` clips the result to
  ``[0, 1]`` and converts it to uint8.
- Randomness: every draw uses the generator it is given, on the generator's device, and is moved to the images'
  device. :func:`corrupt` seeds a CPU generator, so a seed draws the same noise on every device. The draws are
  made for the batch as a whole: image ``i`` of a batch gets different noise from image ``i`` of another batch
  only if the seeds differ (pass ``seed + batch_index`` when corrupting a split batch by batch).
- Sizes: the generator is written for 32x32 images. Parameters in pixels (blur radii and sigmas, streak
  lengths, displacements) are multiplied by ``s = min(H, W) / 32``; parameters that are fractions of the image
  (zoom factors, pixelation factors, the elastic transform's table, which the original already writes as
  fractions of ``IMSIZE = 32``) are used as they are. Where a scaled blur falls below a pixel (e.g. the
  defocus of severities 1..5 on 8x8 images), the corruption is, faithfully to its scale, close to the identity.
- Grey images (``C = 1``) are treated as ``R = G = B``: colour-specific steps do what the colour corruption of
  the grey image would do, read back as grey (brightness in HSV, the grey-scale of snow, the tint of frost).
- Quantisation: the original converts its float results with ``np.uint8`` (truncation, which darkens by half a
  level on average and turns float error such as 99.99999 into 99); we round to the nearest level, in the final
  conversion and in the intermediate 8-bit steps the original has (glass blur, pixelate).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distill import UserError

CorruptionFn = Callable[[Tensor, int, torch.Generator], Tensor]
CORRUPTIONS: dict[str, CorruptionFn] = {}
SEVERITIES = (1, 2, 3, 4, 5)
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as cv2.COLOR_RGB2GRAY


def register_corruption(name: str) -> Callable[[CorruptionFn], CorruptionFn]:
    def deco(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = fn
        return fn

    return deco


def corrupt(x: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """Corrupt uint8 images ``(B, C, H, W)`` with corruption ``name`` at ``severity`` (1..5); returns uint8.

    Deterministic: the same images, name, severity and seed give the same output.
    """
    if name not in CORRUPTIONS:
        raise UserError(f"corruption: unknown '{name}'; expected one of: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
        raise UserError(f"corruption '{name}': severity must be an integer in 1..5, got {severity!r}")
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"corrupt: expected uint8 images (B, C, H, W), got {tuple(x.shape)} {x.dtype}")
    if x.numel() == 0:
        return x.clone()
    g = torch.Generator().manual_seed(int(seed))
    y = CORRUPTIONS[name](x.float() / 255.0, int(severity), g)
    return (y.clamp(0, 1) * 255).round_().to(torch.uint8)


def corruption_sweep(
    x: Tensor, names: Iterable[str] | None = None, severities: Iterable[int] = SEVERITIES, seed: int = 0
) -> Iterator[tuple[str, int, Tensor]]:
    """Yield ``(name, severity, corrupt(x, name, severity, seed))`` for every name (default: all 15) and severity."""
    for name in list(CORRUPTIONS) if names is None else list(names):
        for severity in severities:
            yield name, severity, corrupt(x, name, severity, seed)


# ----------------------------------------------------------------------------------------------- helpers


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


# ------------------------------------------------------------------------------------------------- noise


@register_corruption("gaussian_noise")
def gaussian_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """``x + N(0, c^2)`` per pixel and channel; c = 0.04, 0.06, 0.08, 0.09, 0.10."""
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return x + c * _randn(g, tuple(x.shape), x)


@register_corruption("shot_noise")
def shot_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """``Poisson(c x) / c`` per pixel and channel; c = 500, 250, 100, 75, 50 (photons at full scale)."""
    c = [500, 250, 100, 75, 50][severity - 1]
    rate = (x * c).to(g.device)
    return torch.poisson(rate, generator=g).to(x.device) / c


@register_corruption("impulse_noise")
def impulse_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Salt and pepper (skimage's ``random_noise(mode='s&p')``): each pixel value (each channel on its own)
    is replaced with probability c by 0 or 1 with equal chance; c = 0.01, 0.02, 0.03, 0.05, 0.07."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    flip = _rand(g, tuple(x.shape), x) < c
    salt = (_rand(g, tuple(x.shape), x) < 0.5).to(x.dtype)
    return torch.where(flip, salt, x)


# -------------------------------------------------------------------------------------------------- blur


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
def defocus_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
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
def glass_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
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
        d = torch.randint(
            -delta, delta, (b, max(h - 2 * delta, 0), max(w - 2 * delta, 0), 2), generator=g, device=g.device
        )
        x = _glass_shuffle(x, delta, d)
    return _gaussian(x, sigma * s)


@register_corruption("motion_blur")
def motion_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """ImageMagick's motion blur (a one-sided streak with Gaussian tap weights) at an angle uniform in
    [-45, 45] degrees per image; (radius, sigma) = (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5) at 32x32.

    Departure: the original calls ImageMagick through Wand; we compute the same kernel in torch (see
    :func:`_motion_blur`: taps bilinear rather than rounded to whole pixels, and spaced ``s`` pixels apart).
    """
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    angles = _uniform(g, (x.shape[0],), x, -45.0, 45.0)
    return _motion_blur(x, radius, sigma, angles)


# The original's np.arange(1, 1 + k / 100, 0.01) reaches one step further than written for severity 1 and 2
# (float error): 1.00..1.06, 1.00..1.11, 1.00..1.15, 1.00..1.20, 1.00..1.25.
_ZOOMS = [[1 + 0.01 * i for i in range(n)] for n in (7, 12, 16, 21, 26)]


@register_corruption("zoom_blur")
def zoom_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
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


# --------------------------------------------------------------------------------------------- weather


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


# ------------------------------------------------------------------------------------------------ digital


@register_corruption("brightness")
def brightness(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """In HSV, ``V <- min(V + c, 1)`` with H and S kept; c = 0.05, 0.1, 0.15, 0.2, 0.3.

    With H and S fixed every channel is proportional to V, so this is ``x * V' / V`` with ``V = max_c x``
    (and ``V'`` on every channel where V = 0, whose saturation HSV sets to 0): no HSV round trip is needed. For
    grey images (and any channel count) the same formula gives the HSV result of R = G = B: ``min(x + c, 1)``.
    """
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new)


@register_corruption("contrast")
def contrast(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """``(x - m) c + m`` with m the per-image, per-channel mean; c = 0.75, 0.5, 0.4, 0.3, 0.15."""
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    m = x.mean((2, 3), keepdim=True)
    return (x - m) * c + m


@register_corruption("elastic_transform")
def elastic_transform(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """A random affine warp then an elastic one (Simard et al.), with (alpha, sigma, affine) = IMSIZE x
    (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03).

    Affine: the points ``c + (q, q), c + (q, -q), c - (q, q)`` (c the centre, q = IMSIZE // 3) each move by
    ``U(-affine, affine)`` per coordinate; the image is warped by the affine map between them (cv2.warpAffine:
    bilinear, border reflect-101). Elastic: displacement fields ``alpha * gaussian(U(-1, 1), sigma)`` (scipy
    'reflect' border, truncate 3) for x and y, sampled bilinearly with scipy's 'reflect' border
    (map_coordinates, order 1). The original's IMSIZE is 32; we use ``min(H, W)`` (its table is already in
    fractions of the image). cv2's 1/32-pixel fixed-point interpolation is not reproduced.

    Note the table trades a large affine warp at severity 1 for a small one plus local jitter at severity 5, so
    the mean pixel change falls with severity while the non-affine (local) distortion grows.
    """
    b, _, h, w = x.shape
    size = min(h, w)
    table = [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)]
    alpha, sigma, affine = (size * v for v in table[severity - 1])
    # the affine map taking 3 points to their moved copies, inverted to find where each output pixel comes from
    cx, cy, q = w // 2, h // 2, size // 3
    src = torch.tensor([[cx + q, cy + q], [cx + q, cy - q], [cx - q, cy - q]], dtype=torch.float64)
    dst = src + _uniform(g, (b, 3, 2), src, -affine, affine).double()
    homog = torch.cat([src, torch.ones(3, 1, dtype=torch.float64)], 1).expand(b, 3, 3)
    mt = torch.linalg.solve(homog, dst)  # (B, 3, 2): [x y 1] @ mt = moved [x y]
    lin, shift = mt[:, :2].transpose(1, 2), mt[:, 2]
    inv = torch.linalg.inv(lin).to(x)
    rows, cols = _pixel_grid(x)
    px, py = cols - shift[:, 0].to(x).view(b, 1, 1), rows - shift[:, 1].to(x).view(b, 1, 1)
    sx = inv[:, 0, 0].view(b, 1, 1) * px + inv[:, 0, 1].view(b, 1, 1) * py
    sy = inv[:, 1, 0].view(b, 1, 1) * px + inv[:, 1, 1].view(b, 1, 1) * py
    x = _sample(x, sy, sx, "reflection", True)
    if alpha > 0:
        dx = alpha * _gaussian(_uniform(g, (b, 1, h, w), x, -1.0, 1.0), sigma, mode="symmetric", truncate=3)
        dy = alpha * _gaussian(_uniform(g, (b, 1, h, w), x, -1.0, 1.0), sigma, mode="symmetric", truncate=3)
        x = _sample(x, rows + dy[:, 0], cols + dx[:, 0], "reflection", False)
    return x


@functools.lru_cache(maxsize=256)
def _box_matrix(n_in: int, n_out: int) -> Tensor:
    """``(n_out, n_in)`` matrix of PIL's BOX resize along one axis: output pixel j averages the input pixels whose
    centres fall in ``((j + 0.5) scale - support, + support]``, with ``scale = n_in / n_out`` and the support
    ``max(scale, 1) / 2`` (an upscale is nearest neighbour)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):  # a loop over the rows of a small matrix
        centre = (j + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        for i in range(lo, hi):
            u = (i - centre + 0.5) / filterscale
            m[j, i] = 1.0 if -0.5 < u <= 0.5 else 0.0
        if m[j].sum() > 0:
            m[j] /= m[j].sum()
    return m


def _pil_box_resize(v: Tensor, size: tuple[int, int]) -> Tensor:
    """PIL's ``resize(size, BOX)`` of 8-bit levels ``v`` (floats 0..255): horizontal pass, then vertical, each
    rounded to 8 bits as PIL does."""
    h, w = v.shape[-2:]
    if size[1] != w:
        v = (v @ _box_matrix(w, size[1]).to(v).T + 0.5).floor_().clamp_(0, 255)
    if size[0] != h:
        v = (_box_matrix(h, size[0]).to(v) @ v + 0.5).floor_().clamp_(0, 255)
    return v


@register_corruption("pixelate")
def pixelate(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """PIL BOX resize down to ``int(c H) x int(c W)`` and back up to ``H x W`` (nearest); c = 0.95, 0.9, 0.85,
    0.75, 0.65. The factors are relative and need no scaling. Exactly PIL's result, in torch."""
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[-2:]
    v = (x * 255).round()
    v = _pil_box_resize(v, (max(1, int(h * c)), max(1, int(w * c))))
    return _pil_box_resize(v, (h, w)) / 255


@register_corruption("jpeg_compression")
def jpeg_compression(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """JPEG round trip at quality q = 80, 65, 58, 50, 40, with PIL as the original (libjpeg, 4:2:0 chroma
    subsampling for RGB).

    The one step that leaves torch: images go to the CPU and through PIL one by one (a loop over images), and
    come back. Grey images are saved as one-channel JPEGs (the luma of the RGB encoding of a grey image); other
    channel counts channel by channel. (torchvision's encode_jpeg gives the same bytes, but importing it costs
    seconds.)
    """
    from PIL import Image

    q = [80, 65, 58, 50, 40][severity - 1]
    b, c, h, w = x.shape
    v = (x * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    v = v.permute(0, 2, 3, 1).numpy() if c == 3 else v.reshape(b * c, h, w).numpy()
    out = []
    for img in v:  # a loop over images
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        out.append(torch.from_numpy(np.asarray(Image.open(buf)).copy()))
    y = torch.stack(out)
    y = y.permute(0, 3, 1, 2) if c == 3 else y.reshape(b, c, h, w)
    return y.to(x.device, x.dtype) / 255
