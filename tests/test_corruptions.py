"""The CIFAR-10-C corruptions: shapes, determinism, batch independence, severity order, and exact checks against
hand values and the libraries the original generator used (PIL, scipy, numpy, ImageMagick's kernel, cv2's
steps), and the frost texture against the statistics of the frost photos."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill import UserError
from distill.data.corruptions import (
    BENCHMARK,
    CORRUPTIONS,
    EXTRAS,
    FROST_FILES,
    SEVERITIES,
    Draws,
    _canny,
    _clipped_zoom,
    _disk_kernel,
    _distance_to,
    _equalize_hist,
    _frost_texture,
    _gaussian,
    _glass_shuffle,
    _motion_blur,
    _motion_taps,
    _plasma_fractal,
    _snow_layer,
    corrupt,
    corruption_sweep,
    image_seed,
    load_frost_photos,
    register_corruption,
)
from distill.report.corruption import corrupted, corruption_names, frost_source

NAMES = list(CORRUPTIONS)  # the 15 and the 4 extras
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog"]
RANDOM += ["elastic_transform", "speckle_noise", "spatter"]
FIXED = [n for n in NAMES if n not in RANDOM]


def draws(n: int, seed: int = 0) -> Draws:
    return Draws([image_seed(seed, i) for i in range(n)])


@pytest.fixture(scope="module")
def natural_rgb() -> torch.Tensor:
    """12 natural 32x32 RGB patches: crops of scikit-learn's two sample photos, downscaled 4x."""
    from sklearn.datasets import load_sample_images

    g = torch.Generator().manual_seed(0)
    patches = []
    for im in load_sample_images().images:
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, scale_factor=0.25, mode="bilinear", antialias=True)[0]
        for _ in range(6):
            i = int(torch.randint(0, x.shape[1] - 32, (1,), generator=g))
            j = int(torch.randint(0, x.shape[2] - 32, (1,), generator=g))
            patches.append(x[:, i : i + 32, j : j + 32])
    return torch.stack(patches).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def digits8() -> torch.Tensor:
    from sklearn.datasets import load_digits

    d = load_digits().images[:12]
    return torch.from_numpy(np.round(d * 255 / 16).astype(np.uint8)).unsqueeze(1)


@pytest.fixture(scope="module")
def digits28(digits8: torch.Tensor) -> torch.Tensor:
    return F.interpolate(digits8.float(), size=28, mode="bilinear").round().clamp(0, 255).to(torch.uint8)


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def test_registry_holds_the_15_cifar10c_corruptions_in_order_then_the_4_extras() -> None:
    assert list(BENCHMARK) == [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    ]  # fmt: skip
    assert list(EXTRAS) == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert [*BENCHMARK, *EXTRAS] == NAMES
    # the extras are off by default: the sweep and the report take the 15 unless the extras are named
    assert [n for n, _, _ in corruption_sweep(torch.zeros((1, 1, 4, 4), dtype=torch.uint8), severities=(1,))] == [
        *BENCHMARK
    ]
    assert corruption_names(None) == list(BENCHMARK)
    assert corruption_names(["spatter", "fog"]) == ["spatter", "fog"]
    with pytest.raises(UserError, match="unknown \\['rain'\\]"):
        corruption_names(["rain"])


@pytest.mark.parametrize("name", NAMES)
def test_uint8_same_shape_for_grey_and_rgb_of_any_size(name: str, digits8, digits28, natural_rgb) -> None:
    for x in (digits8[:2], digits28[:2], natural_rgb[:2]):
        for severity in range(1, 6):
            y = corrupt(x, name, severity, seed=1)
            assert y.dtype == torch.uint8 and y.shape == x.shape, (name, severity, tuple(x.shape))
    x = natural_rgb[:1, :, :20, :27]  # not square
    assert corrupt(x, name, 5).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name: str, natural_rgb) -> None:
    x = natural_rgb[:4]
    assert torch.equal(corrupt(x, name, 3, seed=7), corrupt(x, name, 3, seed=7))


@pytest.mark.parametrize("name", RANDOM)
def test_other_seed_other_output(name: str, natural_rgb) -> None:
    x = natural_rgb[:4]
    assert not torch.equal(corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=1))


@pytest.mark.parametrize("name", FIXED)
def test_deterministic_corruptions_ignore_the_seed(name: str, natural_rgb) -> None:
    x = natural_rgb[:4]
    assert torch.equal(corrupt(x, name, 4, seed=0), corrupt(x, name, 4, seed=1))


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("elastic_transform", "spatter")])
def test_severity_5_moves_images_further_than_severity_1(name: str, natural_rgb, digits28) -> None:
    for x in (natural_rgb, digits28):
        d1, d5 = mad(corrupt(x, name, 1), x), mad(corrupt(x, name, 5), x)
        # zoom blur of severity 1 is the identity on small images; saturate of 1 and 2 (b = 0) on grey ones
        exempt = name == "zoom_blur" or (name == "saturate" and x.shape[1] == 1)
        assert d5 > d1 > 0 or (exempt and d5 > d1), (name, tuple(x.shape), d1, d5)


