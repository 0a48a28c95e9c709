"""Subspace ensembles of the landscape analysis: weight vectors drawn by each sampler of
:mod:`distill.analysis.samplers` around a member, evaluated (BatchNorm recomputed) on the test split and its
corrupted copies, and ensembled against the independent members (``subspace.png``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.analysis.common import FigureList, corruption_scores, corruption_set, member_probs, scores
from distill.analysis.samplers import (
    DiagonalGaussian,
    DropoutSubspace,
    LowRankGaussian,
    RandomSubspace,
    WeightAverage,
    recompute_bn,
    set_flat_params,
)
from distill.analysis.trajectory import Trajectory, flat_params
from distill.data.subsets import eval_subset, subset_record
from distill.metrics import accuracy, nll
from distill.report.intervals import per_image_of_probs, percentile, resample_weights

SAMPLERS = ("average", "diagonal", "low_rank", "random", "dropout")
TRAJECTORY_SAMPLERS = {"average", "diagonal", "low_rank"}  # need recorded weights


class EnsembleGroup:
    """Running sums of the predictive distributions of an ensemble of functions."""

    def __init__(self) -> None:
        self.size, self.test, self.corr, self.member_acc = 0, None, None, []

    def add(self, test: torch.Tensor, corr: torch.Tensor, test_y: torch.Tensor) -> None:
        self.size += 1
        self.test = test.double() if self.test is None else self.test + test
        self.corr = corr.double() if self.corr is None else self.corr + corr
        self.member_acc.append(accuracy(test, test_y))

    def metrics(self, test_y: torch.Tensor, corr_y: torch.Tensor, keys: list) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "member_acc_mean": float(np.mean(self.member_acc))}
        out["clean"] = scores(self.test / self.size, test_y)
        if keys:
            out["corrupted"] = corruption_scores(self.corr / self.size, corr_y, keys)
        return out


def paired_differences(
    groups: dict[str, EnsembleGroup], ref: str, labels: torch.Tensor, resamples: int, seed: int, confidence: float
) -> dict[str, dict[str, dict[str, Any]]]:
    """``ref``'s ensemble minus each other group's on the clean test split: ``{group: {acc | nll: {diff, ci}}}``,
    ``ci`` the percentile interval of a paired bootstrap over the test images (the same resamples for every
    group; :mod:`distill.report.intervals`). Fort et al. report one run; this is what one seed can say."""
    per = {k: per_image_of_probs(g.test / g.size, labels) for k, g in groups.items() if g.size}
    if ref not in per:
        return {}
    w = resample_weights(len(labels), resamples, torch.Generator().manual_seed(seed))  # (R, N)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, values in per.items():
        if name == ref:
            continue
        out[name] = {}
        for metric in ("acc", "nll"):
            delta = per[ref][metric] - values[metric]  # (N,)
            out[name][metric] = {
                "diff": float(delta.mean()),
                "ci": percentile(w @ delta / len(labels), confidence),
            }
    return out


class Evaluator:
    """Evaluates networks on the test split, its corrupted copies and training data, on one device.

    The corrupted test images and the BatchNorm training images are drawn class-stratified with
    ``opts["subset_seed"]`` (the splits may be class-sorted: their heads would be the first classes only);
    ``subsets`` records both draws."""

    def __init__(self, splits, device, opts: dict[str, Any]) -> None:
        self.device, self.bs = device, opts["batch_size"]
        self.test_x, self.test_y = splits.test_x, splits.test_y
        seed, k = opts["subset_seed"], splits.meta.num_classes
        idx = eval_subset(splits.test_y, opts["corruption_limit"], seed)
        self.corr_y = splits.test_y[idx]
        self.corr_x, self.keys = corruption_set(
            splits.test_x[idx], opts["corruptions"], opts["severities"], opts["seed"]
        )
        n_bn = len(splits.train_y) if opts["bn_images"] is None else opts["bn_images"]
        idx = eval_subset(splits.train_y, n_bn, seed)
        # shuffled too: recompute_bn averages per-batch variances, and batches of a class-sorted draw would hold
        # one class each, their within-class variance far below the whole data's
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
        self.bn_x, self.bn_y = splits.train_x[idx], splits.train_y[idx]
        self.subsets = {"corruption": subset_record(self.corr_y, seed, k), "bn": subset_record(self.bn_y, seed, k)}
        self.val_x, self.val_y = splits.val_x, splits.val_y
        self.bn_batch = opts["bn_batch_size"]

    def network(self, template: nn.Module, vec: torch.Tensor) -> nn.Module:
        """A copy of ``template`` with weights ``vec`` and BatchNorm statistics recomputed on training data."""
        net = copy.deepcopy(template).to(self.device)
        set_flat_params(net, vec)
        recompute_bn(net, self.bn_x, self.bn_batch, self.device)
        return net.eval()

    def test(self, net: nn.Module) -> torch.Tensor:
        return member_probs(net, self.test_x, self.device, self.bs)

    def corrupted(self, net: nn.Module) -> torch.Tensor:
        if not self.keys:
            return torch.zeros(0)
        return member_probs(net, self.corr_x, self.device, self.bs)

    def val_acc(self, net: nn.Module) -> float:
        return accuracy(member_probs(net, self.val_x, self.device, self.bs), self.val_y)

    def train_nll(self, net: nn.Module) -> float:
        return nll(member_probs(net, self.bn_x, self.device, self.bs), self.bn_y)


def draw_samples(
    name: str,
    template: nn.Module,
    member: int,
    traj: Trajectory | None,
    ev: Evaluator,
    o: dict[str, Any],
    n: int,
    gen: torch.Generator,
    ref_val: float | None,
) -> tuple[list[torch.Tensor], list[dict] | None, str | None]:
    """Weight vectors of sampler ``name`` for ``member``: (vectors, per-vector records or None, reason skipped)."""
    w_final = flat_params(template)
    if name in TRAJECTORY_SAMPLERS:
        if traj is None or not traj.has_weights:
            return [], None, "needs a trajectory with weights (teacher.record_weights)"
        w = traj.weights(member, last=o["k"])
        if w.shape[1] != w_final.numel():
            return [], None, f"trajectory weights have {w.shape[1]} entries, the member {w_final.numel()}"
        if name == "average":
            return WeightAverage(w).sample(1), None, None
        if len(w) < 2:
            return [], None, f"needs at least 2 recorded epochs, found {len(w)}"
        sampler = DiagonalGaussian(w) if name == "diagonal" else LowRankGaussian(w, o["rank"])
        extra = None if name == "diagonal" else [{"rank": sampler.rank}] * n
        return list(sampler.sample(n, gen)), extra, None
    if name == "dropout":
        return list(DropoutSubspace(w_final, o["dropout_p"]).sample(n, gen)), [{"p": o["dropout_p"]}] * n, None
    # random subspace, with the validation-accuracy threshold
    if ref_val is None:
        ref_val = ev.val_acc(template)
    threshold = o["random_min_acc_ratio"] * ref_val
    sampler = RandomSubspace(w_final, o["random_radius"] * w_final.norm().item(), o["random_max_tries"])
    vals: list[float] = []

    def accept(vec: torch.Tensor) -> bool:
        acc = ev.val_acc(ev.network(template, vec))
        vals.append(acc)
        return acc >= threshold

    kept, records = sampler.draw(n, gen, accept)
    accepted = [r for r in records if r["accepted"]]
    # the validation accuracy of each accepted draw is the last one evaluated before it was accepted
    tries_end = np.cumsum([r["tries"] for r in records])
    for r, end in zip(records, tries_end):
        r["val_acc"] = vals[end - 1]
        r["threshold"] = threshold
    if not kept:
        return [], None, f"no draw kept validation accuracy >= {threshold:.3f} in {o['random_max_tries']} halvings"
    return kept, accepted, None


def plot_ensembles(ensembles: dict[str, Any], figs: FigureList) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    for ax, metric in zip(axes, ("acc", "nll", "brier")):
        for name, e in ensembles.items():
            xs, ys = [0], [e["clean"][metric]]
            for sev, v in (e.get("corrupted", {}).get("severity") or {}).items():
                xs.append(int(sev))
                ys.append(v[metric])
            style = "-o" if name in ("independent", "single") else "--s"
            ax.plot(xs, ys, style, ms=3, label=f"{name} ({e['size']})")
        ax.set_xlabel("corruption severity (0: clean)")
        ax.set_title(metric, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    figs.save(fig, "subspace.png")
