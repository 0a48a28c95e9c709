"""``evaluate_runs``: load the runs, predict once, measure every model, write report.json, report.md and figures."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from distill import UserError
from distill.checkpoint import atomic_write_text
from distill.data.subsets import eval_subset
from distill.jsonio import to_plain, write_json
from distill.models.ensemble import to_channels_last
from distill.recipe import EvalCfg
from distill.report.controls import controls_entry
from distill.report.corruption import (
    CorruptedImages,
    check_severities,
    corruption_names,
    corruption_results,
    frost_source,
    made_here,
    released_cifar10c,
    sweep,
)
from distill.report.diversity import ATTRIBUTION_TARGET, diversity
from distill.report.evaluate import N_BINS, Reference, Source, higher_is_better, make_reference, model_metrics
from distill.report.gain import gain_table, teacher_gain, within_noise
from distill.report.intervals import Corrupted, Intervals, PerImage, bootstrap, intervals, model_per_image
from distill.report.markdown import render_markdown
from distill.report.members import mean_std
from distill.report.ood import (
    OODSet,
    check_ood_score,
    check_scores,
    load_ood_sets,
    ood_results,
    primary_score,
    with_primary,
)
from distill.report.perturbation import perturbation_summary
from distill.report.plots import Context, make_figures
from distill.report.predictions import Predictions
from distill.report.runs import Run, Runs, load_runs
from distill.report.subsets import report_subsets
from distill.report.summary import summary_row
from distill.report.uncertainty import uncertainty_results
from distill.students.readout import readout_for

FORMAT = "distill-report/1"
CONVENTIONS = {
    "ensemble_prediction": "the mean of the members' probabilities (never of their logits)",
    "split": "every metric on the test split; the temperature of cNLL / cBrier / cECE is fitted on the validation "
    "split (one per model, applied to the log of the averaged probabilities)",
    "ece_bins": N_BINS,
    "ood": "scores are higher for more in-distribution inputs; the in-distribution test split is the POSITIVE class "
    "(AUROC, AUPR-In; AUPR-Out takes OOD as positive with the negated score; FPR@95 = OOD accepted at 95% "
    "in-distribution recall)",
    "ood_single_network": "ensemble-only scores (neg_mi) are constant for one network: null",
    "dee": "deep-ensemble equivalent against sub-ensembles of the teacher's members (calibrated log-likelihood); "
    "floored at 1 and capped at the teacher's size M (no extrapolation)",
    "gain_share": "(model - baseline) / (teacher - baseline): 1 = keeps the whole teacher gain, 0 = no better than "
    "the baseline; null when the teacher is not better than the baseline (no gain to keep)",
    "ood_primary": "each model's OOD column, gain share and verdict read ONE score, declared by its kind before "
    "evaluation (max-softmax for one network, the members' mutual information for several; evaluate.ood_score "
    "overrides it per kind); the other scores are secondary columns. Nothing is chosen on the test split",
    "intervals": "95% (evaluate.confidence) paired percentile bootstrap over the test images (evaluate.bootstrap "
    "resamples, seeded): every model scored on the same resampled images; OOD sets and corrupted images resampled "
    "too; the temperature stays the validation one. A difference is 'within noise' when its interval holds 0; a "
    "share is '-' when the teacher's own gain is within noise. Test-set noise only: seeds are distill aggregate's",
    "members": "mean ± sample std (ddof=1) over the teacher's members, each evaluated as a model of its own",
    "attribution": ATTRIBUTION_TARGET,
    "corruption": "severity 0 = evaluate.corruption_limit test images drawn class-stratified (evaluate.subset_seed; "
    "subsets.corruption), clean; each severity averages the corruptions; made-here images: the same test images "
    "corrupted, image i of the draw's noise drawn from (evaluate.corruption_seed, i), independent of the batch size; "
    "evaluate.cifar10c: the released arrays' images drawn class-stratified from their labels with the same seed, "
    "the same for every corruption and severity (corruptions.source)",
    "selective": "AURC: area under the risk-coverage curve of the max predictive probability ranking (trapezoid "
    "over coverages 1/N..1, divided by 1 - 1/N, as torch-uncertainty); acc_cov90 / acc_cov95: accuracy on the 90% / "
    "95% most confident test images",
    "readout": "every model kind's mean member softmax is its predictive distribution (a Dirichlet student's "
    "softmax(z) = alpha / alpha_0); uncertainties (total, data, knowledge, nats) and OOD scores come from the kind's "
    "readout: entropy of the mean, mean entropy, mutual information for member logits; the Dirichlet closed forms "
    "for a Dirichlet student, whose neg_mi is -knowledge",
    "cost": "CPU, the deployed module (model + readout outputs), eval mode, no gradients, medians of round-robin "
    "timings after warm-up; FLOPs: matmuls and convolutions at batch 1 (2 per multiply-add); ONNX: the exported "
    "file under ONNX Runtime with the same thread count",
}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _predict(runs: Runs, sets: list[OODSet], cfg: EvalCfg, device: torch.device) -> dict[str, Predictions]:
    """Every model's logits on val, test and the OOD sets (the corruption sweep adds its sets later)."""
    s = runs.splits
    preds = {}
    for run in runs.all:
        p = preds[run.key] = Predictions(run.model, cfg.batch_size, device, readout_for(run.info.get("spec")))
        p.logits("val", s.val_x)
        p.logits("test", s.test_x)
        for o in sets:
            p.logits(o.key, o.x)
    return preds


