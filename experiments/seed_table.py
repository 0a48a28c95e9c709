"""One row per seed from each seed's report.json: the teacher's gain over the single network and over the
strongest control, and each student's share of both, every number with its report's paired bootstrap interval.

    python experiments/seed_table.py results/cifar10_cpu_power/s*/report.json [--metrics acc cnll]

The seeds' aggregate (mean ± std, t-intervals over seeds, Fieller shares) is ``distill aggregate``; this is the
per-seed view beside it (results/cifar10_cpu_power/README.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _diff(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    lo, hi = cell["ci"]
    return f"{cell['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def share_cell(cell: dict[str, Any] | None) -> str:
    if not cell or cell.get("value") is None:
        return "-"
    lo, hi = cell["ci"]
    return f"{cell['value']:.0%} [{lo:.0%}, {hi:.0%}]"


def students_of(path: Path) -> list[str]:
    """The students a report gives shares for, in its order."""
    shares = json.loads(path.read_text())["intervals"]["shares"]
    return list(dict.fromkeys(name for by_student in shares.values() for name in by_student))


def rows(path: Path, metrics: list[str], students: list[str] | None = None) -> list[str]:
    """``students``: one column each (default: the report's own), '-' where the report has none."""
    report = json.loads(path.read_text())
    iv = report["intervals"]
    strongest = next((k for k in iv["versus"] if k != "single"), None)
    seed = path.parent.name
    out = []
    for base in ["single", strongest] if strongest else ["single"]:
        teacher = iv["versus"][base].get("teacher", {})
        shares = iv["shares"].get(base, {})
        cells = [_diff(teacher.get(m)) for m in metrics]
        for student in students if students is not None else list(shares):
            by_metric = shares.get(student)
            cells.append(", ".join(share_cell(by_metric.get(m)) for m in metrics) if by_metric else "-")
        out.append(f"| {seed} | {base} | " + " | ".join(cells) + " |")
    return out


def table(reports: list[Path], metrics: list[str]) -> list[str]:
    students = list(dict.fromkeys(name for p in reports for name in students_of(p)))
    head = [f"teacher - base, {m}" for m in metrics] + [f"{s}'s share ({', '.join(metrics)})" for s in students]
    lines = ["| seed | base | " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(head)]
    for p in reports:
        lines += rows(p, metrics, students)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--metrics", nargs="+", default=["acc", "cnll"])
    args = ap.parse_args()
    print("\n".join(table(args.reports, args.metrics)))


if __name__ == "__main__":
    main()
