"""Robustness to corruptions: the CIFAR-10-C corruptions x severities on a class-stratified draw of test images.

Each corrupted set is made once and passed through every model (then only the logits are kept); severity 0 is
the drawn test images, clean. Per model and severity: accuracy, NLL and ECE of the averaged probabilities,
averaged over the corruptions (and each corruption on its own). The draw (``evaluate.corruption_limit`` images,
``evaluate.subset_seed``: :func:`distill.data.subsets.eval_subset`) holds every class in proportion whatever the
order of the split (an image folder's test split is class by class: its first N were one class).

Where the corrupted images come from (a :class:`CorruptedImages`):

* :func:`made_here`: the test images corrupted by :mod:`distill.data.corruptions`. Image ``i`` draws its noise
  from ``(seed, i)`` alone, so the numbers do not depend on the evaluation batch size;
* :func:`released_cifar10c`: the released CIFAR-10-C arrays (``evaluate.cifar10c``), N images of each severity
  drawn class-stratified from the release's labels (the same indices for every corruption and severity), for
  numbers comparable with published ones. Its images are CIFAR-10's test images in the release's order, which need
  not be the order of this project's test split, so severity 0 (N of this split's test images, drawn with the same
  seed) is then a different draw of clean images; where the two orders agree, so do the two draws.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from distill import UserError
from distill.data.corruptions import BENCHMARK, CORRUPTIONS, corrupt, load_frost_photos
from distill.data.subsets import eval_subset
from distill.metrics import accuracy, brier, ece, nll
from distill.report.evaluate import N_BINS, Source
from distill.report.predictions import Predictions, mean_probs64

# Every measure a corruption table can hold, on a predictive distribution ``probs (N, K)`` and labels ``(N,)``.
# The report keeps acc / NLL / ECE; the analyses acc / NLL / Brier (their targets predate the report's ECE).
PROB_MEASURES: dict[str, Callable[[Tensor, Tensor], float]] = {
    "acc": accuracy,
    "nll": nll,
    "ece": lambda p, y: ece(p, y, N_BINS),
    "brier": brier,
}
MEASURES = ("acc", "nll", "ece")


def corruption_names(names: list[str] | None) -> list[str]:
    """``None``: CIFAR-10-C's 15; otherwise the given names (the 4 extras among them if named), checked."""
    if names is None:
        return list(BENCHMARK)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise UserError(f"evaluate.corruptions: unknown {unknown}; expected some of: {', '.join(CORRUPTIONS)}")
    return list(names)


def check_severities(severities: list[int]) -> list[int]:
    bad = [s for s in severities if not 1 <= s <= 5]
    if bad:
        raise UserError(f"evaluate.severities: {bad} not in 1..5")
    return sorted(set(severities))


def key(name: str, severity: int) -> str:
    return f"corrupt/{name}/{severity}"


def frost_source(names: list[str], frost_images: str | None) -> str | None:
    """What the report says frost was made from; ``None`` when frost is not swept. Checks the photos are there."""
    if "frost" not in names:
        return None
    if frost_images is None:
        return "synthetic texture with the frost photos' moments and spectrum (evaluate.frost_images unset)"
    load_frost_photos(frost_images)  # a UserError now rather than after the predictions
    return f"CIFAR-10-C's frost photos from {frost_images}, cropped as the original does"


def corrupted(
    x: Tensor, name: str, severity: int, batch_size: int, seed: int = 0, frost_images: str | None = None
) -> Tensor:
    """``x`` corrupted batch by batch; image ``i``'s noise comes from ``(seed, i)``, so any ``batch_size`` gives the
    same bytes as corrupting ``x`` whole."""
    return torch.cat(
        [
            corrupt(x[i : i + batch_size], name, severity, seed, start=i, frost_images=frost_images)
            for i in range(0, len(x), batch_size)
        ]
    )


@dataclass(frozen=True)
class CorruptedImages:
    """``images(name, severity) -> uint8 (N, C, H, W)``, their labels ``y (N,)``, the test split's indices of the
    clean images of severity 0 (``clean``: the made-here images' own) and, for the report, where they come from."""

    images: Callable[[str, int], Tensor]
    y: Tensor
    clean: Tensor
    source: str