@dataclasses.dataclass
class Measure:
    """What measuring one model needs besides its predictions."""

    ref: Reference
    sets: list[OODSet]
    scores: list[str]
    corruptions: list[str]
    severities: list[int]
    corrupted: CorruptedImages | None  # None when the sweep is off
    test_y: torch.Tensor  # the test split's labels; the sweep's severity 0 is its drawn images corrupted.clean

    def __call__(self, src: Source) -> dict[str, Any]:
        corr = None
        if self.corrupted is not None:
            corr = corruption_results(src, self.corrupted, self.corruptions, self.severities, self.test_y)
        return {
            "metrics": model_metrics(src, self.ref),
            "ood": ood_results(src, self.sets, self.scores),
            "uncertainty": uncertainty_results(src, self.sets),
            "corruption": corr,
        }


def _with_primary(results: dict[str, Any], score: str) -> dict[str, Any]:
    results["ood"] = with_primary(results["ood"], score)
    return results


def _members_entry(teacher: Predictions, measure: Measure, primary: str) -> dict[str, Any]:
    per_member = [measure(teacher.member(m)) for m in range(teacher.size)]
    mean, std = mean_std(per_member)
    entry = {"role": "members", "kind": "members", "size": teacher.size, "path": None, **_with_primary(mean, primary)}
    entry.update(diversity=None, perturbation=None, std=std, per_member=[r["metrics"] for r in per_member])
    return entry


def _run_entry(
    run: Run, preds: Predictions, measure: Measure, cfg: EvalCfg, runs: Runs, notes: list, primary: str
) -> dict:
    entry = {"role": run.role, "kind": run.kind, "size": run.size, "path": str(run.path)}
    entry.update(_with_primary(measure(preds), primary))
    div = None
    if run.size > 1:
        s = runs.splits
        div, more = diversity(
            run.model, preds, s.test_x, s.test_y, cfg.diversity_images, cfg.batch_size, cfg.subset_seed
        )
        notes += [f"{run.key}: {n}" for n in more]
    perturb = perturbation_summary(run.summary) if run.role == "student" else None
    if run.role == "student" and perturb is None:
        notes.append(f"{run.key}: no perturbation statistics in {run.path / 'summary.json'}.")
    seen = (run.summary or {}).get("data_seen") or {}
    entry["data_seen"] = seen or None
    if seen.get("transfer"):  # the student saw more than its teacher's training split
        t = seen["transfer"]
        notes.append(f"{run.key}: also learnt from {t['images']} transfer images ({t['path']}), teacher-labelled.")
    entry.update(diversity=div, perturbation=perturb, std=None, per_member=None)
    return entry


