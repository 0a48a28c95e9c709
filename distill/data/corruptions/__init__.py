"""The 15 CIFAR-10-C corruptions x 5 severities (Hendrycks & Dietterich, ICLR 2019) on uint8 batches, in torch,
and the 4 extra ones of its release.

The parameter tables are those of the CIFAR-10-C generator (``ImageNet-C/create_c/make_cifar_c.py`` in
hendrycks/robustness), not the ImageNet-C ones. Each corruption is a small function registered by name in
:data:`CORRUPTIONS`; :func:`corrupt` is the entry point and :func:`corruption_sweep` walks names x severities.
:data:`BENCHMARK` names the 15 of the benchmark (the default everywhere), :data:`EXTRAS` the 4 more the release
ships (speckle noise, Gaussian blur, spatter, saturate), used only when named. docs/corruptions.md says, per
corruption, what matches the reference and what departs from it.

Layout: :mod:`~distill.data.corruptions.registry` (the registry and the entry points), one module per family
(:mod:`~distill.data.corruptions.noise`, :mod:`~distill.data.corruptions.blur`,
:mod:`~distill.data.corruptions.weather`, :mod:`~distill.data.corruptions.digital`,
:mod:`~distill.data.corruptions.extra`), and the helpers they share (``_ops``: per-image seeded draws, padding,
Gaussian filtering, bilinear sampling, ImageMagick's motion blur, clipped zoom).

Conventions shared by every corruption (each docstring says only where it departs from them):

- A registered function takes float images ``(B, C, H, W)`` in ``[0, 1]`` on any device, the severity 1..5 and
  the batch's :class:`~distill.data.corruptions._ops.Draws`; it returns float images of the same shape.
  :func:`corrupt` clips the result to ``[0, 1]`` and converts it to uint8.
- Randomness: every image draws from its own CPU generator, seeded by a hash of ``(seed, index)`` where
  ``index`` is the image's position in the set being corrupted (``corrupt(..., start=i)`` for a batch that
  begins at image ``i``). An image's noise thus depends on the seed and its index only: not on the batch size,
  the rest of the batch or the device, and ``corrupt(x, name, s, seed)[:k]`` equals
  ``corrupt(x[:k], name, s, seed)``. (The original draws from numpy's global generator image after image.)
- Sizes: the generator is written for 32x32 images. Parameters in pixels (blur radii and sigmas, streak
  lengths, displacements) are multiplied by ``s = min(H, W) / 32``; parameters that are fractions of the image
  (zoom factors, pixelation factors, the elastic transform's table, which the original already writes as
  fractions of ``IMSIZE = 32``) are used as they are. Where a scaled blur falls below a pixel (e.g. the
  defocus of severities 1..5 on 8x8 images), the corruption is, faithfully to its scale, close to the identity.
- Grey images (``C = 1``) are treated as ``R = G = B``: colour-specific steps do what the colour corruption of
  the grey image would do, read back as grey (brightness and saturation in HSV, the grey-scale of snow, the
  colour of frost and spatter).
- Quantisation: the original converts its float results with ``np.uint8`` (truncation, which darkens by half a
  level on average and turns float error such as 99.99999 into 99); we round to the nearest level, in the final
  conversion and in the intermediate 8-bit steps the original has (glass blur, pixelate, the snow layer).
  Spatter's integer pipeline is the exception: it truncates where the original does (see its docstring).
"""

from __future__ import annotations

from distill.data.corruptions._ops import Draws, image_seed
from distill.data.corruptions.registry import (
    BENCHMARK,
    CORRUPTIONS,
    EXTRAS,
    SEVERITIES,
    CorruptionFn,
    corrupt,
    corruption_sweep,
    register_corruption,
)

# Importing the families registers their corruptions, in CIFAR-10-C's order: noise, blur, weather, digital, then
# the release's extras.
# isort: off
from distill.data.corruptions.noise import gaussian_noise, impulse_noise, shot_noise
from distill.data.corruptions.blur import defocus_blur, glass_blur, motion_blur, zoom_blur
from distill.data.corruptions.weather import FROST_FILES, fog, frost, frost_from_photos, load_frost_photos, snow
from distill.data.corruptions.digital import brightness, contrast, elastic_transform, jpeg_compression, pixelate
from distill.data.corruptions.extra import gaussian_blur, saturate, spatter, speckle_noise

# isort: on
# internals checked by tests/test_corruptions.py, importable from here as before the split
from distill.data.corruptions._ops import _clipped_zoom, _gaussian, _motion_blur, _motion_taps  # noqa: F401
from distill.data.corruptions.blur import _disk_kernel, _glass_shuffle  # noqa: F401
from distill.data.corruptions.extra import _canny, _distance_to, _equalize_hist  # noqa: F401
from distill.data.corruptions.weather import _frost_texture, _plasma_fractal, _snow_layer  # noqa: F401

__all__ = [
    "BENCHMARK",
    "CORRUPTIONS",
    "EXTRAS",
    "FROST_FILES",
    "SEVERITIES",
    "CorruptionFn",
    "Draws",
    "brightness",
    "contrast",
    "corrupt",
    "corruption_sweep",
    "defocus_blur",
    "elastic_transform",
    "fog",
    "frost",
    "frost_from_photos",
    "gaussian_blur",
    "gaussian_noise",
    "glass_blur",
    "image_seed",
    "impulse_noise",
    "jpeg_compression",
    "load_frost_photos",
    "motion_blur",
    "pixelate",
    "register_corruption",
    "saturate",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "zoom_blur",
]
