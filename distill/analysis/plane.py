"""The diversity-accuracy plane (Fort, Hu & Lakshminarayanan 2019, section 4.2 and figure 5).

Each function ``f`` is compared with a reference solution ``f0`` of accuracy ``a0`` on a ``C``-class problem:
``x = a`` (the accuracy of ``f``) and ``y = d(f, f0) / (1 - a)``, the fraction of test points whose top-1 labels
differ, normalised by the error of ``f`` (so that functions of different accuracy compare: a function that
changes only where it errs has ``y <= 1``).

Two reference curves, here derived and checked by simulation (tests/test_analysis_landscape.py), both divided by
``1 - a`` in the plot:

* ``upper(a) = a0 (1 - a) + a (1 - a0) + (1 - a0)(1 - a)(C - 2)/(C - 1)``: a function whose errors are
  independent of the reference's and spread uniformly over the ``C - 1`` wrong classes (disagreement: exactly one
  of the two is right, or both are wrong with different wrong labels). "Uncorrelated predictions".
* ``lower(a) = (a0 - a) / (a0 - (1 - a0)/(C - 1))``: the reference with a random fraction ``p`` of its predictions
  replaced by a different, uniformly drawn class. Then ``d = p`` and ``a = a0 - p (a0 - (1 - a0)/(C - 1))`` (a
  changed right answer becomes wrong; a changed wrong answer becomes right with probability ``1/(C - 1)``), which
  solves to the formula; it spans ``a`` from ``(1 - a0)/(C - 1)`` (p = 1) to ``a0`` (p = 0) and is undefined (NaN)
  outside. Replacing by a uniform class among all ``C`` (which may keep the label) traces the same curve. It is
  the least diverse way to lose accuracy *at random*, not the least diverse possible: any ``f`` has
  ``d >= |a - a0|`` (:func:`min_disagreement`), reached by breaking only right answers.

Both curves meet at chance, ``a = 1/C``, where ``d = (C - 1)/C`` and ``y = 1``.
"""

from __future__ import annotations

import numpy as np
import torch


def _arr(a):
    return np.asarray(a, dtype=np.float64)


def upper_limit(a, a0: float, num_classes: int):
    """Disagreement with the reference of a function of accuracy ``a`` whose errors are independent of it."""
    a, c = _arr(a), num_classes
    return a0 * (1 - a) + a * (1 - a0) + (1 - a0) * (1 - a) * (c - 2) / (c - 1)


def lower_limit(a, a0: float, num_classes: int):
    """Disagreement of the reference with a random fraction of its predictions changed; NaN outside
    ``[(1 - a0)/(C - 1), a0]``."""
    a, c = _arr(a), num_classes
    lo = (1 - a0) / (c - 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # a reference at chance (a0 = lo): no curve, NaN/inf
        d = (a0 - a) / (a0 - lo)
    return np.where((a >= lo - 1e-12) & (a <= a0 + 1e-12), d, np.nan)


def min_disagreement(a, a0: float):
    """The least disagreement any function of accuracy ``a`` can have with one of accuracy ``a0``: ``|a - a0|``."""
    return np.abs(_arr(a) - a0)


def normalised(d, a):
    """``d / (1 - a)`` (inf where ``a = 1``)."""
    a = _arr(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _arr(d) / (1 - a)


def limit_position(d, a, a0: float, num_classes: int):
    """Where disagreement ``d`` at accuracy ``a`` sits between the limits: 0 on the lower curve, 1 on the upper
    one (``(d - lower) / (upper - lower)``). Above ``a0``, where the lower curve is undefined, the floor is the
    strict minimum ``|a - a0|``. The paper's claims ("independent solutions sit near the upper limit, subspace
    samples near the lower one") read directly as positions near 1 and near 0."""
    a, d = _arr(a), _arr(d)
    low = lower_limit(a, a0, num_classes)
    floor = np.where(np.isnan(low), min_disagreement(a, a0), low)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (d - floor) / (upper_limit(a, a0, num_classes) - floor)


def plane_point(probs: torch.Tensor, ref_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``probs``, ``ref_probs``: ``(N, K)``; -> accuracy ``a``, disagreement ``d`` with the reference,
    ``y = d / (1 - a)`` and the :func:`limit_position` of ``(a, d)``."""
    pred, ref = probs.argmax(-1), ref_probs.argmax(-1)
    a = (pred == labels).double().mean().item()
    a0 = (ref == labels).double().mean().item()
    d = (pred != ref).double().mean().item()
    pos = float(limit_position(d, a, a0, probs.shape[-1]))
    return {"acc": a, "disagreement": d, "y": float(normalised(d, a)), "position": pos}


def curves(a0: float, num_classes: int, lo: float, hi: float, n: int = 200) -> dict[str, list[float]]:
    """The reference curves on ``n`` accuracies in ``[lo, hi]``, raw and divided by ``1 - a``."""
    a = np.linspace(lo, min(hi, 1 - 1e-6), n)
    up, low, least = upper_limit(a, a0, num_classes), lower_limit(a, a0, num_classes), min_disagreement(a, a0)
    return {
        "acc": a.tolist(),
        "upper": up.tolist(),
        "lower": low.tolist(),
        "upper_normalised": normalised(up, a).tolist(),
        "lower_normalised": normalised(low, a).tolist(),
        "min_normalised": normalised(least, a).tolist(),
    }


def plot_plane(
    points: dict[str, list[dict[str, float]]], a0: float, num_classes: int, path, title: str = ""
) -> dict[str, list[float]]:
    """Scatter ``points`` (group -> list of :func:`plane_point` dicts) with the reference curves; returns the
    curves drawn."""
    from matplotlib.figure import Figure

    accs = [p["acc"] for ps in points.values() for p in ps] + [a0]
    span = max(max(accs) - min(accs), 0.02)
    lo, hi = max(1 / num_classes, min(accs) - 0.3 * span), min(1.0, max(accs) + 0.3 * span)
    c = curves(a0, num_classes, lo, hi)
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
    ax.plot(c["acc"], c["upper_normalised"], "--", color="tab:blue", label="upper: uncorrelated errors")
    ax.plot(c["acc"], c["lower_normalised"], "--", color="tab:orange", label="lower: random changes of f0")
    ax.plot(c["acc"], c["min_normalised"], ":", color="grey", lw=0.8, label="|a - a0| (strict minimum)")
    markers = "osD^v<>PX*"
    for i, (group, ps) in enumerate(points.items()):
        if ps:
            ax.scatter(
                [p["acc"] for p in ps], [p["y"] for p in ps], s=22, marker=markers[i % len(markers)], label=group
            )
    ax.axvline(a0, color="black", lw=0.6)
    ys = [p["y"] for ps in points.values() for p in ps if np.isfinite(p["y"])]
    top = max([*ys, 1.0])
    ax.set_ylim(-0.02, 1.15 * top)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("accuracy a")
    ax.set_ylabel("disagreement with f0 / (1 - a)")
    ax.set_title(title or f"diversity-accuracy plane (a0 = {a0:.3f}, C = {num_classes})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return c