def test_elastic_severity_1_is_affine_and_5_adds_local_distortion() -> None:
    """CIFAR-10-C's elastic table shrinks the affine part with severity (so pixel distance falls) and grows the
    elastic part. On images that encode their own coordinates (linear ramps, which bilinear sampling reproduces
    exactly) the warp can be read off: its departure from the best affine fit must be ~0 at severity 1 and grow."""
    h = w = 32
    ramp = torch.arange(32, dtype=torch.float32) * 8  # 8 levels per pixel
    x = torch.stack([ramp.view(1, w).expand(h, w), ramp.view(h, 1).expand(h, w), torch.zeros(h, w)])
    x = x.round().to(torch.uint8).expand(8, 3, h, w).contiguous()
    residual = []
    for severity in (1, 5):
        y = corrupt(x, "elastic_transform", severity, seed=3).double() / 8
        core = y[:, :2, 8:24, 8:24].reshape(8, 2, -1)  # sampled (col, row), away from the reflected borders
        rr, cc = torch.meshgrid(torch.arange(8, 24.0), torch.arange(8, 24.0), indexing="ij")
        design = torch.stack([cc.flatten(), rr.flatten(), torch.ones(256)], 1).double()
        fit = design @ torch.linalg.lstsq(design.expand(8, -1, -1), core.transpose(1, 2)).solution
        residual.append((core.transpose(1, 2) - fit).pow(2).mean().sqrt().item())
        assert (core - design[:, :2].T).abs().mean() > 0.2  # the affine part moves the image
    assert residual[0] < 0.1 < residual[1], residual  # in pixels


@pytest.mark.parametrize(
    "name", ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "pixelate", "elastic_transform", "gaussian_blur"]
)
def test_geometric_corruptions_keep_a_constant_image(name: str) -> None:
    x = torch.full((2, 3, 32, 32), 90, dtype=torch.uint8)
    for severity in (1, 5):
        assert torch.equal(corrupt(x, name, severity), x), (name, severity)


# ------------------------------------------------------------------------------------- exact values


def test_gaussian_noise_std_matches_the_table_on_mid_grey() -> None:
    x = torch.full((4, 1, 64, 64), 128, dtype=torch.uint8)
    for severity, c in zip(range(1, 6), [0.04, 0.06, 0.08, 0.09, 0.10]):
        d = corrupt(x, "gaussian_noise", severity).float() - 128
        assert d.std().item() == pytest.approx(c * 255, rel=0.03)  # 128 +- 4 sigma stays inside 0..255
        assert abs(d.mean().item()) < 0.3


def test_shot_noise_is_poisson_at_the_table_rate() -> None:
    x = torch.full((4, 1, 64, 64), 128, dtype=torch.uint8)
    d = corrupt(x, "shot_noise", 1).float() / 255
    rate = 500 * 128 / 255
    assert d.mean().item() == pytest.approx(128 / 255, abs=2e-3)
    assert d.std().item() == pytest.approx(math.sqrt(rate) / 500, rel=0.03)


def test_impulse_noise_flips_the_table_fraction_to_0_or_255() -> None:
    x = torch.full((4, 3, 64, 64), 128, dtype=torch.uint8)
    y = corrupt(x, "impulse_noise", 5)
    assert set(y.unique().tolist()) == {0, 128, 255}
    assert (y != 128).float().mean().item() == pytest.approx(0.07, rel=0.06)
    assert (y == 0).sum().item() == pytest.approx((y == 255).sum().item(), rel=0.1)


def test_brightness_on_constant_images_by_hand() -> None:
    grey = torch.full((1, 1, 4, 4), 100, dtype=torch.uint8)  # min(V + c, 1): 100 + 255 c levels
    assert [corrupt(grey, "brightness", s).unique().item() for s in (1, 3, 4)] == [113, 138, 151]  # +12.75, 38.25, 51
    assert corrupt(grey, "brightness", 2).unique().item() in (125, 126)  # 125.5: a tie, float error decides
    assert corrupt(torch.full_like(grey, 200), "brightness", 5).unique().item() == 255  # clipped at V = 1
    # RGB (200, 100, 50) at severity 3: V = 200/255 -> V + 0.15, hue and saturation kept: every channel * V'/V
    rgb = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    k = (200 / 255 + 0.15) / (200 / 255)
    assert corrupt(rgb, "brightness", 3)[0, :, 0, 0].tolist() == [round(200 * k), round(100 * k), round(50 * k)]
    white = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.equal(corrupt(white, "brightness", 5), white)
    black = torch.zeros((1, 3, 2, 2), dtype=torch.uint8)
    assert corrupt(black, "brightness", 5).unique().item() == round(0.3 * 255)