def made_here(
    x: Tensor, y: Tensor, idx: Tensor, subset_seed: int, batch_size: int, seed: int = 0, frost_images: str | None = None
) -> CorruptedImages:
    """Test images ``x[idx]`` (``idx``: the draw of ``subset_seed``) corrupted here; their position in the draw, not
    in the split, seeds each image's noise, as before the draw."""
    xs = x[idx]
    return CorruptedImages(
        lambda name, sev: corrupted(xs, name, sev, batch_size, seed, frost_images),
        y[idx],
        idx,
        f"made here (distill.data.corruptions) from {len(idx)} test images drawn class-stratified (seed "
        f"{subset_seed}), noise seed {seed}",
    )


def released_cifar10c(
    root: str, names: list[str], n: int, shape: tuple[int, ...], subset_seed: int, clean: Tensor
) -> CorruptedImages:
    """``n`` images of each severity of the released CIFAR-10-C at ``root``, drawn class-stratified (``subset_seed``)
    from the release's labels, the same indices for every corruption and severity; ``clean`` are the test split's
    indices of severity 0. ``shape`` is the models' ``(C, H, W)``, checked against the release's first array before
    any model runs."""
    from distill.data.benchmarks import cifar10c_folder, load_cifar10c

    folder = cifar10c_folder(root, names)
    x, y = load_cifar10c(folder, names[0], 1)
    if tuple(x.shape[1:]) != tuple(shape):
        raise UserError(f"evaluate.cifar10c {root}: images {tuple(x.shape[1:])}, the models take {tuple(shape)}")
    idx = eval_subset(y, n, subset_seed)

    def images(name: str, sev: int) -> Tensor:
        xs, ys = load_cifar10c(folder, name, sev)
        # the labels are drawn once, from the first array: another array's must agree, or its scores are wrong
        if not torch.equal(ys[idx], y[idx]):
            raise UserError(f"evaluate.cifar10c {folder}: labels.npy differs between {names[0]}/1 and {name}/{sev}")
        return xs[idx]

    return CorruptedImages(
        images,
        y[idx],
        clean,
        f"the released CIFAR-10-C in {Path(folder)}, {len(idx)} images of each severity drawn class-stratified "
        f"(seed {subset_seed}) from its labels, the same for every corruption and severity",
    )


def sweep(preds: list[Predictions], source: CorruptedImages, names: list[str], severities: list[int]) -> None:
    """Fill every model's cache with its logits on every corrupted set."""
    for name in names:
        for sev in severities:
            xc = source.images(name, sev)
            for p in preds:
                p.logits(key(name, sev), xc)


def measure(probs: Tensor, y: Tensor, measures: tuple[str, ...] = MEASURES) -> dict[str, float]:
    """The named :data:`PROB_MEASURES` of ``probs (N, K)`` against ``y (N,)``."""
    return {m: PROB_MEASURES[m](probs, y) for m in measures}


def corruption_table(
    probs: Callable[[str, int], Tensor],
    y: Tensor,
    names: list[str],
    severities: list[int],
    measures: tuple[str, ...] = MEASURES,
) -> dict[str, dict]:
    """The one corruption table of the report and the analyses: ``probs(name, severity) -> (N, K)`` on the
    corrupted images with labels ``y (N,)`` -> ``{"corruptions": {name: {"1": {measure: v}, ...}}, "severity":
    {"1": mean over the corruptions, ...}, "mean": mean over every (corruption, severity)}``."""
    per = {n: {str(s): measure(probs(n, s), y, measures) for s in severities} for n in names}
    by_sev = {str(s): {m: statistics.fmean(per[n][str(s)][m] for n in names) for m in measures} for s in severities}
    entries = [v for d in per.values() for v in d.values()]
    overall = {m: statistics.fmean(v[m] for v in entries) for m in measures} if entries else {}
    return {"corruptions": per, "severity": by_sev, "mean": overall}


def corruption_results(
    src: Source, images: CorruptedImages, names: list[str], severities: list[int], test_y: Tensor
) -> dict:
    """``{"severity": {"0": clean, "1": mean over corruptions, ...}, "corruptions": {name: {"1": ..., ...}}}``,
    each entry ``{acc, nll, ece}``, on ``images`` (severity 0: the test images ``images.clean``, labels from the
    test split's ``test_y (N,)``)."""
    table = corruption_table(lambda n, s: mean_probs64(src.logits(key(n, s))), images.y, names, severities)
    clean = measure(mean_probs64(src.logits("test")[:, images.clean]), test_y[images.clean])
    return {"severity": {"0": clean, **table["severity"]}, "corruptions": table["corruptions"]}
