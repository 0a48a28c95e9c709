"""Digital: brightness (in HSV), contrast, elastic transform (an affine then an elastic warp), pixelate (PIL's
BOX resize down and up) and JPEG compression.

Conventions shared by every corruption: :mod:`distill.data.corruptions`.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import torch
from torch import Tensor

from distill.data.corruptions._ops import Draws, _gaussian, _pixel_grid, _sample
from distill.data.corruptions.registry import register_corruption


@register_corruption("brightness")
def brightness(x: Tensor, severity: int, g: Draws) -> Tensor:
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
def contrast(x: Tensor, severity: int, g: Draws) -> Tensor:
    """``(x - m) c + m`` with m the per-image, per-channel mean; c = 0.75, 0.5, 0.4, 0.3, 0.15."""
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    m = x.mean((2, 3), keepdim=True)
    return (x - m) * c + m


@register_corruption("elastic_transform")
def elastic_transform(x: Tensor, severity: int, g: Draws) -> Tensor:
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
    dst = src + g.uniform((b, 3, 2), src, -affine, affine).double()
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
        dx = alpha * _gaussian(g.uniform((b, 1, h, w), x, -1.0, 1.0), sigma, mode="symmetric", truncate=3)
        dy = alpha * _gaussian(g.uniform((b, 1, h, w), x, -1.0, 1.0), sigma, mode="symmetric", truncate=3)
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
def pixelate(x: Tensor, severity: int, g: Draws) -> Tensor:
    """PIL BOX resize down to ``int(c H) x int(c W)`` and back up to ``H x W`` (nearest); c = 0.95, 0.9, 0.85,
    0.75, 0.65. The factors are relative and need no scaling. Exactly PIL's result, in torch."""
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[-2:]
    v = (x * 255).round()
    v = _pil_box_resize(v, (max(1, int(h * c)), max(1, int(w * c))))
    return _pil_box_resize(v, (h, w)) / 255


@register_corruption("jpeg_compression")
def jpeg_compression(x: Tensor, severity: int, g: Draws) -> Tensor:
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