def test_brightness_matches_an_hsv_round_trip(natural_rgb) -> None:
    x = natural_rgb[:2, :, :8, :8]
    y = corrupt(x, "brightness", 4)
    for px, py in zip(x.permute(0, 2, 3, 1).reshape(-1, 3).tolist(), y.permute(0, 2, 3, 1).reshape(-1, 3).tolist()):
        hh, ss, vv = colorsys.rgb_to_hsv(*(v / 255 for v in px))
        expect = [round(v * 255) for v in colorsys.hsv_to_rgb(hh, ss, min(vv + 0.2, 1.0))]
        assert max(abs(a - b) for a, b in zip(expect, py)) <= 1, (px, py, expect)


def test_contrast_on_two_level_image_by_hand() -> None:
    x = torch.zeros((1, 3, 4, 4), dtype=torch.uint8)
    x[..., 2:] = 200  # per-channel mean 100
    for severity, c in zip(range(1, 6), [0.75, 0.5, 0.4, 0.3, 0.15]):
        y = corrupt(x, "contrast", severity)
        assert y[0, 0, 0, 0].item() == round(100 - 100 * c) and y[0, 0, 0, 3].item() == round(100 + 100 * c)
    flat = torch.full((1, 1, 4, 4), 77, dtype=torch.uint8)
    assert torch.equal(corrupt(flat, "contrast", 5), flat)


def test_pixelate_matches_pil_box_resize(natural_rgb) -> None:
    from PIL import Image

    for severity, c in zip(range(1, 6), [0.95, 0.9, 0.85, 0.75, 0.65]):
        y = corrupt(natural_rgb[:4], "pixelate", severity)
        for img, out in zip(natural_rgb[:4], y):
            pil = Image.fromarray(img.permute(1, 2, 0).numpy())
            pil = pil.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
            assert np.array_equal(np.asarray(pil), out.permute(1, 2, 0).numpy()), severity


def test_glass_shuffle_is_what_the_generator_computes() -> None:
    """The generator's ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on (H, W, 3) numpy arrays, run sequentially."""
    rng = np.random.default_rng(0)
    for delta, (h, w) in [(1, (12, 12)), (1, (9, 13)), (2, (14, 11))]:
        img = rng.integers(0, 256, (h, w, 3)).astype(np.float64)
        d = rng.integers(-delta, delta, (h - 2 * delta, w - 2 * delta, 2))
        ref = img.copy()
        for a, hh in enumerate(range(h - delta, delta, -1)):
            for b, ww in enumerate(range(w - delta, delta, -1)):
                dx, dy = d[a, b]
                ref[hh, ww], ref[hh + dy, ww + dx] = ref[hh + dy, ww + dx], ref[hh, ww]
        out = _glass_shuffle(torch.from_numpy(img).permute(2, 0, 1)[None], delta, torch.from_numpy(d)[None])
        assert np.array_equal(out[0].permute(1, 2, 0).numpy(), ref), (delta, h, w)


def test_clipped_zoom_matches_scipy() -> None:
    from scipy.ndimage import zoom as scizoom

    rng = np.random.default_rng(1)
    for n in (32, 28, 8):
        img = rng.random((n, n))
        for z in (1.0, 1.06, 1.11, 1.25, 1.75, 2.25):
            ch = math.ceil(n / z)
            top = (n - ch) // 2
            big = scizoom(img[top : top + ch, top : top + ch], z, order=1)
            trim = (big.shape[0] - n) // 2
            ref = big[trim : trim + n, trim : trim + n]
            out = _clipped_zoom(torch.from_numpy(img)[None, None], z)[0, 0].numpy()
            np.testing.assert_allclose(out, ref, atol=1e-9, err_msg=f"n={n} z={z}")


def test_gaussian_matches_scipy_including_pads_wider_than_the_image() -> None:
    from scipy.ndimage import gaussian_filter

    img = np.random.default_rng(2).random((8, 11))
    for sigma, mode, scipy_mode, truncate in [(0.8, "replicate", "nearest", 4.0), (3.0, "symmetric", "reflect", 3.0)]:
        ref = gaussian_filter(img, sigma, mode=scipy_mode, truncate=truncate)
        out = _gaussian(torch.from_numpy(img)[None, None], sigma, mode=mode, truncate=truncate)[0, 0].numpy()
        np.testing.assert_allclose(out, ref, atol=1e-12)


