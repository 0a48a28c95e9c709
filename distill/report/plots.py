"""Which figures the report draws, and from what: picks the models and numbers, then calls :mod:`figures`.

Every figure is optional: one that has nothing to show (no OOD set, no student, the sweep turned off) is left out
with a note, and its entry in ``report["figures"]`` is None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.data import Splits
from distill.data.subsets import eval_subset
from distill.models.contract import missing_features
from distill.recipe import EvalCfg
from distill.report import figures
from distill.report.diversity import member_cams
from distill.report.evaluate import higher_is_better
from distill.report.ood import OODSet, scores
from distill.report.predictions import Predictions, mean_probs64
from distill.report.runs import Runs


@dataclass
class Context:
    models: dict[str, Any]  # the report's model entries
    preds: dict[str, Predictions]
    runs: Runs
    sets: list[OODSet]
    cfg: EvalCfg
    out: Path
    gain: dict[str, dict[str, float | None]]  # the report's gain shares (None where the teacher's gain is noise)

    @property
    def splits(self) -> Splits:
        return self.runs.splits


def _reliability(c: Context, path: Path) -> str | None:
    y = c.splits.test_y
    baseline = (
        ("single", c.preds["single"]) if "single" in c.preds else ("teacher member 1", c.preds["teacher"].member(0))
    )
    chosen = [("teacher", c.preds["teacher"]), baseline, *[(r.key, c.preds[r.key]) for r in c.runs.students]]
    figures.reliability_figure([(name, mean_probs64(p.logits("test")), y) for name, p in chosen], path)
    return None


def _ood_score(c: Context) -> str:
    """The teacher's declared score (report/ood.py): the histograms show what the OOD column reads, never the
    score that happened to do best on test."""
    return c.models["teacher"]["ood"]["primary"]["score"]


HISTOGRAM_STUDENTS = 3  # the recipe's first students, in its order (no choice on test)


def _ood_histograms(c: Context, path: Path) -> str | None:
    score = _ood_score(c) if c.sets else None
    if score is None:
        return "no OOD set to show: OOD score histograms left out."
    students = [r.key for r in c.runs.students if c.models[r.key]["ood"]["mean"].get(score) is not None]
    models = ["teacher", *students[:HISTOGRAM_STUDENTS]]
    rows = []
    for s in c.sets:
        cols = []
        for m in models:
            src = c.preds[m]
            auroc = c.models[m]["ood"]["sets"][s.name][score]["auroc"]
            cols.append((m, scores(src, score, "test").float(), scores(src, score, s.key).float(), auroc))
        rows.append((s.name, cols))
    figures.ood_histogram_figure(rows, score, path)
    return None


def _corruption(c: Context, path: Path) -> str | None:
    if not any(e.get("corruption") for e in c.models.values()):
        return "corruption sweep off: no corruption figure."
    curves = []
    for key, e in c.models.items():
        sev = e["corruption"]["severity"]
        std = (e.get("std") or {}).get("corruption")
        label = f"members (mean ± std of {e['size']})" if key == "members" else key
        std_acc = [std["severity"][k]["acc"] for k in sev] if std else None
        curves.append((label, [int(k) for k in sev], [sev[k]["acc"] for k in sev], std_acc))
    figures.corruption_figure(curves, path)
    return None


def _cam_grid(c: Context, path: Path) -> str | None:
    teacher = c.runs.teacher.model
    n = min(c.cfg.cam_images, len(c.splits.test_y))
    if n <= 0 or not teacher.separable_cams:
        return "no Grad-CAM grid (evaluate.cam_images is 0, or the teacher's member CAMs are not separable)."
    if (featureless := missing_features(teacher)) is not None:
        return f"no Grad-CAM grid: {featureless}."
    idx = eval_subset(c.splits.test_y, n, c.cfg.subset_seed)  # the split may be class-sorted: never its first n
    x, y = c.splits.test_x[idx], c.splits.test_y[idx]
    cams, pred = member_cams(teacher, x, y)
    names = c.splits.meta.class_names or tuple(str(k) for k in range(c.splits.meta.num_classes))
    titles = [f"true {names[int(a)]}\npred {names[int(b)]}" for a, b in zip(y, pred)]
    figures.cam_grid_figure(x, cams, titles, path)
    return None


def _perturbation(c: Context, path: Path) -> str | None:
    stats = {k: e["perturbation"] for k, e in c.models.items() if e.get("perturbation")}
    if not stats:
        return "no student logged perturbation statistics: no perturbation figure."
    figures.perturbation_figure(stats, path)
    return None


def _gap(c: Context, path: Path) -> str | None:
    from distill.report.summary import summary_row

    rows = {k: summary_row(e) for k, e in c.models.items()}
    base = "single" if "single" in rows else "members"
    students = [r.key for r in c.runs.students]
    controls = [r.key for r in c.runs.controls]  # marked, with no share: they are baselines, not students
    metrics = [("acc", "acc"), ("cnll", "cNLL")]
    if c.sets:
        metrics.append(("ood_auroc/primary", "OOD AUROC (declared scores)"))
    panels = []
    for key, label in metrics:
        if rows["teacher"].get(key) is None or rows[base].get(key) is None:
            continue  # no ends, no band: this metric is left out
        models = [(base, rows[base][key], None)]
        models += [(f"{k} (control)", rows[k][key], None) for k in controls if rows[k].get(key) is not None]
        models += [(s, rows[s][key], c.gain[s].get(key)) for s in students if rows[s].get(key) is not None]
        panels.append((label, [*models, ("teacher", rows["teacher"][key], None)], higher_is_better(key)))
    if not panels:
        return "nothing to compare: no gap figure."
    figures.gap_figure(panels, path)
    return None


DRAW = {
    "gap": _gap,
    "reliability": _reliability,
    "ood_histograms": _ood_histograms,
    "corruption": _corruption,
    "cam_grid": _cam_grid,
    "perturbation": _perturbation,
}


def make_figures(c: Context) -> tuple[dict[str, str | None], list[str]]:
    """Draw every figure into ``c.out``; returns ``{figure: file name or None}`` and notes on those left out."""
    files: dict[str, str | None] = {}
    notes = []
    for name, draw in DRAW.items():
        note = draw(c, c.out / f"{name}.png")
        files[name] = None if note else f"{name}.png"
        if note:
            notes.append(note)
    return files, notes
