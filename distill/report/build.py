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
from distill.jsonio import write_json
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
from distill.report.runs import RunDir, Runs, load_runs
from distill.report.schema import (
    Comparisons,
    Controls,
    Corruptions,
    Cost,
    Dataset,
    ModelRow,
    OODSetInfo,
    Report,
    RunPaths,
    Subset,
)
from distill.report.subsets import report_subsets
from distill.report.summary import summary_row
from distill.report.uncertainty import uncertainty_results
from distill.students.readout import readout_for

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


def _members_entry(teacher: Predictions, measure: Measure, primary: str) -> ModelRow:
    per_member = [measure(teacher.member(m)) for m in range(teacher.size)]
    mean, std = mean_std(per_member)
    mean = _with_primary(mean, primary)
    return ModelRow(
        role="members",
        kind="members",
        size=teacher.size,
        path=None,
        metrics=mean["metrics"],
        ood=mean["ood"],
        uncertainty=mean["uncertainty"],
        corruption=mean["corruption"],
        std=std,
        per_member=[r["metrics"] for r in per_member],
    )


def _run_entry(
    run: RunDir, preds: Predictions, measure: Measure, cfg: EvalCfg, runs: Runs, notes: list, primary: str
) -> ModelRow:
    results = _with_primary(measure(preds), primary)
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
    if seen.get("transfer"):  # the student saw more than its teacher's training split
        t = seen["transfer"]
        notes.append(f"{run.key}: also learnt from {t['images']} transfer images ({t['path']}), teacher-labelled.")
    return ModelRow(
        role=run.role,
        kind=run.kind,
        size=run.size,
        path=str(run.path),
        **results,
        data_seen=seen or None,
        diversity=div,
        perturbation=perturb,
    )


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


def _dataset(runs: Runs) -> Dataset:
    s, data = runs.splits, runs.recipe.data
    return Dataset(
        name=s.meta.name,
        num_classes=s.meta.num_classes,
        class_names=list(s.meta.class_names),
        size=list(s.meta.size),
        channels=s.meta.channels,
        val=len(s.val_y),
        test=len(s.test_y),
        split_seed=data.split_seed,
        holdout_classes=list(data.holdout_classes),
    )


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
    models: dict[str, ModelRow],
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

    def one(src: Source, metrics: dict, score: str | None) -> PerImage:
        return model_per_image(src, y, metrics["temperature"], score, set_keys, top)

    teacher, members = preds["teacher"], models["members"]
    per_member = members.per_member or []
    per = {"members": [one(teacher.member(m), r, members.primary_score) for m, r in enumerate(per_member)]}
    for key, p in preds.items():
        per[key] = one(p, models[key].metrics, models[key].primary_score)
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


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """The corruption sweep as configured: its corruptions and severities, and the images it corrupts (None when
    it is off)."""

    names: list[str]
    severities: list[int]
    source: CorruptedImages | None
    frost: str | None

    def section(self, cfg: EvalCfg) -> Corruptions:
        on = self.source is not None
        return Corruptions(
            names=self.names if on else [],
            severities=self.severities if on else [],
            images=len(self.source.y) if self.source is not None else 0,
            seed=cfg.corruption_seed if cfg.cifar10c is None else None,
            frost=self.frost,
            source=self.source.source if self.source is not None else None,
        )

    def top(self) -> Corrupted | None:
        """The bootstrap's view of the top severity, or None when the sweep is off."""
        return None if self.source is None else Corrupted(self.source.y, self.names, max(self.severities))


def _use_training_layout(runs: Runs) -> None:
    """The layout the recipe trains in is the fast one for its data and architectures: the CIFAR-10 CPU benchmark's
    networks predict 1.7x faster per image channels-last (docs/performance.md, "Evaluation passes"). The cost
    table still times the deployed (contiguous) module."""
    if runs.recipe.run.channels_last:
        for run in runs.all:
            to_channels_last(run.model)


def _plan_sweep(cfg: EvalCfg, runs: Runs) -> SweepPlan:
    """Check the sweep's configuration and draw (or load) the images it corrupts."""
    names, severities = corruption_names(cfg.corruptions), check_severities(cfg.severities)
    n_corr = min(cfg.corruption_limit, len(runs.splits.test_y))
    swept = bool(names and severities and n_corr > 0)
    source = _corruption_source(cfg, runs, names, n_corr) if swept else None
    frost = frost_source(names, cfg.frost_images) if swept and cfg.cifar10c is None else None
    return SweepPlan(names, severities, source, frost)


def _predict_all(
    runs: Runs, sets: list[OODSet], cfg: EvalCfg, plan: SweepPlan, clock: _Clock, notes: list[str]
) -> dict[str, Predictions]:
    """Every model's logits on val, test, the OOD sets and, when the sweep is on, the corrupted images."""
    preds = _predict(runs, sets, cfg, _device())
    clock.lap("predict")
    if plan.source is not None:
        sweep(list(preds.values()), plan.source, plan.names, plan.severities)
        clock.lap("corruptions")
    else:
        notes.append("corruption sweep off (evaluate.corruptions, severities or corruption_limit empty).")
    return preds