def test_defocus_kernels_at_32_by_hand() -> None:
    a = math.exp(-1 / (2 * 0.4**2))  # severity 1: one-pixel disk, then cv2's 3x3 Gaussian of sigma 0.4
    k1 = torch.tensor([a, 1, a], dtype=torch.float64) / (1 + 2 * a)
    assert torch.allclose(_disk_kernel(0.3, 0.4, 1.0), torch.outer(k1, k1), atol=1e-12)
    k5 = _disk_kernel(1.5, 0.1, 1.0)  # severity 5: the 3x3 square (X^2 + Y^2 <= 2.25), hardly blurred
    assert k5.shape == (5, 5) and k5.sum().item() == pytest.approx(1)
    assert torch.allclose(k5[1:4, 1:4], torch.full((3, 3), 1 / 9, dtype=torch.float64), atol=1e-12, rtol=0)
    k4 = _disk_kernel(1.0, 0.2, 1.0)  # severity 4: the plus of 5 pixels, blurred by sigma 0.2
    assert k4[2, 2] == pytest.approx(0.2, abs=1e-4) and k4[1, 2] == pytest.approx(0.2, abs=1e-4)
    assert k4[1, 1] < 1e-4


def test_plasma_fractal_is_normalised_and_seeded() -> None:
    p = _plasma_fractal(draws(3), 32, 2.0)
    assert p.shape == (3, 32, 32)
    assert p.amin((1, 2)).tolist() == [0.0] * 3 and p.amax((1, 2)).tolist() == pytest.approx([1.0] * 3)
    assert torch.equal(p, _plasma_fractal(draws(3), 32, 2.0))


# ------------------------------------------------------------------------------------------------- API


