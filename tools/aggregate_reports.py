"""Mean +- std over seeds of pipeline reports: one markdown table per metric group.

    python tools/aggregate_reports.py runs/digits_full_s0 runs/digits_full_s1 runs/digits_full_s2 \
        --out results/digits_gap.md --title "digits, 3 seeds"

Reads each ``<run>/report/report.json`` (written by ``python -m distill run``) and reports, per model
(members, single, teacher, each student): accuracy, NLL, ECE, their calibrated versions, Brier, DEE, top-1
agreement with the teacher, OOD AUROC near / far (max-softmax score, mean over each group's sets) and for the
model's best score, accuracy at the highest corruption severity; accuracy and NLL at every corruption severity;
the share of the teacher's gain each student keeps; the teacher's disagreement on clean vs perturbed inputs for
each student; with ``--cost``, each model's parameters and CPU latency; and each stage's wall time (from
``<run>/stages.json``).
With issue 14's report fields: OOD AUROC and FPR@95 per score, selective classification, the OOD gain
shares and the cost ratios to the single network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.metrics.registry import label

COLUMNS = [(k, label(k)) for k in ("acc", "nll", "ece", "cnll", "cece", "brier", "dee", "agreement")]
COLUMNS += [
    ("ood_near", "OOD AUROC near"),
    ("ood_far", "OOD AUROC far"),
    ("ood_auroc/best", "OOD AUROC (best score)"),
]
GAIN = [(k, label(k)) for k in ("acc", "nll", "cnll", "cece", "brier")]
GAIN += [("ood_auroc/msp", "OOD AUROC (msp)")]
PERTURB = [
    ("mi_clean", "MI clean"),
    ("mi_perturbed", "MI perturbed"),
    ("disagree_clean", "label disagr. clean"),
    ("disagree_perturbed", "label disagr. perturbed"),
    ("delta_rms", "RMS of x~ - x"),
]


def cell(values: list[float | None], digits: int = 4) -> str:
    """Mean ± std of the runs that have the value; a value missing from some runs says how many it covers, so a
    one-seed number is never read as a mean over seeds."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    text = (
        f"{vals[0]:.{digits}f}"
        if len(vals) == 1
        else f"{statistics.fmean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"
    )
    return text if len(vals) == len(values) else f"{text} ({len(vals)} of {len(values)} runs)"


def union(lists: list[list[str]]) -> list[str]:
    """Names in first-seen order over the runs (a student trained only in a later run still gets its row)."""
    return list(dict.fromkeys(n for names in lists for n in names))


def with_groups(report: dict) -> dict:
    """Summary rows plus ``ood_near`` / ``ood_far``: the max-softmax AUROC averaged over each group's sets (one
    score for every model, so the columns compare like with like)."""
    rows = {}
    for m, row in report["summary"].items():
        groups = (report["models"][m].get("ood") or {}).get("groups") or {}
        extra = {f"ood_{g}": ((groups.get(g) or {}).get("msp") or {}).get("auroc") for g in ("near", "far")}
        rows[m] = {**row, **extra}
    return rows


def cost_rows(report: dict, reps: int = 20) -> list[str]:
    """Parameters and CPU latency (batch 1 and 256, median of ``reps`` after 3 warm-up calls) of each model of
    one report, on the threads this process has."""
    import time

    import torch

    from distill.checkpoint import load_model

    paths = {"single": report["runs"]["single"], "teacher": report["runs"]["teacher"], **report["runs"]["students"]}
    meta = report["dataset"]
    lines = ["| model | parameters | latency batch 1 (ms) | latency batch 256 (ms) |", "|---|---|---|---|"]
    for key, path in paths.items():
        if path is None:
            continue
        model, _ = load_model(Path(path))
        model.eval()
        n_params = sum(p.numel() for p in model.parameters())
        cells = []
        for b in (1, 256):
            x = torch.rand(b, meta["channels"], *meta["size"])
            times = []
            with torch.inference_mode():
                for i in range(reps + 3):
                    t = time.perf_counter()
                    model(x)
                    if i >= 3:
                        times.append(time.perf_counter() - t)
            cells.append(f"{statistics.median(times) * 1000:.2f}")
        lines.append(f"| {key} | {n_params:,} | {cells[0]} | {cells[1]} |")
    return lines


