"""The gap table as fixed-width text, for the end of a pipeline run."""

from __future__ import annotations

from typing import Any

from distill.metrics.registry import higher_is_better, label
from distill.report.gain import gain_share
from distill.report.summary import top_severity

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


def _ood(entry: dict) -> str:
    primary = (entry.get("ood") or {}).get("primary") or {}
    if primary.get("auroc") is None:
        return "-"
    std = (((entry.get("std") or {}).get("ood") or {}).get("mean") or {}).get(primary["score"]) or {}
    return f"{fmt(primary['auroc'], std.get('auroc'))} {primary['score']}"


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


def share_text(share: dict | None, digits: int = 0) -> str:
    """``89% [71%, 108%]``; ``-`` (no share) when the teacher's gain is within noise."""
    if share is None or share.get("value") is None:
        return "-"
    lo, hi = share["ci"]
    return f"{share['value']:.{digits}%} [{lo:.{digits}%}, {hi:.{digits}%}]"


def _shares(report: dict[str, Any], baseline: str) -> dict[str, dict] | None:
    return dig(report.get("intervals"), "shares", baseline)


def gain_rows(report: dict[str, Any], baseline: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The main gain shares per student (header and rows) against ``baseline`` (default: the reference network),
    with their paired bootstrap intervals where the report has them."""
    baseline = baseline or report["reference"]
    sev = top_severity(report)
    cols = GAIN_COLUMNS + ([] if sev is None else [(f"acc@s{sev}", f"corruption_acc/s{sev}")])
    ci = _shares(report, baseline) or {}
    summary = report["summary"]
    rows = []
    for s, shares in report["gain_share"].items():
        if baseline != report["reference"]:  # the point shares against this baseline, where no interval is
            t, b, v = summary["teacher"], summary[baseline], summary[s]
            shares = {k: gain_share(v.get(k), b.get(k), t.get(k), higher_is_better(k)) for _, k in cols}
        cells = [share_text(ci[s][k]) if k in ci.get(s, {}) else fmt(shares.get(k), digits=2) for _, k in cols]
        rows.append([s, *cells])
    return ["student", *[c for c, _ in cols]], rows


def baseline_text(report: dict[str, Any]) -> str:
    return "the single model" if report["reference"] == "single" else "the teacher's mean member (no single run)"


def _diff_text(c: dict) -> str:
    lo, hi = c["ci"]
    return f"{c['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _teacher_line(report: dict[str, Any], versus: dict[str, dict]) -> tuple[str, list[str]]:
    """The verdict's first line and the metrics on which the teacher beats the baseline beyond noise."""
    base, t = baseline_text(report), versus["teacher"]
    b_row, t_row = report["summary"][report["reference"]], report["summary"]["teacher"]
    shown = {m: f"{n} {fmt(b_row[m])} -> {fmt(t_row[m])}, {_diff_text(t[m])}" for m, n in VERDICT_METRICS.items()}
    won = [m for m in VERDICT_METRICS if t[m]["verdict"] == "better"]
    if won:
        return (
            f"verdict: the teacher beats {base} beyond this test set's noise on {'; '.join(shown[m] for m in won)}",
            won,
        )
    what = "; ".join(f"{shown[m]} ({t[m]['verdict'].replace('_', ' ')})" for m in VERDICT_METRICS)
    return f"verdict: the teacher does not beat {base} beyond this test set's noise ({what}): no gain to distil", won


def _student_line(name: str, won: list[str], versus: dict, shares: dict, against: str) -> str:
    parts = []
    for m in won:
        text = f"{share_text(shares[m])} of the {VERDICT_METRICS[m]} gain"
        if versus[name][m]["verdict"] != "better":
            text += f" (its {VERDICT_METRICS[m]} is within noise of {against})"
        parts.append(text)
    return f"  {name} keeps " + ", ".join(parts)


def verdict(report: dict[str, Any]) -> str:
    """The teacher's gain over the baseline on acc and cNLL with its paired interval; then, for every student in
    the recipe's order (none is singled out on test), the share of each gain beyond noise that it keeps, with its
    interval; and the same against the strongest control (chosen on validation) where the report has controls."""
    ivals = report.get("intervals")
    if not ivals:
        return _point_verdict(report)
    versus = ivals["versus"][report["reference"]]
    head, won = _teacher_line(report, versus)
    lines = [head + f" ({ivals['confidence']:.0%} paired bootstrap intervals)."]
    if not won:
        return lines[0]
    for s in report["gain_share"]:
        lines.append(_student_line(s, won, versus, ivals["shares"][report["reference"]][s], baseline_text(report)))
    strongest = dig(report.get("controls"), "strongest")
    if strongest and strongest in ivals["shares"]:
        c_versus, c_shares = ivals["versus"][strongest], ivals["shares"][strongest]
        c_won = [m for m in VERDICT_METRICS if c_versus["teacher"][m]["verdict"] == "better"]
        lines.append(f"against the strongest control '{strongest}' (chosen on validation):")
        if not c_won:
            lines.append(f"  the teacher does not beat '{strongest}' beyond noise: no gain over the control to keep")
        for s in c_shares:
            if c_won:
                lines.append(_student_line(s, c_won, c_versus, c_shares[s], f"'{strongest}'"))
    return "\n".join(lines)


def _point_verdict(report: dict[str, Any]) -> str:
    """Without intervals (evaluate.bootstrap: 0): the point values only, and says so."""
    gain = report["teacher_gain"]
    won = [m for m in VERDICT_METRICS if (gain.get(m) or 0) > 0]
    base = baseline_text(report)
    if not won:
        return f"verdict: the teacher does not beat {base} on acc or cNLL (no intervals: evaluate.bootstrap is 0)."
    shares = {
        s: ", ".join(f"{fmt(v.get(m), digits=2)} of the {VERDICT_METRICS[m]} gain" for m in won)
        for s, v in report["gain_share"].items()
    }
    body = "; ".join(f"{s} keeps {t}" for s, t in shares.items())
    return f"verdict (points only, no intervals: evaluate.bootstrap is 0): the teacher beats {base}; {body}."


def format_gap_table(report: dict[str, Any]) -> str:
    """Rows: members (mean±std), single, controls, teacher, each student; columns: the test metrics, agreement with
    the teacher, OOD AUROC (the model's declared score's mean over sets, and its name) and accuracy at the top
    corruption severity; then the share of the teacher's gain each student kept, with its interval, against the
    single network and against the strongest control; then the verdict."""
    head, rows = gap_rows(report)
    lines = _render([head, *rows])
    ci = (
        "; [95% paired bootstrap interval], '-': the teacher's gain is within noise; cECE and DEE: points, no interval"
        if report.get("intervals")
        else ""
    )
    if report["gain_share"]:
        lines += ["", f"share of the teacher's gain kept (1 = all, 0 = none; baseline: {baseline_text(report)}{ci})"]
        head, rows = gain_rows(report)
        lines += _render([head, *rows])
    strongest = dig(report.get("controls"), "strongest")
    if report["gain_share"] and strongest and dig(report.get("intervals"), "shares", strongest):
        lines += ["", f"share of the teacher's gain over the strongest control, '{strongest}' (chosen on validation)"]
        head, rows = gain_rows(report, strongest)
        lines += _render([head, *rows])
    lines += ["", verdict(report)]
    return "\n".join(lines)