def test_errors_name_the_problem() -> None:
    x = torch.zeros((1, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(UserError, match="unknown 'rain'.*gaussian_noise"):
        corrupt(x, "rain", 1)
    for bad in (0, 6, 2.5):
        with pytest.raises(UserError, match="severity"):
            corrupt(x, "fog", bad)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(x.float(), "fog", 1)


def test_sweep_walks_names_by_severities_as_corrupt(digits8) -> None:
    x = digits8[:2]
    out = list(corruption_sweep(x, names=["fog", "pixelate"], severities=(2, 5), seed=4))
    assert [(n, s) for n, s, _ in out] == [("fog", 2), ("fog", 5), ("pixelate", 2), ("pixelate", 5)]
    assert torch.equal(out[1][2], corrupt(x, "fog", 5, seed=4))
    assert len(list(corruption_sweep(x[:1, :, :4, :4], severities=(1,)))) == 15
    assert len(list(corruption_sweep(x[:1, :, :4, :4], names=EXTRAS, severities=(1,)))) == 4


def test_register_corruption_adds_by_name() -> None:
    @register_corruption("invert_for_test")
    def invert(x: torch.Tensor, severity: int, g: Draws) -> torch.Tensor:
        return 1 - x

    try:
        x = torch.tensor([[[[0, 55]]]], dtype=torch.uint8)
        assert corrupt(x, "invert_for_test", 1).flatten().tolist() == [255, 200]
    finally:
        del CORRUPTIONS["invert_for_test"]


# ------------------------------------------------------------------------------- noise keyed by image index


@pytest.fixture(scope="module")
def random_rgb() -> torch.Tensor:
    return torch.randint(0, 256, (7, 3, 32, 32), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)


@pytest.mark.parametrize("name", NAMES)
def test_noise_depends_on_the_image_index_not_the_batch(name: str, random_rgb) -> None:
    """Corrupting a set whole, image by image, or in uneven batches (each told where it starts) gives the same
    bytes; and ``corrupt(x)[:k] == corrupt(x[:k])``."""
    x = random_rgb
    for severity in SEVERITIES:
        whole = corrupt(x, name, severity, seed=11)
        for size in (1, 3) if severity == 5 else (3,):
            parts = [corrupt(x[i : i + size], name, severity, 11, start=i) for i in range(0, len(x), size)]
            assert torch.equal(torch.cat(parts), whole), (name, severity, size)
        assert torch.equal(corrupt(x[:2], name, severity, seed=11), whole[:2]), (name, severity)


def test_the_report_sweep_does_not_depend_on_the_batch_size(random_rgb) -> None:
    for name in ("impulse_noise", "snow", "frost", "fog", "elastic_transform"):  # the batch-dependent ones
        ref = corrupted(random_rgb, name, 3, batch_size=len(random_rgb), seed=2)
        for batch_size in (1, 2, 5):
            assert torch.equal(corrupted(random_rgb, name, 3, batch_size, seed=2), ref), (name, batch_size)
        assert not torch.equal(corrupted(random_rgb, name, 3, 2, seed=3), ref)  # the seed still matters


@pytest.mark.parametrize("name", RANDOM)
def test_every_image_gets_its_own_noise(name: str, random_rgb) -> None:
    """The same image twice in a batch, or at another index, is corrupted differently."""
    x = random_rgb[:1].expand(4, -1, -1, -1).contiguous()
    y = corrupt(x, name, 4, seed=0)
    assert all(not torch.equal(y[0], y[i]) for i in range(1, 4)), name
    assert not torch.equal(corrupt(x[:1], name, 4, seed=0, start=5), y[0:1]), name


def test_image_seeds_are_distinct_and_not_shifted_between_seeds() -> None:
    seeds = {image_seed(s, i) for s in range(20) for i in range(200)}
    assert len(seeds) == 20 * 200
    assert image_seed(0, 1) != image_seed(1, 0)


# ------------------------------------------------------------------------- motion blur: whole-pixel taps


def test_motion_taps_are_imagemagicks_rounded_offsets() -> None:
    """ImageMagick: ``2 ceil(radius) + 1`` taps, tap i at ``ceil(i cos a - 0.5), ceil(i sin a - 0.5)``."""
    w, dx, dy = _motion_taps(6, 2, torch.tensor([0.0, 90.0, 45.0, -30.5]))
    i = torch.arange(13, dtype=torch.float64)
    expect_w = torch.exp(-(i**2) / 8)
    assert torch.allclose(w, expect_w / expect_w.sum(), atol=1e-15)
    assert dx[0].tolist() == list(range(13)) and dy[0].tolist() == [0] * 13
    assert dx[1].tolist() == [0] * 13 and dy[1].tolist() == list(range(13))
    assert dx[2].tolist() == dy[2].tolist() == [0, 1, 1, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8]  # i / sqrt(2), rounded
    c, s = math.cos(math.radians(-30.5)), math.sin(math.radians(-30.5))
    assert dx[3].tolist() == [math.ceil(k * c - 0.5) for k in range(13)]
    assert dy[3].tolist() == [math.ceil(k * s - 0.5) for k in range(13)]
    assert _motion_taps(8, 3, torch.zeros(1))[0].numel() == 17 and _motion_taps(14, 12, torch.zeros(1))[0].numel() == 29


def test_motion_blur_of_an_impulse_is_the_whole_pixel_kernel() -> None:
    """A hand-made impulse: the output is the kernel written into whole pixels, ``out[p - offset_i] += w_i``,
    nothing between them (a bilinear streak would spread each tap over two to four pixels)."""
    angles = [0.0, 17.0, -45.0, 100.0, 213.7]
    x = torch.zeros((len(angles), 1, 32, 32), dtype=torch.float64)
    x[:, :, 16, 16] = 1
    out = _motion_blur(x, 6, 1.5, torch.tensor(angles))
    weights = [math.exp(-(i**2) / (2 * 1.5**2)) for i in range(13)]
    for b, a in enumerate(angles):
        expect = torch.zeros((32, 32), dtype=torch.float64)
        for i, wi in enumerate(weights):
            ox = math.ceil(i * math.cos(math.radians(a)) - 0.5)
            oy = math.ceil(i * math.sin(math.radians(a)) - 0.5)
            expect[16 - oy, 16 - ox] += wi / sum(weights)
        assert torch.allclose(out[b, 0], expect, atol=1e-12), a
    # edges replicated: a constant image stays constant, and an edge pixel smears inwards
    edge = torch.zeros((1, 1, 8, 8), dtype=torch.float64)
    edge[..., :, 7] = 1  # the last column: taps to the right of it read it again
    assert torch.allclose(_motion_blur(edge, 6, 1, torch.zeros(1))[0, 0, :, 7], torch.ones(8, dtype=torch.float64))


def test_motion_blur_corruption_of_an_impulse_covers_at_most_the_taps() -> None:
    x = torch.zeros((6, 3, 32, 32), dtype=torch.uint8)
    x[:, :, 16, 16] = 255
    for severity, taps in [(1, 13), (5, 19)]:
        y = corrupt(x, "motion_blur", severity, seed=4)
        for img in y[:, 0]:
            assert 2 <= int((img > 0).sum()) <= taps
            assert abs(int(img.sum()) - 255) <= taps


def test_snow_layer_is_8_bit_around_the_blur() -> None:
    x = torch.zeros((3, 3, 32, 32))
    for severity in (1, 5):
        layer = _snow_layer(draws(3), x, severity) * 255
        assert torch.allclose(layer, layer.round(), atol=1e-4) and layer.max() > 10


# ------------------------------------------------------------------------------------------------- frost

# The frost photos' crops as the reference draws them (the five photos weighted equally, shrunk by 0.2), printed
# by ``python experiments/frost_stats.py DIR`` (docs/corruptions.md): the targets of the synthetic texture.
FROST_MEAN = (0.564, 0.647, 0.694)  # mean RGB of a crop
FROST_SPREAD = (0.200, 0.140, 0.134)  # std over crops of a crop's mean
FROST_WITHIN = (0.092, 0.086, 0.087)  # mean within-crop std, per channel
# shares of a crop's luma power (mean removed) at r = 1, 2, 3-4, 5-8, 9-16 cycles per crop
FROST_SPECTRUM = {(1, 1): 0.448, (2, 2): 0.145, (3, 4): 0.133, (5, 8): 0.124, (9, 16): 0.150}


@pytest.fixture(scope="module")
def frost_textures() -> torch.Tensor:
    return _frost_texture(draws(1200), torch.zeros((1200, 3, 32, 32))).double()


def _radial_spectrum(grey: torch.Tensor) -> list[float]:
    d = grey - grey.mean((-2, -1), keepdim=True)
    power = (torch.fft.fft2(d).abs() ** 2).mean(0)
    f = torch.fft.fftfreq(32, dtype=torch.float64)
    r = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2) * 32
    rad = torch.stack([power[(r >= k - 0.5) & (r < k + 0.5)].mean() for k in range(1, 17)])
    return (rad / rad.sum()).tolist()


def test_frost_texture_has_the_photos_moments_within_10_percent(frost_textures) -> None:
    t = frost_textures
    means = t.mean((2, 3))
    assert means.mean(0).tolist() == pytest.approx(FROST_MEAN, rel=0.1)
    assert means.std(0).tolist() == pytest.approx(FROST_SPREAD, rel=0.1)  # the crops vary as the photos' do
    assert t.std((2, 3)).mean(0).tolist() == pytest.approx(FROST_WITHIN, rel=0.1)
    # each image's own contrast varies too (log-normal per profile), not one fixed spread for every image
    assert t.std((2, 3)).mean(1).std().item() > 0.02


def test_frost_texture_has_the_photos_spatial_spectrum(frost_textures) -> None:
    grey = sum(w * frost_textures[:, c] for c, w in enumerate((0.299, 0.587, 0.114)))
    got = _radial_spectrum(grey)
    for (lo, hi), share in FROST_SPECTRUM.items():
        assert sum(got[lo - 1 : hi]) == pytest.approx(share, rel=0.1), (lo, hi)
    white = _radial_spectrum(torch.randn((200, 32, 32), generator=torch.Generator().manual_seed(0)).double())
    assert white[0] < 0.5 * FROST_SPECTRUM[(1, 1)]  # the check tells a white texture from frost


def test_frost_corruption_adds_the_texture_by_the_table() -> None:
    x = torch.full((400, 3, 8, 8), 100, dtype=torch.uint8)
    y = corrupt(x, "frost", 3).double()  # 0.9 x + 0.4 frost
    expect = [0.9 * 100 + 0.4 * 255 * m for m in FROST_MEAN]
    assert y.mean((0, 2, 3)).tolist() == pytest.approx(expect, rel=0.03)
    grey = corrupt(x[:, :1], "frost", 3).double().mean().item()
    assert grey == pytest.approx(sum(w * e for w, e in zip((0.299, 0.587, 0.114), expect)), rel=0.03)


@pytest.fixture
def frost_dir(tmp_path):
    """Five stand-in photos whose pixels say where they are: R = row, G = column, B = 40 x photo number (saved as
    PNG data, also under the .jpg names: PIL, like cv2.imread, reads files by content)."""
    from PIL import Image

    rows, cols = np.meshgrid(np.arange(200), np.arange(250), indexing="ij")
    for k, f in enumerate(FROST_FILES):
        img = np.stack([rows, cols, np.full_like(rows, 40 * k)], -1).astype(np.uint8)
        Image.fromarray(img[: 180 + 5 * k]).save(tmp_path / f, format="PNG")
    return tmp_path


def test_frost_photos_are_shrunk_and_cropped_as_the_reference(frost_dir) -> None:
    photos = load_frost_photos(str(frost_dir))
    for k, p in enumerate(photos):
        # cv2.resize by 0.2, INTER_LINEAR: round(n / 5) pixels, each the input's pixel 5 j + 2
        assert p.shape == (3, round((180 + 5 * k) / 5), 50)
        assert p[0, :, 0].tolist() == [5 * j + 2 for j in range(p.shape[1])]
        assert p[1, 0].tolist() == [5 * j + 2 for j in range(50)]
    x = torch.zeros((40, 3, 32, 32), dtype=torch.uint8)
    y = corrupt(x, "frost", 1, seed=0, frost_images=frost_dir).double() / (0.2 * 255)  # 1 x + 0.2 crop
    chosen = set()
    for img in y:
        k = round(img[2].mean().item() * 255 / 40)
        chosen.add(k)
        top, left = (img[0, 0, 0].item() * 255 - 2) / 5, (img[1, 0, 0].item() * 255 - 2) / 5
        assert 0 <= round(top) < photos[k].shape[1] - 32 and 0 <= round(left) < 50 - 32
        crop = photos[k][:, round(top) : round(top) + 32, round(left) : round(left) + 32].double() / 255
        assert torch.allclose(img, crop, atol=0.5 / (0.2 * 255) + 1e-9)
    assert chosen == {0, 1, 2, 3, 4}  # every one of the five is drawn, none other
    # per-image draws here too; and the synthetic texture is something else
    assert torch.equal(
        corrupt(x[:3], "frost", 1, seed=0, frost_images=frost_dir), corrupt(x, "frost", 1, frost_images=frost_dir)[:3]
    )
    assert not torch.equal(corrupt(x, "frost", 1), corrupt(x, "frost", 1, frost_images=frost_dir))


def test_frost_photos_missing_or_too_small_are_user_errors(frost_dir, tmp_path) -> None:
    (frost_dir / "frost4.jpg").unlink()
    with pytest.raises(UserError, match="lacks frost4.jpg"):
        corrupt(torch.zeros((1, 3, 32, 32), dtype=torch.uint8), "frost", 1, frost_images=frost_dir)
    with pytest.raises(UserError, match="lacks frost4.jpg"):
        frost_source(["frost"], str(frost_dir))


def test_the_report_says_which_frost(frost_dir) -> None:
    assert frost_source(["fog"], None) is None
    assert "synthetic" in frost_source(["frost"], None)
    assert str(frost_dir) in frost_source(["frost", "fog"], str(frost_dir))


# ------------------------------------------------------------------------------------------- the extras


def test_speckle_noise_is_multiplicative_at_the_table_scale() -> None:
    for level in (64, 128):
        x = torch.full((4, 1, 64, 64), level, dtype=torch.uint8)
        d = corrupt(x, "speckle_noise", 2).float() - level
        assert d.std().item() == pytest.approx(0.1 * level, rel=0.04)
    assert torch.equal(
        corrupt(torch.zeros((1, 3, 8, 8), dtype=torch.uint8), "speckle_noise", 5),
        torch.zeros((1, 3, 8, 8), dtype=torch.uint8),
    )


def test_gaussian_blur_matches_scipy_nearest(natural_rgb) -> None:
    from scipy.ndimage import gaussian_filter

    for severity, sigma in zip(range(1, 6), [0.4, 0.6, 0.7, 0.8, 1]):
        y = corrupt(natural_rgb[:2], "gaussian_blur", severity)
        ref = gaussian_filter(natural_rgb[:2].double().numpy() / 255, (0, 0, sigma, sigma), mode="nearest")
        assert np.abs(np.round(ref * 255) - y.numpy()).max() <= 1, severity


def test_saturate_matches_an_hsv_round_trip(natural_rgb) -> None:
    x = natural_rgb[:2, :, :6, :6].clone()
    x[0, :, 0, :3] = torch.tensor([90, 90, 90], dtype=torch.uint8).view(3, 1)  # grey pixels: skimage's H = 0
    x[0, :, 1, 0] = 0
    for severity, (a, b) in zip(range(1, 6), [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)]):
        y = corrupt(x, "saturate", severity)
        for px, py in zip(x.permute(0, 2, 3, 1).reshape(-1, 3).tolist(), y.permute(0, 2, 3, 1).reshape(-1, 3).tolist()):
            hh, ss, vv = colorsys.rgb_to_hsv(*(v / 255 for v in px))
            expect = [round(v * 255) for v in colorsys.hsv_to_rgb(hh, min(max(ss * a + b, 0), 1), vv)]
            assert max(abs(p - q) for p, q in zip(expect, py)) <= 1, (severity, px, py, expect)
    grey = torch.full((1, 1, 2, 2), 200, dtype=torch.uint8)  # grey images: the luma of the tinted RGB
    assert corrupt(grey, "saturate", 5).unique().item() == round(200 * (1 - 0.701 * 0.2))


