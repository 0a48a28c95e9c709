"""Linear interpolation between two trained members: test and train loss, test accuracy and disagreement with
both ends along ``(1 - t) w_i + t w_j`` (``interpolation.png``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from distill.analysis.common import FigureList
from distill.analysis.subspace import Evaluator
from distill.analysis.trajectory import flat_params
from distill.metrics import accuracy, nll


def _arch(net: nn.Module) -> tuple:
    return tuple((k, tuple(v.shape)) for k, v in net.state_dict().items())


def interpolation_analysis(members, ev: Evaluator, o, figs: FigureList, notes: list[str]) -> dict[str, Any] | None:
    """Members ``o["pair"]`` at ``o["t_steps"]`` points of ``o["t_range"]`` (plus 0 and 1), BatchNorm recomputed
    at every point; draws ``interpolation.png``. None, with a note, unless two distinct, alike members."""
    from matplotlib.figure import Figure

    i, j = o["pair"]
    if len(members) < 2 or not (0 <= i < len(members) and 0 <= j < len(members)) or i == j:
        notes.append(f"interpolation: needs two distinct members, got pair {o['pair']} of {len(members)}")
        return None
    wi, wj = flat_params(members[i]), flat_params(members[j])
    if wi.numel() != wj.numel() or _arch(members[i]) != _arch(members[j]):
        notes.append(f"interpolation: members {i} and {j} have different architectures")
        return None
    lo, hi = o["t_range"]
    ts = sorted({float(t) + 0.0 for t in np.linspace(lo, hi, o["t_steps"]).round(6)} | {0.0, 1.0})  # no -0.0
    rows, probs = [], {}
    for t in ts:
        net = ev.network(members[i], (1 - t) * wi + t * wj)
        p = ev.test(net)
        probs[t] = p
        rows.append(
            {"t": t, "test_nll": nll(p, ev.test_y), "test_acc": accuracy(p, ev.test_y), "train_nll": ev.train_nll(net)}
        )
    for r in rows:
        pred = probs[r["t"]].argmax(-1)
        r["disagreement_i"] = (pred != probs[0.0].argmax(-1)).double().mean().item()
        r["disagreement_j"] = (pred != probs[1.0].argmax(-1)).double().mean().item()
    fig = Figure(figsize=(11, 3.3))
    axes = fig.subplots(1, 3)
    t = [r["t"] for r in rows]
    axes[0].plot(t, [r["test_nll"] for r in rows], "-o", ms=3, label="test")
    axes[0].plot(t, [r["train_nll"] for r in rows], "-s", ms=3, label="train")
    axes[0].set_title("loss (NLL)", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].plot(t, [r["test_acc"] for r in rows], "-o", ms=3)
    axes[1].set_title("test accuracy", fontsize=9)
    axes[2].plot(t, [r["disagreement_i"] for r in rows], "-o", ms=3, label=f"vs member {i} (t=0)")
    axes[2].plot(t, [r["disagreement_j"] for r in rows], "-s", ms=3, label=f"vs member {j} (t=1)")
    axes[2].set_title("disagreement", fontsize=9)
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.axvline(0, color="grey", lw=0.5)
        ax.axvline(1, color="grey", lw=0.5)
        ax.set_xlabel("t")
    fig.tight_layout()
    figs.save(fig, "interpolation.png")
    return {"members": [i, j], "points": rows, "weight_distance": (wi - wj).norm().item()}
