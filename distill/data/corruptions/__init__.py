"""The 15 CIFAR-10-C corruptions x 5 severities (Hendrycks & Dietterich, ICLR 2019) on uint8 batches, in torch.

The parameter tables are those of the CIFAR-10-C generator (``ImageNet-C/create_c/make_cifar_c.py`` in
hendrycks/robustness), not the ImageNet-C ones. Each corruption is a small function registered by name in
:data:`CORRUPTIONS`; :func:`corrupt` is the entry point and :func:`corruption_sweep` walks names x severities.

Layout: :mod:`~distill.data.corruptions.registry` (the registry and the entry points), one module per family
(:mod:`~distill.data.corruptions.noise`, :mod:`~distill.data.corruptions.blur`,
:mod:`~distill.data.corruptions.weather`, :mod:`~distill.data.corruptions.digital`), and the helpers they share
(``_ops``: seeded draws, padding, Gaussian filtering, bilinear sampling, motion blur, clipped zoom).

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

from distill.data.corruptions.registry import (
    CORRUPTIONS,
    SEVERITIES,
    CorruptionFn,
    corrupt,
    corruption_sweep,
    register_corruption,
)

# Importing the families registers their corruptions, in CIFAR-10-C's order: noise, blur, weather, digital.
# isort: off
from distill.data.corruptions.noise import gaussian_noise, impulse_noise, shot_noise
from distill.data.corruptions.blur import defocus_blur, glass_blur, motion_blur, zoom_blur
from distill.data.corruptions.weather import fog, frost, snow
from distill.data.corruptions.digital import brightness, contrast, elastic_transform, jpeg_compression, pixelate

# isort: on
# internals checked by tests/test_corruptions.py, importable from here as before the split
from distill.data.corruptions._ops import _clipped_zoom, _gaussian  # noqa: F401
from distill.data.corruptions.blur import _disk_kernel, _glass_shuffle  # noqa: F401
from distill.data.corruptions.weather import _plasma_fractal  # noqa: F401

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "CorruptionFn",
    "brightness",
    "contrast",
    "corrupt",
    "corruption_sweep",
    "defocus_blur",
    "elastic_transform",
    "fog",
    "frost",
    "gaussian_noise",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "register_corruption",
    "shot_noise",
    "snow",
    "zoom_blur",
]
