"""The gap table as fixed-width text, for the end of a pipeline run."""

from __future__ import annotations

from typing import Any

from distill.metrics.registry import higher_is_better, label
from distill.report.gain import gain_share
from distill.report.intervals import Comparison, Intervals, Share
from distill.report.schema import Comparisons, ModelRow, Report

# (header, summary key); headers from distill/metrics/registry.py
COLUMNS = [(label(k), k) for k in ("acc", "nll", "cnll", "ece", "cece", "brier", "dee", "agreement")]
GAIN_COLUMNS = [(label(k), k) for k in ("acc", "cnll", "cece", "dee")] + [("OOD", "ood_auroc/primary")]
VERDICT_METRICS = {"acc": "acc", "cnll": "cNLL"}  # what the verdict reads (the gap table shows the rest)


def dig(tree: Any, *path: str) -> Any:
    """``tree[p0][p1]...``, or None where a step is missing."""
    for p in path:
        tree = tree.get(p) if isinstance(tree, dict) else None
    return tree


def fmt(value: Any, std: Any = None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    text = f"{value:.{digits}f}"
    return f"{text}±{std:.{digits}f}" if isinstance(std, (int, float)) and not isinstance(std, bool) else text


def _ood(entry: ModelRow) -> str:
    primary = dig(entry.ood, "primary") or {}
    if primary.get("auroc") is None:
        return "-"
    std = dig(entry.std, "ood", "mean", primary["score"]) or {}
    return f"{fmt(primary['auroc'], std.get('auroc'))} {primary['score']}"


def _corruption(entry: ModelRow, sev: str | None) -> str:
    if sev is None or entry.corruption is None:
        return "-"
    std = dig(entry.std, "corruption", "severity", sev) or {}
    return fmt(entry.corruption["severity"][sev]["acc"], std.get("acc"))


def _label(key: str, entry: ModelRow) -> str:
    return f"members ({entry.size})" if key == "members" else key


def _render(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def gap_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The gap table's header and rows (one per model, members as mean±std)."""
    sev = report.corruptions.top_severity
    head = ["model", *[c for c, _ in COLUMNS], "OOD AUROC", f"acc@s{sev}" if sev else "corrupt"]
    rows = []
    for key, entry in report.models.items():
        std = dig(entry.std, "metrics") or {}
        metrics = [fmt(entry.metrics.get(k), std.get(k)) for _, k in COLUMNS]
        rows.append([_label(key, entry), *metrics, _ood(entry), _corruption(entry, sev)])
    return head, rows


def share_text(share: Share | None, digits: int = 0) -> str:
    """``89% [71%, 108%]``; ``-`` (no share) when the teacher's gain is within noise."""
    if share is None or share.value is None or share.ci is None:
        return "-"
    lo, hi = share.ci
    return f"{share.value:.{digits}%} [{lo:.{digits}%}, {hi:.{digits}%}]"


def shares_against(c: Comparisons, baseline: str) -> dict[str, dict[str, Share]]:
    """Each student's share interval per metric against ``baseline``; empty without intervals."""
    return {} if c.intervals is None else c.intervals.shares.get(baseline) or {}


def gain_rows(
    c: Comparisons, top_severity: str | None, baseline: str | None = None
) -> tuple[list[str], list[list[str]]]:
    """The main gain shares per student (header and rows) against ``baseline`` (default: the reference network),
    with their paired bootstrap intervals where the report has them."""
    baseline = baseline or c.reference
    sev = top_severity
    cols = GAIN_COLUMNS + ([] if sev is None else [(f"acc@s{sev}", f"corruption_acc/s{sev}")])
    ci = shares_against(c, baseline)
    rows = []
    for s, shares in c.gain_share.items():
        if baseline != c.reference:  # the point shares against this baseline, where no interval is
            t, b, v = c.summary["teacher"], c.summary[baseline], c.summary[s]
            shares = {k: gain_share(v.get(k), b.get(k), t.get(k), higher_is_better(k)) for _, k in cols}
        cells = [share_text(ci[s][k]) if k in ci.get(s, {}) else fmt(shares.get(k), digits=2) for _, k in cols]
        rows.append([s, *cells])
    return ["student", *[c for c, _ in cols]], rows


def baseline_text(c: Comparisons) -> str:
    return "the single model" if c.reference == "single" else "the teacher's mean member (no single run)"


def _diff_text(c: Comparison) -> str:
    lo, hi = c.ci
    return f"{c.diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _teacher_line(c: Comparisons, versus: dict[str, dict[str, Comparison]]) -> tuple[str, list[str]]:
    """The verdict's first line and the metrics on which the teacher beats the baseline beyond noise."""
    base, t = baseline_text(c), versus["teacher"]
    b_row, t_row = c.summary[c.reference], c.summary["teacher"]
    shown = {m: f"{n} {fmt(b_row[m])} -> {fmt(t_row[m])}, {_diff_text(t[m])}" for m, n in VERDICT_METRICS.items()}
    won = [m for m in VERDICT_METRICS if t[m].verdict == "better"]
    if won:
        return (
            f"verdict: the teacher beats {base} beyond this test set's noise on {'; '.join(shown[m] for m in won)}",
            won,
        )
    what = "; ".join(f"{shown[m]} ({t[m].verdict.replace('_', ' ')})" for m in VERDICT_METRICS)
    return f"verdict: the teacher does not beat {base} beyond this test set's noise ({what}): no gain to distil", won


def _student_line(
    name: str, won: list[str], versus: dict[str, dict[str, Comparison]], shares: dict[str, Share], against: str
) -> str:
    parts = []
    for m in won:
        text = f"{share_text(shares[m])} of the {VERDICT_METRICS[m]} gain"
        if versus[name][m].verdict != "better":
            text += f" (its {VERDICT_METRICS[m]} is within noise of {against})"
        parts.append(text)
    return f"  {name} keeps " + ", ".join(parts)


def _control_lines(ivals: Intervals, strongest: str) -> list[str]:
    """The verdict against the strongest control: the teacher's gain over it, and each student's share of it."""
    c_versus, c_shares = ivals.versus[strongest], ivals.shares[strongest]
    c_won = [m for m in VERDICT_METRICS if c_versus["teacher"][m].verdict == "better"]
    lines = [f"against the strongest control '{strongest}' (chosen on validation):"]
    if not c_won:
        lines.append(f"  the teacher does not beat '{strongest}' beyond noise: no gain over the control to keep")
    for s in c_shares:
        if c_won:
            lines.append(_student_line(s, c_won, c_versus, c_shares[s], f"'{strongest}'"))
    return lines


def verdict_text(c: Comparisons) -> str:
    """The teacher's gain over the baseline on acc and cNLL with its paired interval; then, for every student in
    the recipe's order (none is singled out on test), the share of each gain beyond noise that it keeps, with its
    interval; and the same against the strongest control (chosen on validation) where the report has controls."""
    ivals = c.intervals
    if ivals is None:
        return _point_verdict(c)
    versus = ivals.versus[c.reference]
    head, won = _teacher_line(c, versus)
    lines = [head + f" ({ivals.confidence:.0%} paired bootstrap intervals)."]
    if not won:
        return lines[0]
    for s in c.gain_share:
        lines.append(_student_line(s, won, versus, ivals.shares[c.reference][s], baseline_text(c)))
    if c.strongest and c.strongest in ivals.shares:
        lines += _control_lines(ivals, c.strongest)
    return "\n".join(lines)


def verdict(report: dict[str, Any]) -> str:
    """:func:`verdict_text` of a report's JSON (or of the part of it the verdict reads)."""
    return verdict_text(Comparisons.from_json(report))


def _point_verdict(c: Comparisons) -> str:
    """Without intervals (evaluate.bootstrap: 0): the point values only, and says so."""
    won = [m for m in VERDICT_METRICS if (c.teacher_gain.get(m) or 0) > 0]
    base = baseline_text(c)
    if not won:
        return f"verdict: the teacher does not beat {base} on acc or cNLL (no intervals: evaluate.bootstrap is 0)."
    shares = {
        s: ", ".join(f"{fmt(v.get(m), digits=2)} of the {VERDICT_METRICS[m]} gain" for m in won)
        for s, v in c.gain_share.items()
    }
    body = "; ".join(f"{s} keeps {t}" for s, t in shares.items())
    return f"verdict (points only, no intervals: evaluate.bootstrap is 0): the teacher beats {base}; {body}."


def format_gap_table(report: dict[str, Any]) -> str:
    """Rows: members (mean±std), single, controls, teacher, each student; columns: the test metrics, agreement with
    the teacher, OOD AUROC (the model's declared score's mean over sets, and its name) and accuracy at the top
    corruption severity; then the share of the teacher's gain each student kept, with its interval, against the
    single network and against the strongest control; then the verdict. ``report``: report.json's object."""
    return gap_table(Report.from_json(report))


def gap_table(report: Report) -> str:
    """:func:`format_gap_table` of a typed report."""
    c, sev = report.comparisons, report.corruptions.top_severity
    head, rows = gap_rows(report)
    lines = _render([head, *rows])
    ci = (
        "; [95% paired bootstrap interval], '-': the teacher's gain is within noise; cECE and DEE: points, no interval"
        if c.intervals is not None
        else ""
    )
    if c.gain_share:
        lines += ["", f"share of the teacher's gain kept (1 = all, 0 = none; baseline: {baseline_text(c)}{ci})"]
        head, rows = gain_rows(c, sev)
        lines += _render([head, *rows])
    if c.gain_share and c.strongest and shares_against(c, c.strongest):
        lines += ["", f"share of the teacher's gain over the strongest control, '{c.strongest}' (chosen on validation)"]
        head, rows = gain_rows(c, sev, c.strongest)
        lines += _render([head, *rows])
    lines += ["", verdict_text(c)]
    return "\n".join(lines)
