"""The gap table as fixed-width text, for the end of a pipeline run."""

from __future__ import annotations

from typing import Any

from distill.metrics.registry import label
from distill.report.summary import top_severity

# (header, summary key); headers from distill/metrics/registry.py
COLUMNS = [(label(k), k) for k in ("acc", "nll", "cnll", "ece", "cece", "brier", "dee", "agreement")]
GAIN_COLUMNS = [(label(k), k) for k in ("acc", "cnll", "cece", "dee")] + [("OOD", "ood_auroc/best")]


def fmt(value: Any, std: Any = None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    text = f"{value:.{digits}f}"
    return f"{text}±{std:.{digits}f}" if isinstance(std, (int, float)) and not isinstance(std, bool) else text


def _ood(entry: dict) -> str:
    best = (entry.get("ood") or {}).get("best") or {}
    if best.get("auroc") is None:
        return "-"
    std = (((entry.get("std") or {}).get("ood") or {}).get("mean") or {}).get(best["score"]) or {}
    return f"{fmt(best['auroc'], std.get('auroc'))} {best['score']}"


def _corruption(entry: dict, sev: str | None) -> str:
    if sev is None or entry.get("corruption") is None:
        return "-"
    std = ((entry.get("std") or {}).get("corruption") or {}).get("severity", {}).get(sev, {})
    return fmt(entry["corruption"]["severity"][sev]["acc"], std.get("acc"))


def _label(key: str, entry: dict) -> str:
    return f"members ({entry['size']})" if key == "members" else key


def _render(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def gap_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The gap table's header and rows (one per model, members as mean±std)."""
    sev = top_severity(report)
    head = ["model", *[c for c, _ in COLUMNS], "OOD AUROC", f"acc@s{sev}" if sev else "corrupt"]
    rows = []
    for key, entry in report["models"].items():
        std = (entry.get("std") or {}).get("metrics") or {}
        metrics = [fmt(entry["metrics"].get(k), std.get(k)) for _, k in COLUMNS]
        rows.append([_label(key, entry), *metrics, _ood(entry), _corruption(entry, sev)])
    return head, rows


def gain_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main gain shares per student (header and rows)."""
    sev = top_severity(report)
    cols = GAIN_COLUMNS + ([] if sev is None else [(f"acc@s{sev}", f"corruption_acc/s{sev}")])
    rows = [[s, *[fmt(shares.get(k), digits=2) for _, k in cols]] for s, shares in report["gain_share"].items()]
    return ["student", *[c for c, _ in cols]], rows


def baseline_text(report: dict[str, Any]) -> str:
    return "the single model" if report["reference"] == "single" else "the teacher's mean member (no single run)"


def verdict(report: dict[str, Any]) -> str:
    """One line: does the teacher beat the baseline on acc and cNLL, and which student keeps the largest share of
    that gain (ranked by the mean of its shares over the metrics the teacher improves; every share is printed)."""
    gain = report["teacher_gain"]
    won = [m for m in ("acc", "cnll") if (gain.get(m) or 0) > 0]
    base = baseline_text(report)
    if not won:
        return f"verdict: the teacher does not beat {base} on acc or cNLL: there is no gain to distil."
    names = {"acc": "acc", "cnll": "cNLL"}
    t, b = report["summary"]["teacher"], report["summary"][report["reference"]]
    ahead = ", ".join(f"{names[m]} {fmt(b[m])} -> {fmt(t[m])}" for m in won)
    shares = {s: [v.get(m) for m in won] for s, v in report["gain_share"].items()}
    scored = {s: sum(v) / len(v) for s, v in shares.items() if all(x is not None for x in v)}
    if not scored:
        return f"verdict: the teacher beats {base} ({ahead}); no student was measured."
    best = max(scored, key=scored.get)
    kept = " and ".join(f"{shares[best][i]:.0%} of the {names[m]} gain" for i, m in enumerate(won))
    if max(max(v) for s, v in shares.items() if s in scored) <= 0:
        return f"verdict: the teacher beats {base} ({ahead}), but no student keeps a positive share ({best}: {kept})."
    return f"verdict: the teacher beats {base} ({ahead}); best student '{best}' keeps {kept}."


def format_gap_table(report: dict[str, Any]) -> str:
    """Rows: members (mean±std), single, teacher, each student; columns: the test metrics, agreement with the
    teacher, OOD AUROC (the best score's mean over sets, and its name) and accuracy at the top corruption
    severity; then the share of the teacher's gain each student kept."""
    head, rows = gap_rows(report)
    lines = _render([head, *rows])
    if report["gain_share"]:
        lines += ["", f"share of the teacher's gain kept (1 = all, 0 = none; baseline: {baseline_text(report)})"]
        head, rows = gain_rows(report)
        lines += _render([head, *rows])
    lines += ["", verdict(report)]
    return "\n".join(lines)
