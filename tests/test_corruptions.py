"""The CIFAR-10-C corruptions: shapes, determinism, severity order, and exact checks against hand values and
the libraries the original generator used (PIL, scipy, numpy)."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill import UserError
from distill.data.corruptions import (
    CORRUPTIONS,
    _clipped_zoom,
    _disk_kernel,
    _gaussian,
    _glass_shuffle,
    _plasma_fractal,
    corrupt,
    corruption_sweep,
    register_corruption,
)

NAMES = list(CORRUPTIONS)
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog"]
RANDOM += ["elastic_transform"]
FIXED = [n for n in NAMES if n not in RANDOM]


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


def test_registry_holds_the_15_cifar10c_corruptions_in_order() -> None:
    assert NAMES == [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    ]  # fmt: skip


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


@pytest.mark.parametrize("name", [n for n in NAMES if n != "elastic_transform"])
def test_severity_5_moves_images_further_than_severity_1(name: str, natural_rgb, digits28) -> None:
    for x in (natural_rgb, digits28):
        d1, d5 = mad(corrupt(x, name, 1), x), mad(corrupt(x, name, 5), x)
        assert d5 > d1 > 0 or (name == "zoom_blur" and d5 > d1), (name, tuple(x.shape), d1, d5)


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
    "name", ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "pixelate", "elastic_transform"]
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
    p = _plasma_fractal(torch.Generator().manual_seed(0), 3, 32, 2.0)
    assert p.shape == (3, 32, 32)
    assert p.amin((1, 2)).tolist() == [0.0] * 3 and p.amax((1, 2)).tolist() == pytest.approx([1.0] * 3)
    assert torch.equal(p, _plasma_fractal(torch.Generator().manual_seed(0), 3, 32, 2.0))


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


def test_register_corruption_adds_by_name() -> None:
    @register_corruption("invert_for_test")
    def invert(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
        return 1 - x

    try:
        x = torch.tensor([[[[0, 55]]]], dtype=torch.uint8)
        assert corrupt(x, "invert_for_test", 1).flatten().tolist() == [255, 200]
    finally:
        del CORRUPTIONS["invert_for_test"]
