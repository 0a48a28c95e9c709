"""report.md: the report's numbers as markdown tables, the figures embedded by relative path, the conventions
and the notes. Reads the report as read back from its JSON (:class:`~distill.report.schema.Report`)."""

from __future__ import annotations

from typing import Any

from distill.report.evaluate import higher_is_better
from distill.report.schema import Cost, ModelRow, Report
from distill.report.table import (
    baseline_text,
    dig,
    fmt,
    gain_rows,
    gap_rows,
    share_text,
    shares_against,
    verdict_text,
)

Lines = list[str]
DETECTION_HEAD = ["AUROC ↑", "AUPR-In ↑", "AUPR-Out ↑", "FPR@95 ↓"]


def table(head: list[str], rows: list[list[str]]) -> Lines:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return [*out, *("| " + " | ".join(r) + " |" for r in rows), ""]


def heading(title: str, text: str = "", level: int = 2) -> Lines:
    return ["#" * level + " " + title, "", *([text, ""] if text else [])]


def figure(report: Report, name: str, alt: str) -> Lines:
    f = report.figures.get(name)
    return [f"![{alt}]({f})", ""] if f else []


def label(key: str, e: ModelRow) -> str:
    return f"members (mean ± std of {e.size})" if key == "members" else key


def _std(e: ModelRow, *path: str) -> dict:
    """The members' std dict at ``path`` (empty for other models)."""
    return dig(e.std, *path) or {}


def metric_rows(report: Report, cols: list[tuple[str, str]]) -> list[list[str]]:
    rows = []
    for key, e in report.models.items():
        std = _std(e, "metrics")
        rows.append([label(key, e), *[fmt(e.metrics.get(k), std.get(k)) for _, k in cols]])
    return rows


def _header(r: Report) -> Lines:
    d = r.dataset
    text = (
        f"How much of the teacher ensemble did each student keep? Dataset **{d.name}** ({d.num_classes} "
        f"classes; {d.val} validation and {d.test} test images; split seed {d.split_seed})."
    )
    rows = [[label(k, e), e.role, e.kind, str(e.size), e.path or "-"] for k, e in r.models.items()]
    return [
        *heading("Ensemble-to-student gap report", text, level=1),
        *table(["model", "role", "kind", "M", "run"], rows),
    ]


def _summary(r: Report) -> Lines:
    text = (
        "Test split. cNLL / cECE: after temperature scaling (fitted on validation). OOD AUROC: the model's declared "
        "score (named beside it; never chosen on test), averaged over the OOD sets. Last column: accuracy at the "
        "top corruption severity."
    )
    c, sev = r.comparisons, r.corruptions.top_severity
    lines = [*heading("Summary", text), *table(*gap_rows(r))]
    if c.gain_share:
        ci = " with 95% paired bootstrap intervals ('-': the teacher's gain is within noise; cECE, DEE: points only)"
        ci = ci if c.intervals is not None else ""
        lines += [
            f"Share of the teacher's gain kept (baseline: {baseline_text(c)}){ci}:",
            "",
            *table(*gain_rows(c, sev)),
        ]
        strongest = r.controls.strongest
        if strongest and shares_against(c, strongest):
            lines += [f"Against the strongest control, `{strongest}` (chosen on validation):", ""]
            lines += table(*gain_rows(c, sev, strongest))
    return [*lines, "```", verdict_text(c), "```", ""]


def _intervals(r: Report) -> Lines:
    iv = r.comparisons.intervals
    if iv is None:
        return []
    text = (
        f"{iv.method}; {iv.resamples} resamples, seed {iv.seed}, {iv.confidence:.0%} percentile "
        "intervals. Each cell: model - baseline [interval]; **bold** where the interval excludes 0. These carry the "
        "test set's sampling noise only; seed-to-seed spread is `distill aggregate`'s."
    )
    lines = heading("Differences and their intervals", text)
    for base, rows in iv.versus.items():
        cells = []
        for model, by_metric in rows.items():
            row = [model]
            for k in iv.metrics:
                c = by_metric.get(k)
                t = "-" if c is None else f"{c.diff:+.4f} [{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]"
                row.append(f"**{t}**" if c is not None and c.verdict != "within_noise" else t)
            cells.append(row)
        lines += [*heading(f"Against `{base}`", level=3), *table(["model", *iv.metrics], cells)]
    return lines


