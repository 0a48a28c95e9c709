"""The report's figures, as PNG files. Each function takes plain numbers, draws one figure and saves it.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from distill.metrics import ece, reliability

DPI = 110


def colour(i: int) -> str:
    return f"C{i % 10}"


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def reliability_figure(panels: list[tuple[str, Tensor, Tensor]], path: Path, n_bins: int = 15) -> None:
    """One reliability diagram per ``(title, probs (B, K), labels (B,))``, side by side."""
    fig = Figure(figsize=(3.2 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, probs, labels) in zip(axes, panels):
        r = reliability(probs, labels, n_bins)
        centres = ((r.edges[:-1] + r.edges[1:]) / 2).numpy()
        acc = np.nan_to_num(r.accuracy.numpy())
        conf = np.nan_to_num(r.confidence.numpy(), nan=0.0)
        ax.bar(centres, acc, width=1 / n_bins, edgecolor="black", color="C0", label="accuracy")
        gap = dict(facecolor=(0.84, 0.15, 0.16, 0.15), edgecolor="C3", hatch="//", label="gap to mean confidence")
        ax.bar(centres, conf - acc, bottom=acc, width=1 / n_bins, **gap)
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{title}\nECE {ece(probs, labels, n_bins):.3f}")
    axes[0].set_ylabel("accuracy")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle("Reliability diagrams (test split, before temperature scaling)")
    _save(fig, path)


def ood_histogram_figure(
    rows: list[tuple[str, list[tuple[str, Tensor, Tensor, float]]]], score: str, path: Path
) -> None:
    """Rows: OOD sets; columns: models ``(name, in-distribution scores, OOD scores, AUROC)``."""
    ncols = max(len(cols) for _, cols in rows)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (set_name, cols) in enumerate(rows):
        for c, (model, s_in, s_out, auroc) in enumerate(cols):
            ax = axes[r][c]
            both = torch.cat([s_in, s_out]).numpy()
            bins = np.linspace(both.min(), both.max() + 1e-9, 31)
            ax.hist(s_in.numpy(), bins=bins, density=True, alpha=0.55, color="C0", label="in-distribution (test)")
            ax.hist(s_out.numpy(), bins=bins, density=True, alpha=0.55, color="C3", label=f"OOD: {set_name}")
            ax.set(title=f"{model} vs {set_name}: AUROC {auroc:.3f}", xlabel=f"{score} (higher = more in-dist.)")
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
        for c in range(len(cols), ncols):
            axes[r][c].axis("off")
    fig.suptitle(f"OOD score histograms ({score})")
    _save(fig, path)


def corruption_figure(curves: list[tuple[str, list[int], list[float], list[float] | None]], path: Path) -> None:
    """Accuracy vs severity, one line per model ``(name, severities, accuracies, std or None)``."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for i, (name, sev, acc, std) in enumerate(curves):
        ax.plot(sev, acc, marker="o", color=colour(i), label=name)
        if std is not None:
            lo, hi = np.array(acc) - np.array(std), np.array(acc) + np.array(std)
            ax.fill_between(sev, lo, hi, color=colour(i), alpha=0.15)
    ax.set(xlabel="corruption severity (0 = clean)", ylabel="accuracy (mean over corruptions)")
    ax.set_xticks(curves[0][1])
    ax.set_title("Accuracy under corruption")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _image(x: Tensor) -> tuple[np.ndarray, str | None]:
    """uint8 ``(C, H, W)`` -> an array for imshow and its colour map."""
    return (x[0].numpy(), "gray") if x.shape[0] == 1 else (x.permute(1, 2, 0).numpy(), None)


def cam_grid_figure(x: Tensor, cams: list[Tensor], titles: list[str], path: Path) -> None:
    """The images ``x (N, C, H, W)`` uint8 in the first row, then one row per member: its Grad-CAM ``(N, h, w)``
    upsampled to the image size and overlaid on the image."""
    n, m = len(x), len(cams)
    fig = Figure(figsize=(1.5 * n + 0.6, 1.55 * (m + 1)), layout="constrained")
    axes = fig.subplots(m + 1, n, squeeze=False)
    for j in range(n):
        img, cmap = _image(x[j])
        axes[0][j].imshow(img, cmap=cmap)
        axes[0][j].set_title(titles[j], fontsize=8)
        for i, cam in enumerate(cams):
            up = F.interpolate(
                cam[j][None, None].float(), size=tuple(x.shape[2:]), mode="bilinear", align_corners=False
            )
            axes[i + 1][j].imshow(img, cmap=cmap)
            axes[i + 1][j].imshow(up[0, 0].numpy(), cmap="jet", alpha=0.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i, label in enumerate(["image", *[f"member {k + 1}" for k in range(m)]]):
        axes[i][0].set_ylabel(label, fontsize=9)
    fig.suptitle("Teacher members' Grad-CAM (true class; red = high)")
    _save(fig, path)


def perturbation_figure(stats: dict[str, dict], path: Path) -> None:
    """Per student, the teacher's mutual information and label disagreement on clean vs perturbed inputs."""
    names = list(stats)
    fig = Figure(figsize=(max(6.0, 1.6 * len(names) + 4), 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    pos, w = np.arange(len(names)), 0.38
    panels = [("mi", "mutual information (nats)"), ("disagree", "pairwise label disagreement")]
    for ax, (stat, ylabel) in zip(axes, panels):
        clean = [stats[s].get(f"{stat}_clean") or 0.0 for s in names]
        pert = [stats[s].get(f"{stat}_perturbed") or 0.0 for s in names]
        for bars in (
            ax.bar(pos - w / 2, clean, w, color="C0", label="clean"),
            ax.bar(pos + w / 2, pert, w, color="C3", label="perturbed"),
        ):
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.margins(y=0.25)
        ax.set_xticks(pos, names, rotation=20)
        ax.set(ylabel=ylabel, title=f"Teacher {ylabel.split(' (')[0]}")
        ax.legend(fontsize=8)
    fig.suptitle("The teacher's disagreement on the students' training inputs (mean over epochs)")
    _save(fig, path)


def gap_figure(panels: list[tuple[str, list[tuple[str, float, float | None]], bool]], path: Path) -> None:
    """The gap in one picture: one panel per metric, ``(metric, [(model, value, share or None)], higher_is_better)``
    with the models in order baseline (the single network), students..., teacher. Each panel is one value axis: the
    band from the baseline to the teacher is the gain to distil, and each student is a point on that axis with
    its share kept beside it."""
    n = len(panels)
    rows = max(len(models) for _, models, _ in panels)
    fig = Figure(figsize=(4.2 * n, 0.45 * rows + 1.4))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (metric, models, higher) in zip(axes, panels):
        lo, hi = models[0][1], models[-1][1]
        ax.axvspan(min(lo, hi), max(lo, hi), color="0.9", zorder=0)
        for i, (_, v, share) in enumerate(models):
            y = len(models) - 1 - i
            ends = i in (0, len(models) - 1)
            ax.plot([v], [y], "s" if ends else "o", color="k" if ends else colour(i), ms=7)
            text = f" {v:.3f}" + ("" if share is None else f"  ({share:+.0%} kept)")
            ax.annotate(text, (v, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_yticks(range(len(models)), [name for name, _, _ in reversed(models)])
        ax.set_ylim(-0.7, len(models) - 0.3)
        ax.set_title(f"{metric} ({'higher' if higher else 'lower'} is better)", fontsize=10)
        span = [v for _, v, _ in models]
        pad = (max(span) - min(span)) or 1e-3
        ax.set_xlim(min(span) - 0.15 * pad, max(span) + 0.9 * pad)  # room for the labels on the right
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
