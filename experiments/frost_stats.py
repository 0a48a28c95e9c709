"""Statistics of CIFAR-10-C's frost photos, as the reference crops them, and of the synthetic frost texture.

    python experiments/frost_stats.py DIR            # DIR holds frost1.png .. frost5.jpg
    python experiments/frost_stats.py DIR --fit      # also refit each photo's spectrum (beta, floor)

Per photo (shrunk by 0.2 as the reference's cv2.resize, every 32x32 crop the reference can draw): the numbers
of ``_FROST_PROFILES`` in distill/data/corruptions/weather.py. Then the pooled targets (photos weighted
equally, as the reference's randint(5) picks them) next to the same numbers measured on the synthetic texture:
mean RGB of a crop, the spread of crop means, the within-crop std per channel, and the radial power spectrum of
a crop's luma. ``--fit`` finds, per photo, the ``P(r) = r^-beta + floor`` whose synthesised crops have the
photo crops' spectrum (least squares on the log spectrum, common random numbers).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from distill.data.corruptions import Draws, frost, image_seed, load_frost_photos

GREY = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
SIZE = 32


def synthetic_texture(n: int) -> torch.Tensor:
    """``(n, 3, 32, 32)`` draws of the synthetic frost texture, through the public corruption: frost at severity 1
    is ``1 x + 0.2 texture``, so on black images it is 0.2 times the texture (one draw per image seed)."""
    black = torch.zeros((n, 3, SIZE, SIZE), dtype=torch.float64)
    return frost(black, 1, Draws([image_seed(0, i) for i in range(n)])) / 0.2


def crops_of(photo: torch.Tensor) -> torch.Tensor:
    """Every crop ``(N, 3, 32, 32)`` in [0, 1] the reference can draw: corners ``0 .. H' - 33``, ``0 .. W' - 33``."""
    p = photo.double() / 255
    c = p.unfold(1, SIZE, 1).unfold(2, SIZE, 1)[:, :-1, :-1]  # randint(0, H' - 32) excludes the last corner
    return c.permute(1, 2, 0, 3, 4).reshape(-1, 3, SIZE, SIZE)


def radial_spectrum(grey: torch.Tensor) -> np.ndarray:
    """Mean power at r = 1 .. 16 cycles per crop of ``(N, 32, 32)`` crops, means removed, normalised to sum 1."""
    d = grey - grey.mean((-2, -1), keepdim=True)
    power = (torch.fft.fft2(d).abs() ** 2).mean(0)
    f = torch.fft.fftfreq(SIZE, dtype=torch.float64)
    r = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2) * SIZE
    rad = torch.stack([power[(r >= k - 0.5) & (r < k + 0.5)].mean() for k in range(1, SIZE // 2 + 1)])
    return (rad / rad.sum()).numpy()


def moments(crops: torch.Tensor) -> dict[str, np.ndarray]:
    means = crops.mean((2, 3))
    grey_std = (crops * GREY.view(1, 3, 1, 1)).sum(1).std((1, 2), correction=0)
    return {
        "mean": means.mean(0).numpy(),
        "spread": means.std(0, correction=0).numpy(),
        "within": crops.std((2, 3), correction=0).mean(0).numpy(),
        "contrast": grey_std.mean().numpy(),
        "tau": grey_std.log().std(correction=0).numpy(),
    }


def fit_spectrum(target: np.ndarray, n: int = 2000) -> tuple[float, float]:
    """``(beta, floor)`` whose field, synthesised on a 64x64 torus and cropped to 32x32, has ``target``."""
    from scipy.optimize import least_squares

    noise_f = torch.fft.fft2(torch.randn((n, 2 * SIZE, 2 * SIZE), generator=torch.Generator().manual_seed(0)).double())
    f = torch.fft.fftfreq(2 * SIZE, dtype=torch.float64)
    r = (torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2) * SIZE).clamp_min(0.5)

    def residual(q: np.ndarray) -> np.ndarray:
        power = r ** (-q[0]) + np.exp(q[1])
        power[0, 0] = 0
        z = torch.fft.ifft2(noise_f * power.sqrt()).real[:, :SIZE, :SIZE]
        return np.log(radial_spectrum(z)) - np.log(target)

    q = least_squares(residual, [2.0, -4.0], diff_step=1e-3).x
    return float(q[0]), float(np.exp(q[1]))


def fmt(v: np.ndarray, digits: int = 3) -> str:
    return "(" + ", ".join(f"{x:.{digits}f}" for x in np.atleast_1d(v)) + ")"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="directory holding frost1.png .. frost5.jpg")
    ap.add_argument("--fit", action="store_true", help="refit each photo's spectrum (slow: about a minute)")
    args = ap.parse_args()
    photos = load_frost_photos(args.dir)
    pooled = []
    print(
        "per photo: mean RGB, spread of crop means, contrast, tau, channel gains"
        + (", beta, floor" if args.fit else "")
    )
    for k, photo in enumerate(photos):
        c = crops_of(photo)
        m = moments(c)
        gains = m["within"] / m["contrast"]
        line = f"frost{k + 1} {tuple(photo.shape[1:])}: {fmt(m['mean'])} {fmt(m['spread'])} "
        line += f"{m['contrast']:.4f} {m['tau']:.3f} {fmt(gains)}"
        if args.fit:
            beta, floor = fit_spectrum(radial_spectrum((c * GREY.view(1, 3, 1, 1)).sum(1)))
            line += f" {beta:.2f} {floor:.4f}"
        print(line)
        pooled.append(c[torch.randperm(len(c), generator=torch.Generator().manual_seed(k))[:1000]])
    photo_crops = torch.cat(pooled)  # 1000 crops of each photo: the five weighted equally
    n = 2000
    synthetic = synthetic_texture(n)
    print("\n| | photo crops | synthetic |\n|---|---|---|")
    a, b = moments(photo_crops), moments(synthetic)
    for key, label in [("mean", "mean RGB"), ("spread", "spread of crop means"), ("within", "within-crop std")]:
        print(f"| {label} | {fmt(a[key])} | {fmt(b[key])} |")
    print(f"| luma contrast | {a['contrast']:.4f} | {b['contrast']:.4f} |")
    sa = radial_spectrum((photo_crops * GREY.view(1, 3, 1, 1)).sum(1))
    sb = radial_spectrum((synthetic * GREY.view(1, 3, 1, 1)).sum(1))
    for lo, hi in [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16)]:
        print(f"| spectrum, r = {lo}..{hi} | {sa[lo - 1 : hi].sum():.3f} | {sb[lo - 1 : hi].sum():.3f} |")


if __name__ == "__main__":
    main()