def _gain(r: Report) -> Lines:
    c = r.comparisons
    if not c.gain_share:
        return []
    students = list(c.gain_share)
    text = (
        f"`(student - baseline) / (teacher - baseline)`, the baseline being {baseline_text(c)}: 1 = the student keeps "
        "the whole gain of the ensemble, 0 = no better than one network; '-' where the teacher is not better than the "
        "baseline (no gain to keep). Teacher gain: the teacher's improvement over the baseline (positive = better). "
        "Each student cell: its value (its share of the gain; with its 95% paired bootstrap interval where the "
        "metric has one, and '-' with the reason below where the teacher's gain is within noise)."
    )
    base, teacher = c.summary[c.reference], c.summary["teacher"]
    ci = shares_against(c, c.reference)
    rows = []
    for k in teacher:
        cells = [
            f"{fmt(c.summary[s].get(k))} ("
            + (share_text(ci[s][k]) if k in ci.get(s, {}) else fmt(c.gain_share[s].get(k), digits=2))
            + ")"
            for s in students
        ]
        arrow = "↑" if higher_is_better(k) else "↓"
        rows.append([k, arrow, fmt(base.get(k)), fmt(teacher.get(k)), fmt(c.teacher_gain.get(k)), *cells])
    head = ["metric", "better", "baseline", "teacher", "teacher gain", *students]
    gap = figure(r, "gap", "The gap: baseline, students and teacher on one axis per metric, with each student's share")
    reasons = sorted({f"{k}: {sh.reason}" for per in ci.values() for k, sh in per.items() if sh.reason})
    notes = [*(f"- {x}" for x in reasons), ""] if reasons else []
    return [*heading("Share of the teacher's gain kept", text), *table(head, rows), *notes, "", *gap]


def _calibration(r: Report) -> Lines:
    cols = [("acc", "acc"), ("NLL", "nll"), ("Brier", "brier"), ("ECE", "ece"), ("T", "temperature")]
    cols += [("cNLL", "cnll"), ("cBrier", "cbrier"), ("cECE", "cece")]
    text = (
        "T: the temperature fitted on validation, applied to the log of the averaged probabilities; ECE with "
        f"{r.conventions['ece_bins']} equal-width bins."
    )
    lines = [*heading("Accuracy and calibration", text), *table(["model", *[c for c, _ in cols]], metric_rows(r, cols))]
    return [*lines, *figure(r, "reliability", "Reliability diagrams")]


def _dee(r: Report) -> Lines:
    curve = ", ".join(f"{k + 1}: {v:.4f}" for k, v in enumerate(r.dee_curve))
    text = (
        f"Calibrated test log-likelihood of sub-ensembles of the teacher's members (size: CLL) {curve}. "
        "DEE floors at 1 and is capped at the teacher's size (flags)."
    )
    rows = []
    for key, e in r.models.items():
        m = e.metrics
        flags = ", ".join(f for f in ("floored", "capped") if m.get(f"dee_{f}")) or "-"
        cll = None if m["cnll"] is None else -m["cnll"]
        rows.append([label(key, e), fmt(cll), fmt(m["dee"], _std(e, "metrics").get("dee")), flags])
    return [*heading("Deep-ensemble equivalent", text), *table(["model", "calibrated LL", "DEE", "flags"], rows)]


def _fidelity(r: Report) -> Lines:
    cols = [("top-1 agreement", "agreement"), ("KL(teacher ‖ model)", "kl_teacher")]
    return [*heading("Fidelity to the teacher"), *table(["model", *[c for c, _ in cols]], metric_rows(r, cols))]


def _ood_cell(e: ModelRow, *path: str) -> str:
    return fmt(dig(e.ood, *path), dig(e.std, "ood", *path))


def _ood_table(r: Report, scores: list[str], *where: str) -> Lines:
    rows = [[label(k, e), *[_ood_cell(e, *where, sc, "auroc") for sc in scores]] for k, e in r.models.items()]
    return table(["model", *scores], rows)


def _selective(r: Report) -> Lines:
    cols = [("AURC ↓", "aurc"), ("acc @ 90% coverage ↑", "acc_cov90"), ("acc @ 95% coverage ↑", "acc_cov95")]
    text = "Selective classification: test images ranked by the maximum predictive probability. " + r.conventions.get(
        "selective", ""
    )
    return [*heading("Selective classification", text), *table(["model", *[c for c, _ in cols]], metric_rows(r, cols))]


