"""Paired bootstrap intervals over the test images, for every comparison the report's verdict reads.

Every model is scored on the SAME resampled images (a paired bootstrap; Efron & Tibshirani 1993, ch. 13), so the
interval of a difference (``teacher - single``, ``student - single``) and of a gain share
``(student - base) / (teacher - base)`` carries this test set's sampling noise, and only that: seed-to-seed
variation is what ``distill aggregate`` measures across runs. Percentile intervals from ``resamples`` draws with
replacement (evaluate.bootstrap, 1,000 by default; seeded by evaluate.bootstrap_seed).

Resampled quantities, each a mean of per-image values or a statistic of resampled images:

- ``acc``, ``nll``, ``cnll`` (the temperature stays the one fitted on validation: it is not a test quantity),
  ``brier``: means over the test images;
- ``ood_auroc/primary``: the AUROC of each model's declared score (:mod:`distill.report.ood`), test images and
  each OOD set resampled independently (the OOD sets are samples too), averaged over the sets;
- ``corruption_acc/s<top>``: the accuracy at the top severity, averaged over the corruptions, the corrupted
  images resampled (each image with all its corrupted versions).

ECE, cECE and DEE are not means of per-image values; they get no interval, and the verdict does not read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from distill.metrics.calibration import temperature_log_probs
from distill.metrics.classification import EPS
from distill.report.corruption import key as corruption_key
from distill.report.evaluate import Source
from distill.report.predictions import log_mean_probs64, mean_probs64

CHUNK = 200  # resamples per batch: bounds the (resamples, images) weight matrices to ~10^8 bytes on CIFAR-10

Interval = tuple[float, float]


@dataclass(frozen=True)
class PerImage:
    """One model's per-image values on the test split, its OOD scores and its corrupted-image accuracy.

    ``values``: ``{metric: (N,) float64}`` whose mean is the metric; ``ood_in`` ``(N,)`` and ``ood_out``
    ``{set: (N_s,)}``: the declared score (higher = more in-distribution), or None (no score / no sets);
    ``corrupt``: ``(N_c,)`` accuracy of each corrupted image averaged over the corruptions, or None."""

    values: dict[str, Tensor]
    ood_in: Tensor | None = None
    ood_out: dict[str, Tensor] = field(default_factory=dict)
    corrupt: Tensor | None = None


def per_image(logits_test: Tensor, y: Tensor, temperature: float) -> dict[str, Tensor]:
    """``{acc, nll, cnll, brier}`` per test image from member logits ``(M, N, K)`` (the report's definitions:
    :mod:`distill.metrics.classification`; cNLL at the validation temperature)."""
    calibrated = temperature_log_probs(log_mean_probs64(logits_test), temperature)  # (N, K) log-probs
    v = per_image_of_probs(mean_probs64(logits_test), y)
    return {"acc": v["acc"], "nll": v["nll"], "cnll": -calibrated.gather(1, y[:, None]).squeeze(1), "brier": v["brier"]}


def per_image_of_probs(probs: Tensor, y: Tensor) -> dict[str, Tensor]:
    """``{acc, nll, brier}`` per image from a predictive distribution ``probs (N, K)``: ``(N,)`` float64 each."""
    probs = probs.double()
    p_y = probs.gather(1, y[:, None]).squeeze(1)
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).double()
    return {
        "acc": (probs.argmax(1) == y).double(),
        "nll": -p_y.clamp_min(EPS).log(),
        "brier": ((probs - onehot) ** 2).sum(1),
    }


def resample_weights(n: int, r: int, g: torch.Generator) -> Tensor:
    """``(r, n)`` float64 counts of each image in ``r`` resamples of ``n`` images with replacement."""
    idx = torch.randint(0, n, (r, n), generator=g)
    return torch.zeros(r, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(r, n, dtype=torch.float64))


def weighted_auroc(s_in: Tensor, s_out: Tensor, w_in: Tensor, w_out: Tensor) -> Tensor:
    """AUROC (in-distribution positive, higher score = more in-distribution; ties count 1/2) of each weighted
    sample: ``s_in (N_in,)``, ``s_out (N_out,)``, weights ``(R, N_in)``, ``(R, N_out)`` -> ``(R,)``.

    ``AUROC = sum_ij w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (sum w_i sum w_j)``: one sort of the pooled scores
    serves every resample (the OOD weight strictly below each distinct value is a cumulative sum)."""
    uniq, group = torch.unique(torch.cat([s_in, s_out]), return_inverse=True)
    g_in, g_out = group[: len(s_in)], group[len(s_in) :]
    out_w = torch.zeros(w_out.shape[0], len(uniq), dtype=torch.float64).index_add_(1, g_out, w_out)  # (R, G)
    below = out_w.cumsum(1) - out_w
    per_in = below[:, g_in] + 0.5 * out_w[:, g_in]  # (R, N_in): OOD weight beaten by each in-distribution image
    return (w_in * per_in).sum(1) / (w_in.sum(1) * w_out.sum(1))


def _rows(m: PerImage, w: Tensor, w_sets: dict[str, Tensor], w_corr: Tensor | None, top: str | None) -> dict:
    n = w.shape[1]
    rows = {metric: w @ v / n for metric, v in m.values.items()}
    if m.ood_in is not None and m.ood_out:
        aurocs = [weighted_auroc(m.ood_in, m.ood_out[s], w, w_sets[s]) for s in w_sets]
        rows["ood_auroc/primary"] = torch.stack(aurocs).mean(0)
    if w_corr is not None and m.corrupt is not None and top is not None:
        rows[top] = w_corr @ m.corrupt / w_corr.shape[1]
    return rows


def bootstrap(
    models: dict[str, PerImage | list[PerImage]], resamples: int, seed: int, top: str | None
) -> dict[str, dict[str, Tensor]]:
    """``{model: {metric: (resamples,) float64}}``: each metric recomputed on the same resampled images for
    every model. A list of :class:`PerImage` (the teacher's members) gives the mean of their metrics, as the
    report's members row. ``top``: the summary key of the corrupted accuracy (``corruption_acc/s5``), or None."""
    g = torch.Generator().manual_seed(seed)
    groups = {k: m if isinstance(m, list) else [m] for k, m in models.items()}
    first = next(iter(groups.values()))[0]
    n = len(next(iter(first.values.values())))
    sets = {s: len(v) for s, v in first.ood_out.items()}
    n_corr = None if first.corrupt is None else len(first.corrupt)
    out: dict[str, dict[str, list[Tensor]]] = {k: {} for k in groups}
    for start in range(0, resamples, CHUNK):
        r = min(CHUNK, resamples - start)
        w = resample_weights(n, r, g)
        w_sets = {s: resample_weights(k, r, g) for s, k in sets.items()}
        w_corr = None if n_corr is None else resample_weights(n_corr, r, g)
        for key, group in groups.items():
            per = [_rows(m, w, w_sets, w_corr, top) for m in group]
            for metric in per[0]:
                out[key].setdefault(metric, []).append(torch.stack([p[metric] for p in per]).mean(0))
    return {k: {metric: torch.cat(v) for metric, v in rows.items()} for k, rows in out.items()}


def percentile(samples: Tensor, confidence: float) -> Interval | None:
    """The percentile interval of the finite samples; None when fewer than 90% are finite (an undefined ratio)."""
    ok = samples[torch.isfinite(samples)]
    if len(ok) < 0.9 * len(samples) or len(ok) == 0:
        return None
    a = (1 - confidence) / 2
    q = torch.quantile(ok, torch.tensor([a, 1 - a], dtype=ok.dtype))
    return float(q[0]), float(q[1])


@dataclass(frozen=True)
class Comparison:
    """``model - base`` on one metric (``diff``, signed as the metric: not "better"), its interval, and whether
    the interval excludes 0 in the better direction (``better``), in the worse one (``worse``), or neither."""

    diff: float
    ci: Interval
    verdict: str  # "better" | "worse" | "within_noise"


@dataclass(frozen=True)
class Share:
    """The share of the teacher's gain over ``base`` kept; ``value`` and ``ci`` None with the ``reason`` when the
    teacher's own gain is within noise, or the share's interval is undefined."""

    value: float | None
    ci: Interval | None
    reason: str | None = None


def compare(a: Tensor, b: Tensor, point: float, higher_is_better: bool, confidence: float) -> Comparison:
    ci = percentile(a - b, confidence)
    assert ci is not None  # differences of finite means are finite
    lo, hi = ci
    better = lo > 0 if higher_is_better else hi < 0
    worse = hi < 0 if higher_is_better else lo > 0
    return Comparison(point, ci, "better" if better else "worse" if worse else "within_noise")


def share(
    student: Tensor, base: Tensor, teacher: Tensor, point: float | None, gain: Comparison, confidence: float
) -> Share:
    """The share's point value and percentile interval over the paired resamples; None with the reason when the
    teacher's gain over ``base`` is not beyond noise (a ratio over a gain that may be 0 is no number)."""
    if gain.verdict != "better":
        return Share(None, None, f"the teacher's gain over the baseline is {gain.verdict.replace('_', ' ')}")
    ci = percentile((student - base) / (teacher - base), confidence)
    if ci is None or point is None:
        return Share(None, None, "the share's interval is undefined (the teacher's gain is 0 in some resamples)")
    return Share(point, ci)


@dataclass(frozen=True)
class Intervals:
    """report.json's ``intervals``: each model's value interval, each model against each baseline, and each
    student's share of the teacher's gain over each baseline (the reference network, and the strongest control
    when the recipe has controls)."""

    method: str
    resamples: int
    seed: int
    confidence: float
    metrics: list[str]
    values: dict[str, dict[str, Interval | None]]  # model -> metric -> interval of its value
    versus: dict[str, dict[str, dict[str, Comparison]]]  # baseline -> model -> metric -> model - baseline
    shares: dict[str, dict[str, dict[str, Share]]]  # baseline -> student -> metric -> share of the teacher's gain


METHOD = "paired percentile bootstrap over the test images (OOD sets and corrupted images resampled too)"


def intervals(
    samples: dict[str, dict[str, Tensor]],
    summary: dict[str, dict[str, float | None]],
    baselines: list[str],
    students: list[str],
    higher_is_better: Callable[[str], bool],
    *,
    resamples: int,
    seed: int,
    confidence: float,
) -> Intervals:
    """Assemble :class:`Intervals` from :func:`bootstrap`'s ``samples`` and the report's point ``summary`` rows."""
    metrics = [k for k in samples["teacher"] if all(k in samples[b] for b in baselines)]
    values = {m: {k: percentile(v, confidence) for k, v in rows.items()} for m, rows in samples.items()}
    versus: dict[str, dict[str, dict[str, Comparison]]] = {}
    shares: dict[str, dict[str, dict[str, Share]]] = {}
    for b in baselines:
        others = [m for m in samples if m not in (b, "members")]
        versus[b] = {
            m: {
                k: compare(samples[m][k], samples[b][k], _diff(summary, m, b, k), higher_is_better(k), confidence)
                for k in metrics
                if k in samples[m]
            }
            for m in others
        }
        shares[b] = {}
        for s in students:
            if s == b:
                continue
            shares[b][s] = {
                k: share(
                    samples[s][k],
                    samples[b][k],
                    samples["teacher"][k],
                    _ratio(summary, s, b, k),
                    versus[b]["teacher"][k],
                    confidence,
                )
                for k in metrics
                if k in samples[s]
            }
    return Intervals(METHOD, resamples, seed, confidence, metrics, values, versus, shares)


def _diff(summary: dict[str, dict[str, float | None]], a: str, b: str, k: str) -> float:
    return float(summary[a][k]) - float(summary[b][k])  # type: ignore[arg-type]


def _ratio(summary: dict[str, dict[str, float | None]], s: str, b: str, k: str) -> float | None:
    gain = _diff(summary, "teacher", b, k)
    return None if gain == 0 else _diff(summary, s, b, k) / gain


@dataclass(frozen=True)
class Corrupted:
    """The sweep's top severity: labels of the corrupted images, the corruptions, and the severity."""

    y: Tensor  # (N_c,)
    names: list[str]
    severity: int

    @property
    def key(self) -> str:
        return f"corruption_acc/s{self.severity}"


def model_per_image(
    src: Source, y: Tensor, temperature: float, score: str | None, set_keys: dict[str, str], corrupted: Corrupted | None
) -> PerImage:
    """What :func:`bootstrap` resamples for one model: per-image metrics, its declared OOD score on the test split
    and on each OOD set (``set_keys``: set name -> prediction key), and its corrupted-image accuracy."""
    values = per_image(src.logits("test"), y, temperature)
    ood_in, ood_out = None, {}
    if score is not None and set_keys:
        ood_in = src.readout.score(score, src.logits("test"))
        ood_out = {name: src.readout.score(score, src.logits(k)) for name, k in set_keys.items()}
        if ood_in is None or any(v is None for v in ood_out.values()):
            ood_in, ood_out = None, {}
    corrupt = None
    if corrupted is not None:
        hits = [
            (mean_probs64(src.logits(corruption_key(n, corrupted.severity))).argmax(1) == corrupted.y).double()
            for n in corrupted.names
        ]
        corrupt = torch.stack(hits).mean(0)  # (N_c,): each image's accuracy over the corruptions
    return PerImage(values, ood_in, ood_out, corrupt)
