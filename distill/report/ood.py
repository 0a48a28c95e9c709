"""Out-of-distribution detection: the OOD sets of the report, and every score x every set for one model.

Convention (from :mod:`distill.metrics.ood`): a score is higher for inputs that look more in-distribution, and
the in-distribution test split is the POSITIVE class: AUROC, AUPR-In (in-distribution positive), AUPR-Out (OOD
positive, negated score) and FPR@95 (the fraction of OOD inputs accepted at 95% in-distribution recall).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import Tensor

from distill import UserError
from distill.data import LOADERS, Splits, load_ood
from distill.metrics import OOD_SCORES, ood_metrics
from distill.recipe import OODSetCfg
from distill.report.evaluate import Source
from distill.students.readout import Readout

DETECTION = ("auroc", "aupr_in", "aupr_out", "fpr95")
GROUPS = ("near", "far")


@dataclass(frozen=True)
class OODSet:
    name: str
    group: str  # "near" | "far"
    x: Tensor  # uint8 images in the dataset's format

    @property
    def key(self) -> str:
        return f"ood/{self.name}"


def check_scores(names: list[str]) -> None:
    unknown = [n for n in names if n not in OOD_SCORES]
    if unknown:
        raise UserError(f"evaluate.ood_scores: unknown {unknown}; expected some of: {', '.join(OOD_SCORES)}")


def _load_one(cfg: OODSetCfg, splits: Splits) -> Tensor:
    """The set's images; UserError (the reason) when they cannot be had."""
    if cfg.name == "heldout":
        if splits.heldout_x is None or len(splits.heldout_x) == 0:
            raise UserError("no held-out classes (data.holdout_classes is empty)")
        return splits.heldout_x
    return load_ood(cfg.name, cfg.root, splits.meta)


def load_ood_sets(cfgs: list[OODSetCfg], splits: Splits) -> tuple[list[OODSet], list[str]]:
    """The OOD sets that can be loaded, and a note for each one skipped (e.g. its data root is missing).

    An unknown dataset name is a mistake in the recipe: a UserError. With no sets configured, the held-out
    classes (if any) are used as a near-OOD set.
    """
    notes = []
    if not cfgs and splits.heldout_x is not None and len(splits.heldout_x):
        cfgs = [OODSetCfg("heldout", group="near")]
        notes.append("evaluate.ood is empty: the held-out classes (data.holdout_classes) are used as a near-OOD set.")
    for c in cfgs:
        if c.name != "heldout" and c.name not in LOADERS:
            raise UserError(
                f"evaluate.ood: unknown dataset '{c.name}'; expected 'heldout' or one of: {sorted(LOADERS)}"
            )
    sets: list[OODSet] = []
    for c in cfgs:
        name, n = c.name, 2
        while any(s.name == name for s in sets):
            name, n = f"{c.name}_{n}", n + 1
        try:
            sets.append(OODSet(name, c.group, _load_one(c, splits)))
        except UserError as err:
            notes.append(f"OOD set '{c.name}' skipped: {err}")
    return sets, notes


def scores(src: Source, score: str, key: str) -> Tensor | None:
    """Score ``score`` of ``src`` on set ``key`` as its kind's readout reads it, or None where it is meaningless
    (an ensemble-only score of one softmax network; a Dirichlet student provides it)."""
    return src.readout.score(score, src.logits(key))


def _mean(rows: list[dict | None]) -> dict | None:
    if not rows or any(r is None for r in rows):
        return None
    return {k: statistics.fmean(r[k] for r in rows) for k in DETECTION}


def ood_results(src: Source, sets: list[OODSet], score_names: list[str]) -> dict:
    """``{"sets": {set: {score: metrics}}, "groups": {near|far: {score: mean metrics}}, "mean": {score: mean
    metrics over all sets}}``; a metrics dict is ``{auroc, aupr_in, aupr_out, fpr95}`` or None."""
    per_set: dict[str, dict] = {}
    for s in sets:
        row = {}
        for score in score_names:
            s_in, s_out = scores(src, score, "test"), scores(src, score, s.key)
            row[score] = None if s_in is None or s_out is None else ood_metrics(s_in, s_out)
        per_set[s.name] = row
    groups = {
        g: {score: _mean([per_set[s.name][score] for s in sets if s.group == g]) for score in score_names}
        for g in GROUPS
    }
    mean = {score: _mean([per_set[s.name][score] for s in sets]) for score in score_names}
    return {"sets": per_set, "groups": groups, "mean": mean}


def ood_kind(kind: str, size: int) -> str:
    """The key ``evaluate.ood_score`` overrides a model's declared score by: ``single`` for one softmax network
    (a model spec of kind ``ensemble`` with one member), else the model spec's kind."""
    return "single" if kind == "ensemble" and size == 1 else kind


def check_ood_score(overrides: dict[str, str]) -> None:
    """``evaluate.ood_score``: known kinds and known scores, before anything is loaded."""
    from distill.models import MODEL_KINDS

    kinds = ["single", *MODEL_KINDS]
    for kind, score in overrides.items():
        if kind not in kinds:
            raise UserError(f"evaluate.ood_score.{kind}: unknown model kind; expected some of: {', '.join(kinds)}")
        if score not in OOD_SCORES:
            raise UserError(
                f"evaluate.ood_score.{kind}: unknown score '{score}'; expected one of: {', '.join(OOD_SCORES)}"
            )


def primary_score(readout: Readout, kind: str, size: int, overrides: dict[str, str]) -> str:
    """The OOD score a model is judged by, fixed before evaluation: its kind's declaration
    (:meth:`~distill.students.readout.Readout.primary_score`) unless ``evaluate.ood_score`` names another.
    An ensemble-only score for one softmax network is a UserError (it would be constant)."""
    name = overrides.get(ood_kind(kind, size), readout.primary_score(size))
    if readout.score(name, torch.zeros(size, 1, 2)) is None:
        raise UserError(f"evaluate.ood_score.{ood_kind(kind, size)}: '{name}' is meaningless for a model of one member")
    return name


def with_primary(results: dict, name: str) -> dict:
    """``results["primary"] = {"score": name, "auroc": its mean AUROC over the sets}`` (None without sets). The
    primary is declared, never the best on test: the other scores stay in the tables as secondary."""
    mean = results["mean"].get(name)
    results["primary"] = {"score": name, "auroc": None if mean is None else mean["auroc"]}
    return results
