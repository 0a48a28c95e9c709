"""Helpers shared by the corruptions: per-image seeded draws, luma, padding, Gaussian and kernel filtering,
bilinear sampling, ImageMagick's motion blur and the original's ``clipped_zoom``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as cv2.COLOR_RGB2GRAY
_MASK64 = (1 << 64) - 1


def _scale(x: Tensor) -> float:
    """Pixel parameters of the 32x32 generator are multiplied by this."""
    return min(x.shape[-2:]) / 32.0


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a set corrupted with ``seed``: a 64-bit hash of the pair.

    Hashed rather than ``seed + index`` so that neighbouring seeds do not share images' noise shifted by one;
    for a fixed seed distinct indices give distinct seeds (splitmix64 is a bijection).
    """
    return _splitmix64(_splitmix64(int(seed) & _MASK64) ^ (int(index) & _MASK64))


class Draws:
    """The random draws of one batch, image by image: image ``b`` draws from its own CPU generator.

    Every method takes the batch's full ``shape`` (``shape[0]`` = B) and returns a tensor of it on ``like``'s
    device: image ``b``'s slice depends only on its generator, never on the rest of the batch, so a set
    corrupted whole or in batches of any size gets the same noise (given the same per-image seeds).
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def _per_image(self, shape: Sequence[int], like: Tensor, draw: Callable[[int, torch.Generator], Tensor]) -> Tensor:
        if len(shape) == 0 or shape[0] != len(self.generators):
            raise ValueError(f"draws for {len(self.generators)} images, asked for shape {tuple(shape)}")
        return torch.stack([draw(b, g) for b, g in enumerate(self.generators)]).to(like.device)

    def rand(self, shape: Sequence[int], like: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """U[0, 1)."""
        return self._per_image(shape, like, lambda _, g: torch.rand(tuple(shape[1:]), generator=g, dtype=dtype))

    def randn(self, shape: Sequence[int], like: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """N(0, 1)."""
        return self._per_image(shape, like, lambda _, g: torch.randn(tuple(shape[1:]), generator=g, dtype=dtype))

    def uniform(self, shape: Sequence[int], like: Tensor, low: float, high: float) -> Tensor:
        """U[low, high)."""
        return low + (high - low) * self.rand(shape, like)

    def randint(self, low: int, high: int, shape: Sequence[int], like: Tensor) -> Tensor:
        """Integers in ``low .. high - 1`` (int64), as numpy's randint."""
        return self._per_image(shape, like, lambda _, g: torch.randint(low, high, tuple(shape[1:]), generator=g))

    def poisson(self, rate: Tensor) -> Tensor:
        """Poisson draws of ``rate`` ``(B, ...)``, on its device."""
        r = rate.detach().cpu()
        return self._per_image(rate.shape, rate, lambda b, g: torch.poisson(r[b], generator=g))


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


def _motion_taps(radius: float, sigma: float, angles: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ImageMagick's MotionBlurImage kernel: weights ``(K,)`` and whole-pixel offsets ``dx, dy`` ``(B, K)``.

    ``K = 2 ceil(radius) + 1`` taps ``i = 0 .. K - 1`` (GetOptimalKernelWidth1D for radius > 0) with weights
    ``exp(-i^2 / (2 sigma^2))``, normalised; tap ``i`` is read ``ceil(i cos a - 0.5)`` columns and
    ``ceil(i sin a - 0.5)`` rows away (x to the right, y down): each tap rounded to a whole pixel, half-way
    cases down, as ImageMagick does. ``angles`` ``(B,)`` in degrees.
    """
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(i**2) / (2 * max(sigma, 1e-12) ** 2))
    a = torch.deg2rad(angles.detach().cpu().double()).view(-1, 1)
    dx = torch.ceil(i * a.cos() - 0.5).long()
    dy = torch.ceil(i * a.sin() - 0.5).long()
    return weights / weights.sum(), dx, dy


def _motion_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick's MotionBlurImage(radius, sigma, angle) of ``x`` ``(B, C, H, W)``, one angle per image.

    ``out(p) = sum_i w_i x(p + offset_i)`` with the kernel of :func:`_motion_taps` (taps rounded to whole
    pixels), edges replicated (ImageMagick's default 'edge' virtual pixels). On images of another size than
    32x32, radius and sigma are multiplied by ``s`` before the kernel is built, as if ImageMagick were called
    with the scaled values: the same streak in image fractions, its taps still one pixel apart.
    """
    s = _scale(x)
    weights, dx, dy = _motion_taps(radius * s, sigma * s, angles)
    b, c, h, w = x.shape
    dev = x.device
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    flat = x.reshape(b, c, h * w)
    out = torch.zeros_like(flat)
    for k, weight in enumerate(weights.tolist()):  # a loop over taps, not pixels
        r = (rows.view(1, h) + dy[:, k : k + 1].to(dev)).clamp(0, h - 1)  # (B, H)
        q = (cols.view(1, w) + dx[:, k : k + 1].to(dev)).clamp(0, w - 1)  # (B, W)
        idx = (r.view(b, h, 1) * w + q.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
        out += weight * flat.gather(2, idx)
    return out.view(b, c, h, w)


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