def _corruption_source(cfg: EvalCfg, runs: Runs, names: list[str], n: int) -> CorruptedImages:
    s = runs.splits
    idx = eval_subset(s.test_y, n, cfg.subset_seed)  # severity 0, and the images corrupted here: one draw
    if cfg.cifar10c is None:
        return made_here(
            s.test_x, s.test_y, idx, cfg.subset_seed, cfg.batch_size, cfg.corruption_seed, cfg.frost_images
        )
    if runs.recipe.data.name != "cifar10" or runs.recipe.data.holdout_classes:
        raise UserError("evaluate.cifar10c: the released CIFAR-10-C needs a CIFAR-10 teacher without held-out classes")
    return released_cifar10c(cfg.cifar10c, names, n, (s.meta.channels, *s.meta.size), cfg.subset_seed, idx)


def _dataset(runs: Runs) -> dict[str, Any]:
    s, data = runs.splits, runs.recipe.data
    return {
        "name": s.meta.name,
        "num_classes": s.meta.num_classes,
        "class_names": list(s.meta.class_names),
        "size": list(s.meta.size),
        "channels": s.meta.channels,
        "val": len(s.val_y),
        "test": len(s.test_y),
        "split_seed": data.split_seed,
        "holdout_classes": list(data.holdout_classes),
    }