def _table(
    title: str, rows: list[str], cols: list[str], value: Callable[[str, str], list], digits: int = 4
) -> list[str]:
    """``value(row, col) -> [one value per report]``; a column of only '-' is dropped."""
    cells = {c: [cell(value(r, c), digits) for r in rows] for c in cols}
    cols = [c for c in cols if any(v != "-" for v in cells[c])]
    if not cols:
        return []
    out = ["", title, "", "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    return out + [f"| {r} | " + " | ".join(cells[c][i] for c in cols) + " |" for i, r in enumerate(rows)]


def _issue14_tables(reports: list[dict], models: list[str]) -> list[str]:
    """OOD AUROC and FPR@95 per score, selective classification, the OOD gain shares and the cost ratios."""
    scores = reports[0]["config"]["ood_scores"]
    lines = []
    for metric, name in (("ood_auroc", "OOD AUROC"), ("ood_fpr95", "OOD FPR@95 (lower is better)")):
        lines += _table(
            f"{name} per score (mean over OOD sets):",
            models,
            scores,
            lambda m, sc, metric=metric: [rep["summary"].get(m, {}).get(f"{metric}/{sc}") for rep in reports],
        )
    lines += _table(
        "Selective classification (max-probability ranking): AURC (lower is better), accuracy at 90% / 95% coverage:",
        models,
        ["aurc", "acc_cov90", "acc_cov95"],
        lambda m, k: [rep["summary"].get(m, {}).get(k) for rep in reports],
    )
    students = union([list(rep.get("gain_share") or {}) for rep in reports])
    keys = [
        "acc",
        "cnll",
        "ood_auroc/best",
        *(f"ood_auroc/{sc}" for sc in scores),
        *(f"ood_fpr95/{sc}" for sc in scores),
    ]
    lines += _table(
        "Share of the teacher's gain kept (1 = all, 0 = none; '-' where the single model has no value or the teacher "
        "no gain):",
        students,
        keys,
        lambda m, k: [rep["gain_share"].get(m, {}).get(k) for rep in reports],
        digits=2,
    )
    if all(rep.get("cost") for rep in reports):
        costs = [rep["cost"]["models"] for rep in reports]
        lines += _table(
            "Inference cost relative to the single network (FLOPs and parameters exact; CPU latency at the report's "
            "latency batch and throughput at its largest batch, medians):",
            [m for m in models if any(m in c for c in costs)],
            ["flops_per_image", "params", "latency_ms", "images_per_s"],
            lambda m, k: [((c.get(m) or {}).get("relative") or {}).get(k) for c in costs],
            digits=2,
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--title", default="")
    ap.add_argument("--cost", action="store_true", help="time each model of the first run (CPU latency)")
    args = ap.parse_args()
    reports = [json.loads((r / "report" / "report.json").read_text()) for r in args.runs]
    for r in reports:
        r["summary"] = with_groups(r)
    models = union([list(r["summary"]) for r in reports])
    sev = max(reports[0]["corruptions"]["severities"] or [0])
    cols = [*COLUMNS, (f"corruption_acc/s{sev}", f"acc @ severity {sev}")] if sev else COLUMNS
    lines = [f"{args.title} ({len(reports)} runs: {', '.join(str(r) for r in args.runs)}); mean ± std", ""]
    lines += ["| model | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in models:
        lines.append(
            f"| {m} | " + " | ".join(cell([r["summary"].get(m, {}).get(k) for r in reports]) for k, _ in cols) + " |"
        )
    sevs = reports[0]["corruptions"]["severities"] or []
    for key, name in (("corruption_acc", "Accuracy"), ("corruption_nll", "NLL")):
        if not sevs:
            break
        lines += ["", f"{name} under corruption by severity (0: clean corruption split; mean over corruptions):", ""]
        lines += ["| model | " + " | ".join(f"s{k}" for k in [0, *sevs]) + " |", "|---" * (len(sevs) + 2) + "|"]
        for m in models:
            vals = [[r["summary"].get(m, {}).get(f"{key}/s{k}") for r in reports] for k in [0, *sevs]]
            lines.append(f"| {m} | " + " | ".join(cell(v, 3) for v in vals) + " |")
    if reports[0]["gain_share"]:
        lines += ["", f"Share of the teacher's gain kept (baseline: {reports[0]['reference']}; 1 = all, 0 = none):", ""]
        lines += ["| student | " + " | ".join(g[1] for g in GAIN) + " |", "|---" * (len(GAIN) + 1) + "|"]
        for m in union([list(r["gain_share"]) for r in reports]):
            vals = [[r["gain_share"].get(m, {}).get(k) for r in reports] for k, _ in GAIN]
            lines.append(f"| {m} | " + " | ".join(cell(v, 2) for v in vals) + " |")
        lines += ["", "Teacher's gain over the baseline (positive = better):", ""]
        lines += ["| " + " | ".join(g[1] for g in GAIN) + " |", "|---" * len(GAIN) + "|"]
        lines.append("| " + " | ".join(cell([r["teacher_gain"].get(k) for r in reports]) for k, _ in GAIN) + " |")
    lines += _issue14_tables(reports, models)
    students = [m for m in models if any((r["models"].get(m) or {}).get("perturbation") for r in reports)]
    if students:
        lines += ["", "Teacher disagreement on the inputs each student was trained on (mean over epochs):", ""]
        lines += ["| student | " + " | ".join(p[1] for p in PERTURB) + " |", "|---" * (len(PERTURB) + 1) + "|"]
        for m in students:
            vals = [
                [((r["models"].get(m) or {}).get("perturbation") or {}).get(k) for r in reports] for k, _ in PERTURB
            ]
            lines.append(f"| {m} | " + " | ".join(cell(v) for v in vals) + " |")
    stages = [json.loads((r / "stages.json").read_text()) for r in args.runs if (r / "stages.json").is_file()]
    if stages:
        names = union([list(s) for s in stages])
        lines += ["", f"Wall time of each stage, seconds ({len(stages)} runs):", ""]
        lines += ["| " + " | ".join([*names, "total"]) + " |", "|---" * (len(names) + 1) + "|"]
        # a total over different stage sets is no mean of anything: given only where every run ran the same stages
        same = all(set(s) == set(names) for s in stages)
        total = cell([sum(s.values()) for s in stages], 0) if same else "- (the runs ran different stages)"
        lines.append("| " + " | ".join([*(cell([s.get(n) for s in stages], 0) for n in names), total]) + " |")
    if args.cost:
        lines += ["", f"Parameters and CPU latency ({args.runs[0]}; median of 20 calls after 3 warm-up calls):", ""]
        lines += cost_rows(reports[0])
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