def _measure_models(
    runs: Runs,
    preds: dict[str, Predictions],
    measure: Measure,
    cfg: EvalCfg,
    primaries: dict[str, str],
    notes: list[str],
) -> dict[str, ModelRow]:
    """Every model's row, in the report's order: members, single, controls, teacher, students."""
    models = {"members": _members_entry(preds["teacher"], measure, primaries["members"])}
    for run in runs.all:
        models[run.key] = _run_entry(run, preds[run.key], measure, cfg, runs, notes, primaries[run.key])
    single_keys = ["single"] if runs.single is not None else []
    order = ["members", *single_keys, *(r.key for r in runs.controls), "teacher", *(r.key for r in runs.students)]
    if runs.single is None:
        notes.append("no single-model run given: the teacher's mean member is the single-model baseline.")
    return {k: models[k] for k in order}


def _compare(
    runs: Runs,
    preds: dict[str, Predictions],
    models: dict[str, ModelRow],
    sets: list[OODSet],
    cfg: EvalCfg,
    plan: SweepPlan,
) -> tuple[Comparisons, Controls]:
    """The summary rows, the teacher's gain and each student's share of it over the reference network, the
    strongest control and the paired bootstrap intervals."""
    reference = "single" if runs.single is not None else "members"
    summary = {k: summary_row(e.to_json()) for k, e in models.items()}
    students = [r.key for r in runs.students]
    # the strongest control is chosen on the validation split (report/controls.py), never on test
    controls = controls_entry({r.key: preds[r.key].logits("val") for r in runs.controls}, runs.splits.val_y)
    baselines = [reference, *([controls["strongest"]] if controls["strongest"] else [])]
    ivals = _intervals(preds, models, summary, baselines, students, sets, plan.top(), cfg, runs.splits.test_y)
    gain = gain_table(summary, reference, students)
    if ivals is not None:
        gain = within_noise(gain, ivals, reference)
    comparisons = Comparisons(
        reference, summary, teacher_gain(summary, reference), gain, ivals, strongest=controls["strongest"]
    )
    return comparisons, Controls.from_json(controls)


def _cost(runs: Runs, cfg: EvalCfg, out: Path, clock: _Clock, notes: list[str]) -> Cost | None:
    """The inference-cost table, or None (with a note) when evaluate.cost is off."""
    if not cfg.cost.enabled:
        notes.append("inference cost table off (evaluate.cost.enabled: false).")
        return None
    from distill.report.cost import measure_costs

    shape = (runs.splits.meta.channels, *runs.splits.meta.size)
    cost, cost_notes = measure_costs(runs.all, shape, cfg.cost, out, "single" if runs.single else None)
    notes += cost_notes
    clock.lap("cost")
    return Cost.from_json(cost)


def _run_paths(runs: Runs) -> RunPaths:
    return RunPaths(
        teacher=str(runs.teacher.path),
        single=str(runs.single.path) if runs.single else None,
        students={r.key: str(r.path) for r in runs.students},
        controls={r.key: str(r.path) for r in runs.controls},
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
    ``out/report.json``, ``out/report.md`` and the PNG figures; return the report as written (its JSON object;
    :meth:`Report.from_json` reads it back).

    ``cfg`` defaults to the teacher's recipe's ``evaluate`` section. Without ``single``, the teacher's mean member
    is the single-model baseline of the gain shares (and the report says so).
    """
    runs = load_runs(teacher, students, single, _device(), controls or [])
    _use_training_layout(runs)
    cfg = cfg or runs.recipe.evaluate
    check_scores(cfg.ood_scores)
    primaries = _primaries(runs, cfg)
    plan = _plan_sweep(cfg, runs)
    sets, notes = load_ood_sets(cfg.ood, runs.splits)
    notes = [*runs.notes, *notes]
    clock = _Clock()
    preds = _predict_all(runs, sets, cfg, plan, clock, notes)
    ref = make_reference(preds["teacher"], runs.splits.val_y, runs.splits.test_y)
    scores = list(dict.fromkeys([*cfg.ood_scores, *primaries.values()]))  # the declared scores always measured
    measure = Measure(ref, sets, scores, plan.names, plan.severities, plan.source, runs.splits.test_y)
    models = _measure_models(runs, preds, measure, cfg, primaries, notes)
    clock.lap("metrics")
    comparisons, control_section = _compare(runs, preds, models, sets, cfg, plan)
    clock.lap("intervals")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plain_models = {k: e.to_json() for k, e in models.items()}
    fig_files, fig_notes = make_figures(Context(plain_models, preds, runs, sets, cfg, out, comparisons.gain_share))
    clock.lap("figures")
    cost = _cost(runs, cfg, out, clock, notes)
    report = Report(
        dataset=_dataset(runs),
        runs=_run_paths(runs),
        controls=control_section,
        config=dataclasses.asdict(cfg),
        conventions=CONVENTIONS,
        ood_sets=[OODSetInfo(s.name, s.group, len(s.x)) for s in sets],
        corruptions=plan.section(cfg),
        dee_curve=ref.curve,
        models=models,
        comparisons=comparisons,
        cost=cost,
        figures=fig_files,
        subsets={k: Subset(**v) for k, v in report_subsets(cfg, runs, plan.source, fig_files).items()},
        notes=notes + fig_notes,
        seconds=clock.laps,
    )
    return _write(report, out)


def _write(report: Report, out: Path) -> dict[str, Any]:
    """report.json, and report.md rendered from what report.json holds (read back through the same types)."""
    data = report.to_json()
    write_json(out / "report.json", data)
    atomic_write_text(out / "report.md", render_markdown(Report.from_json(data)))
    return data
