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
  parameters (:func:`~distill.analysis.similarity.norm_mask`).
* ``tsne.png``: t-SNE of the members' function-space trajectories, each epoch's softmax outputs on the fixed
  images flattened into one point, one path per member, first epoch marked.
* ``plane.png``: the diversity-accuracy plane (:mod:`distill.analysis.plane`) of subspace samples and of the
  other independent members against the reference member f0, on the test split.
* ``subspace.png``: ensembles of subspace samples vs the independent members (and, with ``combine_members``,
  both: every member's samples), accuracy / NLL / Brier on the clean test split and per corruption severity,
  averaged over corruptions (the paper uses CIFAR-10-C; here :mod:`distill.data.corruptions` on our data);
  ``independent_minus``: the independent members' ensemble minus each other ensemble, accuracy and NLL on the
  clean test split with a 95% paired bootstrap interval over the test images (the paper gives none).
* ``interpolation.png``: test and train loss, test accuracy and disagreement with both ends along the straight
  line ``(1 - t) w_i + t w_j`` between two members, ``t`` slightly beyond [0, 1].

BatchNorm statistics are recomputed on training images for every weight vector that is not a trained
member's (:func:`distill.analysis.samplers.recompute_bn`; interpolation end points included); the members
themselves keep their trained statistics (an exponential average over augmented batches), so a sample at
distance 0 from f0 is not exactly f0.

This module holds the options and the orchestration; the pieces are :mod:`~distill.analysis.similarity`
(similarity matrices, t-SNE), :mod:`~distill.analysis.subspace` (samplers' ensembles, the evaluator) and
:mod:`~distill.analysis.interpolation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill import UserError
from distill.analysis.common import FigureList, check_options, pick_device, scores
from distill.analysis.interpolation import interpolation_analysis
from distill.analysis.plane import plane_point, plot_plane
from distill.analysis.similarity import (  # noqa: F401  (norm_mask, spread: importable from here as before)
    cosine_matrix,
    disagreement_matrix,
    norm_mask,
    similarity_analysis,
    spread,
    tsne_analysis,
    tsne_paths,
)
from distill.analysis.subspace import (
    SAMPLERS,
    EnsembleGroup,
    Evaluator,
    draw_samples,
    paired_differences,
    plot_ensembles,
)
from distill.analysis.trajectory import Trajectory, load_trajectory, members_of
from distill.jsonio import to_plain, write_json
from distill.metrics import accuracy
from distill.runs import load_run, run_splits

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
    # the class-stratified draws of corruption_limit test, bn_images training and points validation images
    "subset_seed": 0,
    "tsne": True,
    "seed": 0,
    "device": None,
    "batch_size": 512,
    "resamples": 1000,  # paired bootstrap over test images: the independent ensemble minus each other ensemble
}


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    o = check_options("analyze_landscape", opts, DEFAULTS)
    bad = [s for s in o["samplers"] if s not in SAMPLERS]
    if bad:
        raise UserError(f"samplers: unknown {bad[0]!r}; expected some of: {', '.join(SAMPLERS)}")
    o["samplers"] = list(o["samplers"])
    r = o["resamples"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise UserError(f"analyze_landscape: option 'resamples' must be an integer >= 1, got {r!r}")
    return o


def analyze_landscape(teacher_dir: Path, out: Path, **opts: Any) -> dict[str, Any]:
    """Loss-landscape and function-space analyses of the teacher in ``teacher_dir``, written to ``out``
    (``landscape.json`` and PNG figures; see the module docstring). Options and defaults: :data:`DEFAULTS`.
    Returns what ``landscape.json`` holds."""
    o = _options(opts)
    teacher_dir, out = Path(teacher_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(o["seed"])
    run = load_run(teacher_dir)
    model, info = run.model, run.info
    if not model.separate_members:
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
    splits = run_splits(run.data)
    classes = splits.meta.num_classes
    traj = load_trajectory(teacher_dir)
    ev = Evaluator(splits, device, o)
    figs = FigureList(out, [])
    result = _header(teacher_dir, info, classes, f0, o, traj)

    # --- the trained members ----------------------------------------------------------------------
    groups: dict[str, EnsembleGroup] = {"single": EnsembleGroup(), "independent": EnsembleGroup()}
    member_test, result["members"] = _trained_members(members, f0, ev, groups)
    ref = member_test[f0]
    a0 = accuracy(ref, ev.test_y)
    ref_val = ev.val_acc(members[f0])

    result["similarity"] = similarity_analysis(members, traj, f0, ev, o, figs)
    if traj is not None and o["tsne"]:
        result["tsne"] = tsne_analysis(traj, o["seed"], figs)

    # --- subspace samples -------------------------------------------------------------------------
    plane_points: dict[str, list[dict[str, float]]] = {
        "independent": [plane_point(member_test[m], ref, ev.test_y) for m in range(m_count) if m != f0]
    }
    sampling = _Sampling(members, f0, traj, ev, o, ref, ref_val, torch.Generator().manual_seed(o["seed"]))
    result["samplers"] = _subspace_samples(sampling, groups, plane_points, result["notes"])
    result["ensembles"], result["independent_minus"] = _ensembles(groups, ev, o, figs)

    # --- the diversity-accuracy plane -------------------------------------------------------------
    drawn = plot_plane(plane_points, a0, classes, out / "plane.png")
    result["plane"] = {"a0": a0, "points": plane_points, "curves": drawn}
    figs.names.append("plane.png")

    # --- interpolation between two members ---------------------------------------------------------
    result["interpolation"] = interpolation_analysis(members, ev, o, figs, result["notes"])
    result["figures"] = figs.names
    result["subsets"] = ev.subsets
    result = to_plain(result)  # plain data: lists, floats, None for NaN
    write_json(out / "landscape.json", result)
    return result


def _ensembles(
    groups: dict[str, EnsembleGroup], ev: Evaluator, o: dict[str, Any], figs: FigureList
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every ensemble's scores (clean and corrupted; plotted), and the independent one minus each other."""
    ensembles = {g: grp.metrics(ev.test_y, ev.corr_y, ev.keys) for g, grp in groups.items() if grp.size}
    plot_ensembles(ensembles, figs)
    return ensembles, paired_differences(groups, "independent", ev.test_y, o["resamples"], o["seed"], 0.95)


def _header(
    teacher_dir: Path, info: dict[str, Any], classes: int, f0: int, o: dict[str, Any], traj: Trajectory | None
) -> dict[str, Any]:
    """The start of ``landscape.json``: what was analysed, with which options."""
    return {
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


def _trained_members(
    members: list[nn.Module], f0: int, ev: Evaluator, groups: dict[str, EnsembleGroup]
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Each member's test predictions and scores; every member joins ``groups["independent"]``, member ``f0``
    ``groups["single"]``."""
    member_test, member_rows = [], []
    for m, net in enumerate(members):
        test, corr = ev.test(net), ev.corrupted(net)
        member_test.append(test)
        groups["independent"].add(test, corr, ev.test_y)
        if m == f0:
            groups["single"].add(test, corr, ev.test_y)
        member_rows.append({"member": m, **scores(test, ev.test_y)})
    return member_test, member_rows


@dataclass
class _Sampling:
    """What every subspace sampler draws from: the members, the reference member ``f0`` (its test predictions
    ``ref`` and validation accuracy ``ref_val``), the trajectory, the options and one generator for all draws."""

    members: list[nn.Module]
    f0: int
    traj: Trajectory | None
    ev: Evaluator
    o: dict[str, Any]
    ref: Tensor
    ref_val: float
    gen: torch.Generator


def _subspace_samples(
    sp: _Sampling,
    groups: dict[str, EnsembleGroup],
    plane_points: dict[str, list[dict[str, float]]],
    notes: list[str],
) -> dict[str, Any]:
    """Every sampler's samples around the members (``samplers`` of ``landscape.json``); adds their ensembles to
    ``groups`` and ``f0``'s samples to the diversity plane's ``plane_points``."""
    sampled: dict[str, Any] = {}
    for name in sp.o["samplers"]:
        rows, solo, combined = _draw(sp, name, notes)
        if not rows:
            continue
        sampled[name] = {"samples": rows}
        plane_points[name] = [r["plane"] for r in rows if r["member"] == sp.f0]
        if solo.size:  # the ensemble of f0's samples (as many as the teacher has members, unless told otherwise)
            groups[name] = solo
        if sp.o["combine_members"]:  # every member's samples: independent solutions x subspace
            groups[f"independent+{name}"] = combined
    return sampled


def _draw(sp: _Sampling, name: str, notes: list[str]) -> tuple[list[dict[str, Any]], EnsembleGroup, EnsembleGroup]:
    """Sampler ``name``'s samples of ``f0`` (of every member with ``combine_members``): their score rows, the
    ensemble of ``f0``'s samples and the ensemble of all of them. A sampler that cannot draw adds a note."""
    ev, f0 = sp.ev, sp.f0
    n_samples = sp.o["samples"] or len(sp.members)
    rows, solo, combined = [], EnsembleGroup(), EnsembleGroup()
    for m in range(len(sp.members)) if sp.o["combine_members"] else [f0]:
        vecs, extra, why = draw_samples(
            name, sp.members[m], m, sp.traj, ev, sp.o, n_samples, sp.gen, sp.ref_val if m == f0 else None
        )
        if why:
            notes.append(f"{name} (member {m}): {why}")
            continue
        for i, vec in enumerate(vecs):
            net = ev.network(sp.members[m], vec)
            test, corr = ev.test(net), ev.corrupted(net)
            combined.add(test, corr, ev.test_y)
            row = {"member": m, **scores(test, ev.test_y), **(extra[i] if extra else {})}
            if m == f0:
                solo.add(test, corr, ev.test_y)
                row["plane"] = plane_point(test, sp.ref, ev.test_y)
            rows.append(row)
    return rows, solo, combined


__all__ = [
    "DEFAULTS",
    "SAMPLERS",
    "analyze_landscape",
    "cosine_matrix",
    "disagreement_matrix",
    "tsne_paths",
]