def _uncertainty(r: Report) -> Lines:
    sets = ["test", *(s.name for s in r.ood_sets)]
    if not any(e.uncertainty for e in r.models.values()):
        return []
    text = (
        "Mean total / data / knowledge uncertainty (nats) as each model's kind reads it; knowledge is the "
        "ensemble's mutual information (a Dirichlet student: its closed form), '-' for one softmax network. "
        "A model that carries the teacher's OOD advantage has a knowledge uncertainty that rises off the test split."
    )
    rows = []
    for k, e in r.models.items():
        u, std = e.uncertainty or {}, _std(e, "uncertainty")
        cells = [" / ".join(fmt(dig(u, s, q), dig(std, s, q)) for q in ("total", "data", "knowledge")) for s in sets]
        rows.append([label(k, e), *cells])
    return [*heading("Uncertainty", text), *table(["model", *sets], rows)]


def cost_table(cost: Cost | None, convention: str, kinds: dict[str, str]) -> Lines:
    """The inference-cost section (also used by tools/cost_table.py): ``convention``, the report's ``cost``
    convention; ``kinds``: each model's kind."""
    if cost is None:
        return []
    c = cost.config
    lb, tb, base = c.latency_batch, c.throughput_batch, c.baseline
    text = (
        f"{convention}. {c.threads} CPU thread(s), {c.reps} timed calls per case after "
        f"{c.warmup} warm-up calls. Latency at batch {lb} and throughput at batch {tb}"
        + (f"; × {base}: the ratio to the {base} network (FLOPs, latency)." if base else ".")
    )
    head = ["model", "kind", "params", "disk MB", "MFLOPs / image", f"torch ms (b{lb})", f"ORT ms (b{lb})"]
    head += [f"torch img/s (b{tb})", f"ORT img/s (b{tb})"]
    head += [*([f"FLOPs × {base}", f"latency × {base}"] if base else []), "ORT max abs diff"]
    rows = [[k, kinds[k], *_cost_cells(e, lb, tb, bool(base))] for k, e in cost.models.items()]
    return [*heading("Inference cost", text), *table(head, rows)]


def _cost_cells(e: dict[str, Any], lb: int, tb: int, relative: bool) -> list[str]:
    """One model's cost row after its name and kind (report/cost.py's entry)."""
    timing = dig(e, "onnx", "timing") or {}
    rel = e.get("relative") or {}
    disk = None if e["disk_bytes"] is None else e["disk_bytes"] / 2**20
    row = [str(e["params"]), fmt(disk, digits=2), fmt(e["flops_per_image"] / 1e6, digits=2)]
    row += [fmt(e["torch"][f"b{lb}"]["median_ms"], digits=2), fmt(dig(timing, f"b{lb}", "median_ms"), digits=2)]
    row += [fmt(e["torch"][f"b{tb}"]["images_per_s"], digits=0), fmt(dig(timing, f"b{tb}", "images_per_s"), digits=0)]
    if relative:
        row += [fmt(rel.get("flops_per_image"), digits=2), fmt(rel.get("latency_ms"), digits=2)]
    check = e.get("onnx_check") or {}
    row.append("-" if check.get("max_abs_diff") is None else f"{check['max_abs_diff']:.1e}")
    return row


def _cost(r: Report) -> Lines:
    return cost_table(r.cost, r.conventions.get("cost", ""), {k: e.kind for k, e in r.models.items()})


def _ood(r: Report) -> Lines:
    text = (
        "AUROC with the in-distribution test split as the POSITIVE class (higher score = more in-distribution); "
        "'-': a score meaningless for one network (ensemble-only)."
    )
    if not r.ood_sets:
        return heading("OOD detection", "No OOD set was evaluated (see the notes).")
    scores = r.config["ood_scores"]
    lines = heading("OOD detection", text)
    for s in r.ood_sets:
        lines += [*heading(f"{s.name} ({s.group}, {s.images} images)", level=3)]
        lines += _ood_table(r, scores, "sets", s.name)
    for g in ("near", "far"):
        if any(s.group == g for s in r.ood_sets):
            lines += [*heading(f"Mean AUROC over the {g} sets", level=3), *_ood_table(r, scores, "groups", g)]
    fpr = [[label(k, e), *[_ood_cell(e, "mean", sc, "fpr95") for sc in scores]] for k, e in r.models.items()]
    lines += [*heading("Mean FPR@95 over all sets (lower is better)", level=3), *table(["model", *scores], fpr)]
    rows = []
    for k, e in r.models.items():
        primary = e.primary_score
        for s in r.ood_sets:
            cells = [_ood_cell(e, "sets", s.name, primary, m) for m in ("auroc", "aupr_in", "aupr_out", "fpr95")]
            rows.append([label(k, e), primary, s.name, *cells])
    lines += heading("Every detection metric, each model's declared score", level=3)
    lines += table(["model", "score", "OOD set", *DETECTION_HEAD], rows)
    return [*lines, *figure(r, "ood_histograms", "OOD score histograms")]