class _Clock:
    """Wall-clock laps: ``lap(name)`` records the seconds since the previous lap."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 2)
        self._t = now


def _primaries(runs: Runs, cfg: EvalCfg) -> dict[str, str]:
    """Each model's declared OOD score (report/ood.py), fixed before any prediction; ``members``: one member's."""
    check_ood_score(cfg.ood_score)
    out = {"members": primary_score(readout_for(None), "ensemble", 1, cfg.ood_score)}
    for run in runs.all:
        out[run.key] = primary_score(readout_for(run.info.get("spec")), run.kind, run.size, cfg.ood_score)
    return out


def _intervals(
    preds: dict[str, Predictions],
    models: dict[str, dict],
    summary: dict[str, dict],
    baselines: list[str],
    students: list[str],
    sets: list[OODSet],
    top: Corrupted | None,
    cfg: EvalCfg,
    y: torch.Tensor,
) -> Intervals | None:
    """The paired bootstrap over the test images (report/intervals.py), or None when evaluate.bootstrap is 0."""
    if cfg.bootstrap == 0:
        return None
    set_keys = {s.name: s.key for s in sets}

    def one(src: Source, metrics: dict, score: str) -> PerImage:
        return model_per_image(src, y, metrics["temperature"], score, set_keys, top)

    teacher = preds["teacher"]
    primary = models["members"]["ood"]["primary"]["score"]
    per = {"members": [one(teacher.member(m), r, primary) for m, r in enumerate(models["members"]["per_member"])]}
    for key, p in preds.items():
        per[key] = one(p, models[key]["metrics"], models[key]["ood"]["primary"]["score"])
    samples = bootstrap(per, cfg.bootstrap, cfg.bootstrap_seed, None if top is None else top.key)
    return intervals(
        samples,
        summary,
        baselines,
        students,
        higher_is_better,
        resamples=cfg.bootstrap,
        seed=cfg.bootstrap_seed,
        confidence=cfg.confidence,
    )


def evaluate_runs(
    teacher: Path,
    students: list[Path],
    single: Path | None,
    out: Path,
    cfg: EvalCfg | None = None,
    controls: list[Path] | None = None,
) -> dict[str, Any]:
    """Compare a teacher ensemble, its students and a single-model baseline on the teacher's data; write
    ``out/report.json``, ``out/report.md`` and the PNG figures; return the report.

    ``cfg`` defaults to the teacher's recipe's ``evaluate`` section. Without ``single``, the teacher's mean member
    is the single-model baseline of the gain shares (and the report says so).
    """
    device = _device()
    runs = load_runs(teacher, students, single, device, controls or [])
    if runs.recipe.run.channels_last:
        # The layout the recipe trains in is the fast one for its data and architectures: the CIFAR-10 CPU
        # benchmark's networks predict 1.7x faster per image channels-last (docs/performance.md, "Evaluation
        # passes"). The cost table still times the deployed (contiguous) module.
        for run in runs.all:
            to_channels_last(run.model)
    cfg = cfg or runs.recipe.evaluate
    check_scores(cfg.ood_scores)
    primaries = _primaries(runs, cfg)
    names, severities = corruption_names(cfg.corruptions), check_severities(cfg.severities)
    n_corr = min(cfg.corruption_limit, len(runs.splits.test_y))
    swept = bool(names and severities and n_corr > 0)
    source = _corruption_source(cfg, runs, names, n_corr) if swept else None
    frost = frost_source(names, cfg.frost_images) if swept and cfg.cifar10c is None else None
    sets, notes = load_ood_sets(cfg.ood, runs.splits)
    notes = [*runs.notes, *notes]
    clock = _Clock()
    preds = _predict(runs, sets, cfg, device)
    clock.lap("predict")
    if source is not None:
        sweep(list(preds.values()), source, names, severities)
        clock.lap("corruptions")
    else:
        notes.append("corruption sweep off (evaluate.corruptions, severities or corruption_limit empty).")
    ref = make_reference(preds["teacher"], runs.splits.val_y, runs.splits.test_y)
    scores = list(dict.fromkeys([*cfg.ood_scores, *primaries.values()]))  # the declared scores always measured
    measure = Measure(ref, sets, scores, names, severities, source, runs.splits.test_y)
    models = {"members": _members_entry(preds["teacher"], measure, primaries["members"])}
    for run in runs.all:
        models[run.key] = _run_entry(run, preds[run.key], measure, cfg, runs, notes, primaries[run.key])
    controls_keys = [r.key for r in runs.controls]
    single_keys = ["single"] if runs.single is not None else []
    order = ["members", *single_keys, *controls_keys, "teacher", *(r.key for r in runs.students)]
    models = {k: models[k] for k in order}
    reference = "single" if runs.single is not None else "members"
    if runs.single is None:
        notes.append("no single-model run given: the teacher's mean member is the single-model baseline.")
    summary = {k: summary_row(e) for k, e in models.items()}
    clock.lap("metrics")
    students_keys = [r.key for r in runs.students]
    # the strongest control is chosen on the validation split (report/controls.py), never on test
    controls = controls_entry({k: preds[k].logits("val") for k in controls_keys}, runs.splits.val_y)
    baselines = [reference, *([controls["strongest"]] if controls["strongest"] else [])]
    top = Corrupted(source.y, names, max(severities)) if source is not None else None
    ivals = _intervals(preds, models, summary, baselines, students_keys, sets, top, cfg, runs.splits.test_y)
    gain = gain_table(summary, reference, students_keys)
    if ivals is not None:
        gain = within_noise(gain, ivals, reference)
    clock.lap("intervals")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig_files, fig_notes = make_figures(Context(models, preds, runs, sets, cfg, out, gain))
    clock.lap("figures")
    cost = None
    if cfg.cost.enabled:
        from distill.report.cost import measure_costs

        shape = (runs.splits.meta.channels, *runs.splits.meta.size)
        cost, cost_notes = measure_costs(runs.all, shape, cfg.cost, out, "single" if runs.single else None)
        notes += cost_notes
        clock.lap("cost")
    else:
        notes.append("inference cost table off (evaluate.cost.enabled: false).")
    report = {
        "format": FORMAT,
        "dataset": _dataset(runs),
        "runs": {
            "teacher": str(runs.teacher.path),
            "single": str(runs.single.path) if runs.single else None,
            "students": {r.key: str(r.path) for r in runs.students},
            "controls": {r.key: str(r.path) for r in runs.controls},
        },
        "controls": controls,
        "reference": reference,
        "config": dataclasses.asdict(cfg),
        "conventions": CONVENTIONS,
        "ood_sets": [{"name": s.name, "group": s.group, "images": len(s.x)} for s in sets],
        "corruptions": {
            "names": names if swept else [],
            "severities": severities if swept else [],
            "images": len(source.y) if source is not None else 0,
            "seed": cfg.corruption_seed if cfg.cifar10c is None else None,
            "frost": frost,
            "source": source.source if source is not None else None,
        },
        "dee_curve": ref.curve,
        "models": models,
        "summary": summary,
        "teacher_gain": teacher_gain(summary, reference),
        "gain_share": gain,
        "intervals": None if ivals is None else dataclasses.asdict(ivals),
        "cost": cost,
        "figures": fig_files,
        "subsets": report_subsets(cfg, runs, source, fig_files),
        "notes": notes + fig_notes,
        "seconds": clock.laps,  # wall time of each part of this report, for sizing a benchmark's evaluate section
    }
    report = to_plain(report)
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report
