"""Weight- and function-space similarity of a teacher's members and of one member's epochs (Fort, Hu &
Lakshminarayanan 2019): cosine matrices of flattened weights, top-1 disagreement matrices, and t-SNE paths of the
members' function-space trajectories. :func:`similarity_analysis` and :func:`tsne_analysis` compute them for
:func:`~distill.analysis.landscape.analyze_landscape` and draw ``similarity.png`` and ``tsne.png``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from distill.analysis.common import FigureList, member_probs
from distill.analysis.trajectory import Trajectory, flat_params
from distill.data.subsets import eval_subset
from distill.metrics import accuracy


def cosine_matrix(vectors: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of flat vectors ``(F, F)``; NaN for pairs of different lengths."""
    f = len(vectors)
    if f and all(v.numel() == vectors[0].numel() for v in vectors):
        unit = torch.nn.functional.normalize(torch.stack(list(vectors)).double(), dim=1)
        return unit @ unit.T
    out = torch.full((f, f), float("nan"), dtype=torch.float64)
    for i in range(f):
        for j in range(f):
            if vectors[i].numel() == vectors[j].numel():
                a, b = vectors[i].double(), vectors[j].double()
                out[i, j] = (a @ b / (a.norm() * b.norm()).clamp_min(1e-30)).item()
    return out


def norm_mask(module: nn.Module) -> torch.Tensor:
    """``(P,)`` bool over :func:`flat_params`: True for the parameters of normalisation layers."""
    norms = (torch.nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    owned = {id(p) for m in module.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}
    return torch.cat([torch.full((p.numel(),), id(p) in owned) for p in module.parameters()])


def spread(n: int, at_most: int) -> list[int]:
    """At most ``at_most`` indices of ``range(n)``, evenly spaced, first and last included."""
    if n <= at_most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (at_most - 1)) for i in range(at_most)})


def disagreement_matrix(probs: torch.Tensor) -> torch.Tensor:
    """``probs (F, N, K)`` -> ``(F, F)``: the fraction of the N points whose top-1 labels differ."""
    pred = probs.argmax(-1)
    return (pred[:, None, :] != pred[None, :, :]).double().mean(-1)


def tsne_paths(probs: torch.Tensor, seed: int = 0) -> np.ndarray | None:
    """``probs (E, M, N, K)`` -> 2-D t-SNE coordinates ``(M, E, 2)`` of every (member, epoch) function, each the
    flattened ``(N * K)`` softmax outputs; None with fewer than 3 points."""
    from sklearn.manifold import TSNE

    e, m = probs.shape[:2]
    n = e * m
    if n < 3:
        return None
    x = probs.permute(1, 0, 2, 3).reshape(n, -1).double().numpy()
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        random_state=seed,
        method="exact" if n < 500 else "barnes_hut",
    )
    return tsne.fit_transform(x).reshape(m, e, 2)


def similarity_analysis(members, traj, f0, ev, o, figs) -> dict[str, Any]:
    """Weight cosine (with and without normalisation parameters) and disagreement across ``members`` on the
    trajectory's fixed images (else ``points`` validation images drawn class-stratified with ``subset_seed``) and,
    with a trajectory, across the epochs of member ``f0``; draws ``similarity.png``."""
    from matplotlib.figure import Figure

    if traj is not None:
        x, points = traj.x, "trajectory"
    else:
        x = ev.val_x[eval_subset(ev.val_y, o["points"], o["subset_seed"])]
        points = f"{len(x)} validation images drawn class-stratified (seed {o['subset_seed']})"
    probs = torch.stack([member_probs(net, x, ev.device, ev.bs) for net in members])
    res: dict[str, Any] = {
        "points": points,
        "members": {
            "weight_cosine": cosine_matrix([flat_params(net) for net in members]),
            # BatchNorm's scales start at 1 in every member and can dominate the flattened vector of a small
            # network (Fort et al.'s networks had no BatchNorm): the same without normalisation parameters
            "weight_cosine_without_norm": cosine_matrix([flat_params(net)[~norm_mask(net)] for net in members]),
            "disagreement": disagreement_matrix(probs),
        },
    }
    panels = [
        ("weight cosine, members", res["members"]["weight_cosine"], "member"),
        ("weight cosine without BatchNorm, members", res["members"]["weight_cosine_without_norm"], "member"),
        ("disagreement, members", res["members"]["disagreement"], "member"),
    ]
    if traj is not None:
        tp = traj.probs()  # (E, M, N, K)
        idx = spread(len(traj.epochs), o["max_epochs"])  # the E x E matrices on at most max_epochs epochs
        shown = [traj.epochs[i] for i in idx]
        epochs: dict[str, Any] = {"epochs": shown, "disagreement": disagreement_matrix(tp[idx, f0])}
        if traj.y is not None:
            epochs["accuracy_epochs"] = traj.epochs
            epochs["accuracy"] = [[accuracy(tp[e, m], traj.y) for e in range(len(tp))] for m in range(tp.shape[1])]
        if traj.has_weights:
            epochs["weight_cosine"] = cosine_matrix(traj.weights(f0, index=idx))
            panels.append((f"weight cosine, epochs of member {f0}", epochs["weight_cosine"], "epoch"))
        panels.append((f"disagreement, epochs of member {f0}", epochs["disagreement"], "epoch"))
        res["epochs"] = epochs
    fig = Figure(figsize=(3.6 * len(panels), 3.3))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, mat, what) in zip(axes, panels):
        im = ax.imshow(mat.numpy(), cmap="viridis", vmin=0 if "disagreement" in title else None)
        ticks = shown if what == "epoch" else list(range(mat.shape[0]))
        step = max(1, len(ticks) // 8)
        ax.set_xticks(range(0, len(ticks), step), [str(t) for t in ticks[::step]], fontsize=7)
        ax.set_yticks(range(0, len(ticks), step), [str(t) for t in ticks[::step]], fontsize=7)
        ax.set_xlabel(what, fontsize=8)
        ax.set_title(title, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    figs.save(fig, "similarity.png")
    return res


def tsne_analysis(traj: Trajectory, seed: int, figs: FigureList) -> dict[str, Any] | None:
    """:func:`tsne_paths` of the trajectory, drawn as ``tsne.png``; None with fewer than 3 points."""
    from matplotlib.figure import Figure

    coords = tsne_paths(traj.probs(), seed)
    if coords is None:
        return None
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    for m, path in enumerate(coords):
        (line,) = ax.plot(path[:, 0], path[:, 1], "-o", ms=3, lw=1, label=f"member {m}")
        ax.scatter(path[0, 0], path[0, 1], marker="*", s=160, color=line.get_color(), edgecolor="black", zorder=3)
        ax.scatter(path[-1, 0], path[-1, 1], marker="s", s=40, color=line.get_color(), edgecolor="black", zorder=3)
    ax.set_title("t-SNE of function-space trajectories (star: first epoch, square: last)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs.save(fig, "tsne.png")
    return {"epochs": traj.epochs, "coords": coords}
