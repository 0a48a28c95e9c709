"""Weather: snow (motion-blurred flakes over a brightened image), frost (a frost texture, or crops of the frost
photos when the user has them) and fog (a plasma fractal).

Conventions shared by every corruption: :mod:`distill.data.corruptions`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill import UserError
from distill.data.corruptions._ops import _GREY, Draws, _clipped_zoom, _grey, _motion_blur, _scale
from distill.data.corruptions.registry import register_corruption, register_photo_variant


def _snow_layer(g: Draws, x: Tensor, severity: int) -> Tensor:
    """The flakes ``(B, 1, H, W)``, before they are added: drawn, zoomed, thresholded, 8-bit, motion-blurred, 8-bit.

    The two 8-bit steps are the original's: it hands the layer to ImageMagick as an 8-bit PNG and reads the
    blurred 8-bit PNG back. We round at both (the original truncates the first with ``astype(np.uint8)``; see the
    quantisation convention in :mod:`distill.data.corruptions`); ImageMagick rounds the second.
    """
    loc, scale, zoom, threshold, radius, sigma, _ = _SNOW[severity - 1]
    b, _, h, w = x.shape
    layer = _clipped_zoom(loc + scale * g.randn((b, 1, h, w), x), zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = (layer * 255).round_() / 255
    layer = _motion_blur(layer, radius, sigma, g.uniform((b,), x, -135.0, -45.0))
    return (layer * 255).round_() / 255


# (loc, scale, zoom, threshold, radius, sigma, mix)
_SNOW = [
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
]


@register_corruption("snow")
def snow(x: Tensor, severity: int, g: Draws) -> Tensor:
    """Snow flakes: a layer ``N(loc, scale^2)`` per pixel, centre-zoomed by ``zoom``, zeroed below ``threshold``,
    motion-blurred (``radius``, ``sigma``, angle uniform in [-135, -45]); the image is brightened to
    ``mix x + (1 - mix) max(x, 1.5 grey(x) + 0.5)`` and the layer and its 180-degree rotation are added.
    (loc, scale, zoom, threshold, radius, sigma, mix) =
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8).

    The motion blur is ImageMagick's kernel computed in torch (:func:`_motion_blur`, taps rounded to whole
    pixels as ImageMagick does) with the original's 8-bit rounding around it (:func:`_snow_layer`). Departures:
    the flakes are drawn one per pixel at any size (their streaks scale with the image); grey images brighten
    with ``grey(x) = x``.
    """
    mix = _SNOW[severity - 1][-1]
    layer = _snow_layer(g, x, severity)
    x = mix * x + (1 - mix) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


# One row per photo the reference draws from (frost1 .. frost5: its randint(5) never picks frost6; frost2 and
# frost3 hold the same pixels), measured on every 32x32 crop of the photo shrunk by 0.2 as the reference shrinks
# it (``python experiments/frost_stats.py DIR --fit`` prints these rows). Columns: mean RGB of a crop; the spread
# (std) of crop means across crops, per channel; the mean std of a crop's luma ("contrast") and the std of its
# log; the channel gains (each channel's mean within-crop std over the contrast); the crop's radial power
# spectrum as ``P(r) = r^-beta + floor``, r in cycles per crop width, fitted so that crops of the synthesised
# field have the photo crops' spectrum. Summary statistics only: no pixel of the photos is shipped.
_FROST_PROFILES = (
    ((0.301, 0.581, 0.646), (0.068, 0.037, 0.030), 0.0565, 0.180, (1.472, 0.904, 0.866), 2.79, 0.0106),
    ((0.778, 0.796, 0.832), (0.032, 0.035, 0.038), 0.0707, 0.157, (0.984, 1.004, 1.034), 2.11, 0.0261),
    ((0.778, 0.796, 0.832), (0.032, 0.035, 0.038), 0.0707, 0.157, (0.984, 1.004, 1.034), 2.11, 0.0261),
    ((0.563, 0.621, 0.671), (0.039, 0.039, 0.042), 0.1018, 0.087, (0.995, 0.998, 1.037), 2.32, 0.0596),
    ((0.403, 0.447, 0.494), (0.064, 0.062, 0.059), 0.1348, 0.177, (1.010, 0.999, 0.979), 1.52, 0.0167),
)


def _frost_texture(g: Draws, like: Tensor) -> Tensor:
    """A stand-in for a crop of the frost photos: ``(B, 3, H, W)`` RGB in [0, 1], one draw per image.

    Per image: a photo profile ``k`` of :data:`_FROST_PROFILES`, uniformly as the reference picks a photo; a
    crop mean ``M_k + S_k e1`` (one ``e1 ~ N(0, 1)`` for the three channels: the photos' crop means move
    together); a contrast ``C_k exp(tau_k e2 - tau_k^2 / 2)`` (log-normal, mean ``C_k``); and a Gaussian random
    field with the profile's radial spectrum, standardised, times the contrast and the channel gains.

    The field is synthesised on a ``2H x 2W`` torus and cropped to ``H x W``, so it is not periodic in the crop
    and its spectrum is measured as the photos' crops were. Frequencies are counted per image width
    (``min(H, W)``), so the texture's features scale with the image. What it does not reproduce: the photos'
    shapes (crystal edges and needles), their mild skew and heavy tails (skew -0.26, kurtosis 3.9 against a
    Gaussian's 0 and 3), and the channel decorrelation of frost1 (its crop means correlate 0.7-0.9 across
    channels, not 1).
    """
    b, h, w = like.shape[0], *like.shape[-2:]
    dev = like.device
    table = torch.tensor(
        [[*m, *sm, c, tau, *gain, beta, floor] for m, sm, c, tau, gain, beta, floor in _FROST_PROFILES],
        dtype=torch.float64,
        device=dev,
    )
    k = g.randint(0, len(_FROST_PROFILES), (b,), like)
    e = g.randn((b, 2), like, dtype=torch.float64)
    noise = g.randn((b, 2 * h, 2 * w), like, dtype=torch.float64)
    p = table[k]  # (B, 14)
    mean = (p[:, 0:3] + p[:, 3:6] * e[:, :1]).view(b, 3, 1, 1)
    tau = p[:, 7]
    contrast = (p[:, 6] * torch.exp(tau * e[:, 1] - tau**2 / 2)).view(b, 1, 1, 1)
    gains = p[:, 8:11].view(b, 3, 1, 1)
    beta, floor = p[:, 11].view(b, 1, 1), p[:, 12].view(b, 1, 1)
    fy = torch.fft.fftfreq(2 * h, dtype=torch.float64, device=dev).view(-1, 1)
    fx = torch.fft.fftfreq(2 * w, dtype=torch.float64, device=dev).view(1, -1)
    r = (torch.sqrt(fx**2 + fy**2) * min(h, w)).clamp_min(0.5)  # (2H, 2W) cycles per image width
    power = r.pow(-beta) + floor  # (B, 2H, 2W)
    power[:, 0, 0] = 0
    z = torch.fft.ifft2(torch.fft.fft2(noise) * power.sqrt()).real[:, :h, :w]
    z = (z - z.mean((1, 2), keepdim=True)) / z.flatten(1).std(1).clamp_min(1e-12).view(b, 1, 1)
    tex = mean + contrast * gains * z.unsqueeze(1)
    return tex.clamp(0, 1).to(like.dtype)


def _frost_blend(x: Tensor, severity: int, tex: Tensor) -> Tensor:
    """``a x + b frost`` on RGB, or on grey images the luma of the RGB frost."""
    a, bw = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    if x.shape[1] != 3:
        tex = sum(w * tex[:, c : c + 1] for c, w in enumerate(_GREY))
    return a * x + bw * tex


@register_corruption("frost")
def frost(x: Tensor, severity: int, g: Draws) -> Tensor:
    """``a x + b frost`` with a frost texture in [0, 1]; (a, b) = (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4),
    (0.75, 0.45).

    Departure: the original adds a random 32x32 crop of one of five frost photographs (shrunk by 0.2), files we
    do not ship. By default we add a synthetic texture with the crops' first and second moments and spatial
    spectrum, varying from image to image as the crops do (:func:`_frost_texture`); given the photos
    (``corrupt(..., frost_images=DIR)``, ``evaluate.frost_images``), :func:`frost_from_photos` follows the
    original. Grey images get the luma of the frost.
    """
    return _frost_blend(x, severity, _frost_texture(g, x))


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def _cv2_linear_resize(img: Tensor, factor: float) -> Tensor:
    """cv2.resize(img, (0, 0), fx=factor, fy=factor) with INTER_LINEAR, of ``(C, H, W)`` 8-bit levels.

    cv2 makes ``round(n * factor)`` pixels, output pixel ``j`` reading the input at ``(j + 0.5) / factor - 0.5``
    bilinearly (edges replicated, no antialiasing). For the reference's factor 0.2 every read falls on a pixel
    (``5 j + 2``), so this is exact subsampling; for other factors cv2's fixed-point weights are replaced by
    float ones, rounded to 8 bits.
    """
    out = img.double()
    for axis in (1, 2):
        n = out.shape[axis]
        m = max(1, round(n * factor))  # saturate_cast<int>: to nearest, ties to even as Python
        pos = (torch.arange(m, dtype=torch.float64) + 0.5) * (1.0 / factor) - 0.5
        lo = pos.floor()
        frac = pos - lo
        lo_i, hi_i = lo.long().clamp(0, n - 1), (lo.long() + 1).clamp(0, n - 1)
        shape = [1, 1, 1]
        shape[axis] = m
        frac = frac.view(shape)
        out = out.index_select(axis, lo_i) * (1 - frac) + out.index_select(axis, hi_i) * frac
    return out.round_().clamp_(0, 255).to(torch.uint8)


def load_frost_photos(directory: str | Path, factor: float = 0.2) -> tuple[Tensor, ...]:
    """The five frost photos of ``directory`` as ``(3, H, W)`` uint8 RGB, shrunk by ``factor`` as the reference.

    Read with PIL and converted to RGB (the PNGs' alpha dropped, as cv2.imread drops it); PIL's and cv2's JPEG
    decoders can differ by a level here and there. Decoded once per directory, factor and file state.
    """
    root = Path(directory).resolve()
    missing = [f for f in FROST_FILES if not (root / f).is_file()]
    if missing:
        raise UserError(f"evaluate.frost_images: {root} lacks {', '.join(missing)} (CIFAR-10-C's frost photos)")
    state = tuple((root / f).stat().st_mtime_ns for f in FROST_FILES)
    return _decode_frost_photos(str(root), float(factor), state)


@functools.lru_cache(maxsize=8)
def _decode_frost_photos(root: str, factor: float, state: tuple[int, ...]) -> tuple[Tensor, ...]:
    from PIL import Image

    photos = []
    for f in FROST_FILES:
        with Image.open(Path(root) / f) as im:
            rgb = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        photos.append(_cv2_linear_resize(rgb, factor))
    return tuple(photos)


@register_photo_variant("frost")
def frost_from_photos(x: Tensor, severity: int, g: Draws, directory: str | Path) -> Tensor:
    """The original's frost: per image a photo index ``randint(5)``, a crop corner ``randint(0, H' - H)``,
    ``randint(0, W' - W)`` of that photo shrunk by 0.2 (``H' x W'``), and ``a x + b crop``.

    On images of another size than 32x32 the photos are shrunk by ``0.2 s`` instead, so the crop covers the same
    part of a photo.
    """
    b, _, h, w = x.shape
    photos = load_frost_photos(directory, round(0.2 * _scale(x), 12))
    for f, p in zip(FROST_FILES, photos):
        if p.shape[1] <= h or p.shape[2] <= w:
            raise UserError(f"frost: {f} shrunk to {tuple(p.shape[1:])} has no {h}x{w} crop to draw")
    idx = g.randint(0, len(photos), (b,), x).tolist()
    crops = []
    for i, gen in zip(idx, g.generators):  # a loop over images: each crop's range depends on its photo
        p = photos[i]
        top = int(torch.randint(0, p.shape[1] - h, (), generator=gen))
        left = int(torch.randint(0, p.shape[2] - w, (), generator=gen))
        crops.append(p[:, top : top + h, left : left + w])
    tex = torch.stack(crops).to(x.device, x.dtype) / 255
    return _frost_blend(x, severity, tex)


def _plasma_fractal(g: Draws, mapsize: int, decay: float) -> Tensor:
    """The original's diamond-square height map ``(B, mapsize, mapsize)`` in [0, 1] (toroidal, mapsize a power of
    two), one per image of ``g``: new points are the mean of their 4 neighbours plus ``wibble * U(-wibble,
    wibble)``, ``wibble`` starting at 100 and divided by ``decay`` at each halving of the step. On the CPU."""
    m = torch.zeros(len(g), mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        noise = g.rand(total.shape, total, dtype=torch.float64) * 2 - 1
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
def fog(x: Tensor, severity: int, g: Draws) -> Tensor:
    """``(x + t * plasma) * max(x) / (max(x) + t)`` with a plasma fractal (diamond-square) of wibble decay d, the
    same on every channel, ``max`` over the whole image; (t, d) = (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2),
    (1.5, 1.75).

    The original draws a 32x32 map for 32x32 images; we draw the smallest power of two covering the image and
    crop it (the coarse structure, drawn first, then spans the image at every size).
    """
    t, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    h, w = x.shape[-2:]
    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    plasma = _plasma_fractal(g, mapsize, decay)[:, :h, :w].to(x).unsqueeze(1)
    peak = x.amax((1, 2, 3), keepdim=True)
    return (x + t * plasma) * peak / (peak + t)