def test_canny_keeps_cv2s_side_of_a_step_and_its_thresholds() -> None:
    """A vertical step between columns 15 and 16: both have magnitude 4 x step; cv2 keeps the left one (it must
    beat its left neighbour but only equal its right one). Magnitudes (L1 Sobel) at or below 50 are never edges,
    a run of maxima needs one above 150."""
    for step, edge in [(200, True), (40, True), (30, False), (10, False)]:  # magnitudes 800, 160, 120, 40
        v = torch.zeros((1, 1, 12, 32), dtype=torch.float64)
        v[..., 16:] = step
        e = _canny(v, 50, 150)[0, 0]
        if edge:
            assert e[:, 15].all() and int(e.sum()) == 12, step
        else:
            assert not e.any(), step
    # hysteresis: a weak edge (magnitude 120, full width, no corners) is kept where a strong one touches it
    for strong_rows, joined in [(8, False), (12, True)]:
        v = torch.zeros((1, 1, 20, 32), dtype=torch.float64)
        v[..., 12:, :] = 30  # the weak edge: row 11
        v[..., :strong_rows, 16:] = 200  # the strong one: column 15, rows 0 .. strong_rows - 1
        e = _canny(v, 50, 150)[0, 0]
        assert e[:6, 15].all()
        assert bool(e[11, 2]) == joined and bool(e[11, 28]) == joined, strong_rows


