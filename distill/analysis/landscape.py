"""Function space and loss landscape of a trained teacher (Fort, Hu & Lakshminarayanan 2019, "Deep Ensembles: A
Loss Landscape Perspective", arXiv 1912.02757).

:func:`analyze_landscape` reads a teacher run (its selected model and, when recorded, its trajectory:
:mod:`distill.analysis.trajectory`) and writes ``landscape.json`` plus figures:

* ``similarity.png``: cosine similarity of the flattened weights and pairwise top-1 disagreement on the
  trajectory's fixed images, across members (the selected model) and across the epochs of one member. The
  paper's observation: checkpoints of one trajectory drift apart in weight space yet keep agreeing in function
  space, while independent runs are near-orthogonal in weights and disagree in function. With BatchNorm the
  all-weights cosine of independent members is inflated by the normalisation scales (initialised to 1 in every
  member; in a small CNN they can outweigh the convolutions), hence also a cosine without normalisation
  parameters (:func:`norm_mask`).
* ``tsne.png``: t-SNE of the members' function-space trajectories, each epoch's softmax outputs on the fixed
  images flattened into one point, one path per member, first epoch marked.
* ``plane.png``: the diversity-accuracy plane (:mod:`distill.analysis.plane`) of subspace samples and of the
  other independent members against the reference member f0, on the test split.
* ``subspace.png``: ensembles of subspace samples vs the independent members (and, with ``combine_members``,
  both: every member's samples), accuracy / NLL / Brier on the clean test split and per corruption severity,
  averaged over corruptions (the paper uses CIFAR-10-C; here :mod:`distill.data.corruptions` on our data).
* ``interpolation.png``: test and train loss, test accuracy and disagreement with both ends along the straight
  line ``(1 - t) w_i + t w_j`` between two members, ``t`` slightly beyond [0, 1].

BatchNorm statistics are recomputed on training images for every weight vector that is not a trained
member's (:func:`distill.analysis.samplers.recompute_bn`; interpolation end points included); the members
themselves keep their trained statistics (an exponential average over augmented batches), so a sample at
distance 0 from f0 is not exactly f0.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill import UserError
from distill.analysis.common import (
    FigureList,
    corruption_scores,
    corruption_set,
    jsonable,
    load_run,
    member_probs,
    pick_device,
    run_splits,
    scores,
    write_json,
)
from distill.analysis.plane import plane_point, plot_plane
from distill.analysis.samplers import (
    DiagonalGaussian,
    DropoutSubspace,
    LowRankGaussian,
    RandomSubspace,
    WeightAverage,
    recompute_bn,
    set_flat_params,
)
from distill.analysis.trajectory import Trajectory, flat_params, load_trajectory, members_of
from distill.metrics import accuracy, nll
from distill.models.ensemble import Ensemble

SAMPLERS = ("average", "diagonal", "low_rank", "random", "dropout")
TRAJECTORY_SAMPLERS = {"average", "diagonal", "low_rank"}  # need recorded weights


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


class _Group:
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


class _Evaluator:
    """Evaluates networks on the test split, its corrupted copies and training data, on one device."""

    def __init__(self, splits, device, opts: dict[str, Any]) -> None:
        self.device, self.bs = device, opts["batch_size"]
        self.test_x, self.test_y = splits.test_x, splits.test_y
        n_c = min(opts["corruption_limit"], len(self.test_y))
        self.corr_y = splits.test_y[:n_c]
        self.corr_x, self.keys = corruption_set(
            splits.test_x[:n_c], opts["corruptions"], opts["severities"], opts["seed"]
        )
        n_bn = len(splits.train_y) if opts["bn_images"] is None else min(opts["bn_images"], len(splits.train_y))
        self.bn_x, self.bn_y = splits.train_x[:n_bn], splits.train_y[:n_bn]
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


DEFAULTS: dict[str, Any] = {
    "member": 0,  # the reference member f0 whose trajectory is sampled
    "k": 5,  # last k checkpoints of the trajectory for the averaging / Gaussian samplers
    "samples": None,  # samples per sampler (None: the teacher's number of members, for equal-size ensembles)
    "samplers": SAMPLERS,
    "rank": 5,  # low-rank Gaussian: PCA rank
    "random_radius": 0.5,  # random subspace: t_max as a fraction of ||w_final||
    "random_min_acc_ratio": 0.9,  # random subspace: keep a sample when val acc >= ratio * val acc of f0
    "random_max_tries": 6,  # halvings of t before a random-subspace sample is given up
    "dropout_p": 0.1,
    "combine_members": False,  # also sample every other member and ensemble all members' samples
    "pair": (0, 1),  # members interpolated
    "t_range": (-0.2, 1.2),
    "t_steps": 15,
    "max_epochs": 50,  # epochs shown in the epoch x epoch similarity matrices (evenly spaced, last included)
    "points": 500,  # fixed images for the similarity matrices when no trajectory was recorded
    "bn_images": 2048,  # training images for the BatchNorm recomputation (None: all)
    "bn_batch_size": 256,
    "corruptions": None,  # None: all 15; [] skips the corrupted evaluation
    "severities": (1, 2, 3, 4, 5),
    "corruption_limit": 500,  # test images corrupted
    "tsne": True,
    "seed": 0,
    "device": None,
    "batch_size": 512,
}


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise UserError(f"analyze_landscape: unknown option {unknown[0]!r}; expected one of: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS, **opts}
    bad = [s for s in o["samplers"] if s not in SAMPLERS]
    if bad:
        raise UserError(f"samplers: unknown {bad[0]!r}; expected some of: {', '.join(SAMPLERS)}")
    o["samplers"] = list(o["samplers"])
    o["severities"] = [int(s) for s in o["severities"]]
    o["corruptions"] = None if o["corruptions"] is None else list(o["corruptions"])
    return o


def analyze_landscape(teacher_dir: Path, out: Path, **opts: Any) -> dict[str, Any]:
    """Loss-landscape and function-space analyses of the teacher in ``teacher_dir``, written to ``out``
    (``landscape.json`` and PNG figures; see the module docstring). Options and defaults: :data:`DEFAULTS`.
    Returns what ``landscape.json`` holds."""
    o = _options(opts)
    teacher_dir, out = Path(teacher_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(o["seed"])
    model, info, data_cfg = load_run(teacher_dir)
    if not isinstance(model, Ensemble):
        raise UserError(
            f"{teacher_dir}: a teacher ensemble is needed (members with weights of their own), got {info.get('spec')}"
        )
    members = members_of(model)
    m_count = len(members)
    f0 = o["member"]
    if not 0 <= f0 < m_count:
        raise UserError(f"member {f0}: the teacher has members 0..{m_count - 1}")
    device = pick_device(o["device"])
    model.to(device)
    splits = run_splits(data_cfg)
    classes = splits.meta.num_classes
    traj = load_trajectory(teacher_dir)
    ev = _Evaluator(splits, device, o)
    figs = FigureList(out, [])
    result: dict[str, Any] = {
        "teacher": str(teacher_dir),
        "spec": info.get("spec"),
        "objective": info.get("objective"),
        "num_classes": classes,
        "member": f0,
        "options": {k: v for k, v in o.items() if k != "device"},
        "trajectory": None
        if traj is None
        else {"epochs": traj.epochs, "images": len(traj.x), "weights": traj.has_weights},
        "notes": [],
    }

    # --- the trained members ----------------------------------------------------------------------
    groups: dict[str, _Group] = {"single": _Group(), "independent": _Group()}
    member_test, member_rows = [], []
    for m, net in enumerate(members):
        test, corr = ev.test(net), ev.corrupted(net)
        member_test.append(test)
        groups["independent"].add(test, corr, ev.test_y)
        if m == f0:
            groups["single"].add(test, corr, ev.test_y)
        member_rows.append({"member": m, **scores(test, ev.test_y)})
    result["members"] = member_rows
    ref = member_test[f0]
    a0 = accuracy(ref, ev.test_y)
    ref_val = ev.val_acc(members[f0])

    result["similarity"] = _similarity(members, traj, f0, ev, o, figs)
    if traj is not None and o["tsne"]:
        result["tsne"] = _tsne(traj, o["seed"], figs)

    # --- subspace samples -------------------------------------------------------------------------
    n_samples = o["samples"] or m_count
    gen = torch.Generator().manual_seed(o["seed"])
    plane_points: dict[str, list[dict[str, float]]] = {
        "independent": [plane_point(member_test[m], ref, ev.test_y) for m in range(m_count) if m != f0]
    }
    sampled: dict[str, Any] = {}
    sampled_members = range(m_count) if o["combine_members"] else [f0]
    for name in o["samplers"]:
        rows, solo, combined = [], _Group(), _Group()
        for m in sampled_members:
            vecs, extra, why = _draw(name, members[m], m, traj, ev, o, n_samples, gen, ref_val if m == f0 else None)
            if why:
                result["notes"].append(f"{name} (member {m}): {why}")
                continue
            for i, vec in enumerate(vecs):
                net = ev.network(members[m], vec)
                test, corr = ev.test(net), ev.corrupted(net)
                combined.add(test, corr, ev.test_y)
                row = {"member": m, **scores(test, ev.test_y), **(extra[i] if extra else {})}
                if m == f0:
                    solo.add(test, corr, ev.test_y)
                    row["plane"] = plane_point(test, ref, ev.test_y)
                rows.append(row)
        if not rows:
            continue
        sampled[name] = {"samples": rows}
        plane_points[name] = [r["plane"] for r in rows if r["member"] == f0]
        if solo.size:  # the ensemble of f0's samples (as many as the teacher has members, unless told otherwise)
            groups[name] = solo
        if o["combine_members"]:  # every member's samples: independent solutions x subspace
            groups[f"independent+{name}"] = combined
    result["samplers"] = sampled
    result["ensembles"] = {g: grp.metrics(ev.test_y, ev.corr_y, ev.keys) for g, grp in groups.items() if grp.size}
    _plot_ensembles(result["ensembles"], figs)

    # --- the diversity-accuracy plane -------------------------------------------------------------
    result["plane"] = {"a0": a0, "points": plane_points}
    drawn = plot_plane(plane_points, a0, classes, out / "plane.png")
    figs.names.append("plane.png")
    result["plane"]["curves"] = drawn

    # --- interpolation between two members ---------------------------------------------------------
    result["interpolation"] = _interpolate(members, ev, o, figs, result["notes"])
    result["figures"] = figs.names
    result = jsonable(result)  # plain data: lists, floats, None for NaN
    write_json(out / "landscape.json", result)
    return result


# ---------------------------------------------------------------------------------------------------------------


def _draw(
    name: str,
    template: nn.Module,
    member: int,
    traj: Trajectory | None,
    ev: _Evaluator,
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


def _similarity(members, traj, f0, ev, o, figs) -> dict[str, Any]:
    from matplotlib.figure import Figure

    x = traj.x if traj is not None else ev.val_x[: o["points"]]
    probs = torch.stack([member_probs(net, x, ev.device, ev.bs) for net in members])
    res: dict[str, Any] = {
        "points": "trajectory" if traj is not None else f"first {len(x)} validation images",
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


def _tsne(traj: Trajectory, seed: int, figs: FigureList) -> dict[str, Any] | None:
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


def _plot_ensembles(ensembles: dict[str, Any], figs: FigureList) -> None:
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


def _arch(net: nn.Module) -> tuple:
    return tuple((k, tuple(v.shape)) for k, v in net.state_dict().items())


def _interpolate(members, ev: _Evaluator, o, figs: FigureList, notes: list[str]) -> dict[str, Any] | None:
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


__all__ = [
    "DEFAULTS",
    "SAMPLERS",
    "analyze_landscape",
    "cosine_matrix",
    "disagreement_matrix",
    "tsne_paths",
]