def _corruption(r: Report) -> Lines:
    c = r.corruptions
    if not c.names:
        return []
    sevs = ["0", *(str(s) for s in c.severities)]
    text = (
        f"{len(c.names)} corruptions ({', '.join(c.names)}), {c.images} images each; each severity averages "
        f"the corruptions; severity 0 = {c.images} test images drawn class-stratified (seed "
        f"{r.subsets['corruption'].seed}), clean."
    )
    if c.source:
        text += f" Corrupted images: {c.source}."
    if c.frost:
        text += f" Frost: {c.frost}."
    lines = heading("Corruptions", text)
    for measure, title in (("acc", "Accuracy"), ("nll", "NLL"), ("ece", "ECE")):
        rows = []
        for k, e in r.models.items():
            std = _std(e, "corruption", "severity")
            by_sev = e.corruption["severity"]
            rows.append([label(k, e), *[fmt(by_sev[s][measure], (std.get(s) or {}).get(measure)) for s in sevs]])
        lines += [*heading(f"{title} by severity", level=3), *table(["model", *sevs], rows)]
    top, models = sevs[-1], r.models
    rows = [[n, *[fmt(e.corruption["corruptions"][n][top]["acc"]) for e in models.values()]] for n in c.names]
    lines += heading(f"Accuracy per corruption at severity {top}", level=3)
    lines += table(["corruption", *[label(k, e) for k, e in models.items()]], rows)
    return [*lines, *figure(r, "corruption", "Accuracy vs corruption severity")]


def _diversity(r: Report) -> Lines:
    models = {k: e.diversity for k, e in r.models.items() if e.diversity}
    if not models:
        return []
    pred = [("disagreement", "disagreement"), ("pairwise KL", "pairwise_kl"), ("MI", "mutual_information")]
    pred += [("Q", "q_statistic"), ("double fault", "double_fault"), ("KW var", "kohavi_wolpert_variance")]
    sim = [("attr cos", "cosine"), ("saliency cos", "saliency_cosine"), ("top-10% IoU", "iou_top")]
    rows = []
    for k, d in models.items():
        cells = [fmt(d["prediction"].get(c)) for _, c in pred] + [fmt(d.get("cam_similarity"))]
        rows.append([k, *cells, *[fmt(dig(d, "attribution", c)) for _, c in sim], fmt(d.get("cka"))])
    n = next(iter(models.values()))["images"]
    text = (
        f"Prediction diversity on the test split; CAM, attribution and CKA similarities on {n} test images drawn "
        f"class-stratified (seed {r.subsets['diversity'].seed}) "
        f"(lower = more diverse). Attribution: {r.conventions['attribution']}; CKA: linear, of the input of each "
        "member's last linear layer."
    )
    head = ["model", *[c for c, _ in pred], "CAM cos", *[c for c, _ in sim], "CKA"]
    return [*heading("Diversity of the members", text), *table(head, rows), *figure(r, "cam_grid", "Grad-CAM")]


def _perturbation(r: Report) -> Lines:
    stats = {k: e.perturbation for k, e in r.models.items() if e.perturbation}
    if not stats:
        return []
    cols = ["mi_clean", "mi_perturbed", "disagree_clean", "disagree_perturbed", "delta_rms"]
    rows = [[k, *[fmt(v.get(c), digits=4) for c in cols], str(v.get("epochs"))] for k, v in stats.items()]
    text = (
        "From each student's training history (mean over epochs): the teacher's mutual information (nats) and "
        "pairwise label disagreement on clean and perturbed inputs, and the perturbation's RMS size (pixels in [0, 1])."
    )
    lines = [*heading("The teacher's disagreement on the students' inputs", text)]
    return [*lines, *table(["student", *cols, "epochs"], rows), *figure(r, "perturbation", "Teacher disagreement")]


def _conventions(r: Report) -> Lines:
    return [*heading("Conventions"), *(f"- **{k}**: {v}" for k, v in r.conventions.items()), ""]


def _notes(r: Report) -> Lines:
    return [*heading("Notes"), *(f"- {n}" for n in r.notes), ""] if r.notes else []


SECTIONS = [_header, _summary, _gain, _intervals, _calibration, _selective, _dee, _fidelity, _ood, _uncertainty]
SECTIONS += [_corruption]
SECTIONS += [_diversity, _perturbation, _cost]
SECTIONS += [_conventions, _notes]


def render_markdown(report: Report) -> str:
    return "\n".join(line for section in SECTIONS for line in section(report)).rstrip() + "\n"