def test_distance_transform_is_cv2s_5x5_chamfer() -> None:
    mask = torch.zeros((1, 1, 11, 11), dtype=torch.bool)
    mask[..., 5, 5] = True
    d = _distance_to(mask, 20)[0, 0].double()
    b, c = 91750 / 65536, 143976 / 65536  # 1.4 and 2.1969 in cv2's 16-bit fixed point
    assert d[5, 5] == 0 and d[5, 6] == 1 and d[4, 4] == b and d[4, 7] == c and d[5, 8] == 3
    assert d[3, 3] == 2 * b and d[4, 8] == c + 1 and d[0, 5] == 5
    assert torch.equal(_distance_to(torch.zeros((1, 1, 6, 6), dtype=torch.bool), 20), torch.full((1, 1, 6, 6), 20.0))
    assert _distance_to(mask, 2.5).max().item() == 2.5


def test_equalize_hist_by_hand() -> None:
    v = torch.tensor([0] * 4 + [5] * 6 + [20] * 10, dtype=torch.float64).view(1, 1, 4, 5)
    out = _equalize_hist(v).flatten().tolist()
    # the lowest level -> 0, then round(255 * count(lowest < level <= l) / count(level > lowest))
    assert out == [0.0] * 4 + [round(255 * 6 / 16)] * 6 + [255.0] * 10
    flat = torch.full((1, 1, 3, 3), 7.0, dtype=torch.float64)
    assert torch.equal(_equalize_hist(flat), flat)  # cv2 leaves a constant image as it is


def test_spatter_adds_water_or_covers_with_mud(natural_rgb) -> None:
    x = natural_rgb
    water, mud = corrupt(x, "spatter", 3, seed=1).double(), corrupt(x, "spatter", 5, seed=1).double()
    d = water - x.double()
    assert d.min() >= 0 and d.max() > 20  # water only adds, pale turquoise: (175, 238, 238) in proportion
    mask = (d[:, 0] > 10) & (water.amax(1) < 255)  # unclipped water
    assert torch.allclose(d[:, 1][mask] / d[:, 0][mask], torch.full_like(d[:, 1][mask], 238 / 175), rtol=0.1)
    changed = (mud != x.double()).any(1)
    assert 0 < changed.float().mean() < 0.5
    brown = torch.tensor([63.0, 42.0, 20.0]).view(1, 3, 1, 1).double()
    # where the mud weight is 1 the pixel is mud brown
    assert ((mud - brown).abs().amax(1) <= 1).any()


def test_one_corruption_table_for_the_report_and_the_analyses() -> None:
    """The analyses' table is the report's (``corruption_table``): the same acc / NLL on the same probabilities,
    severity means over the corruptions, and the overall mean over every (corruption, severity)."""
    from distill.analysis.common import corruption_scores
    from distill.report.corruption import corruption_table

    g = torch.Generator().manual_seed(0)
    keys = [(n, s) for n in ("fog", "snow") for s in (1, 3)]
    y = torch.tensor([0, 1, 2, 1, 0])
    probs = torch.softmax(torch.randn(len(keys) * len(y), 3, generator=g, dtype=torch.float64), -1)  # (S * N, K)
    # a hand-made case for one entry: the fraction of rows whose argmax is the label
    first = probs[: len(y)]
    a = corruption_scores(probs, y, keys)
    assert a["corruption"]["fog"]["1"]["acc"] == pytest.approx(float((first.argmax(-1) == y).double().mean()))
    assert a["corruption"]["fog"]["1"]["nll"] == pytest.approx(float(-first[torch.arange(5), y].log().mean()))
    r = corruption_table(
        lambda n, s: probs[keys.index((n, s)) * 5 : (keys.index((n, s)) + 1) * 5],
        y,
        ["fog", "snow"],
        [1, 3],
        ("acc", "nll", "ece"),
    )
    for n, s in keys:
        for m in ("acc", "nll"):
            assert a["corruption"][n][str(s)][m] == r["corruptions"][n][str(s)][m]
    assert a["severity"]["3"]["nll"] == pytest.approx(
        (a["corruption"]["fog"]["3"]["nll"] + a["corruption"]["snow"]["3"]["nll"]) / 2
    )
    assert a["mean"]["brier"] == pytest.approx(np.mean([a["corruption"][n][str(s)]["brier"] for n, s in keys]))
    assert set(r["corruptions"]["fog"]["1"]) == {"acc", "nll", "ece"}
