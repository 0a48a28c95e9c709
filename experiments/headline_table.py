"""A study's compact tables from ``distill aggregate``'s JSON: what docs/results.md and the READMEs quote, so every
number there comes from a command.

    python experiments/headline_table.py results/cifar10_cpu_power/gap.json [power|nam]

Three tables, laid out per study (``LAYOUTS``): each model's mean ± std over the runs; the paired differences [95%
t-interval over runs] of the teacher and every student against each declared base (the single network, the
strongest control, kd); the share of the teacher's mean gain each student keeps [Fieller 95%]. The students are the
JSON's models after the teacher, in its order.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy import stats
from seed_table import share_cell  # the same cell: 'value% [lo%, hi%]', '-' when undefined


@dataclass(frozen=True)
class Layout:
    metrics: tuple[tuple[str, str], ...]  # (aggregate key, column heading)
    controls: tuple[str, ...]  # rows between single and teacher
    bases: tuple[tuple[str, str], ...]  # differences against (model, its short name), in this order
    shares: tuple[tuple[str, str], ...]  # share columns: (base model, metric)


LAYOUTS = {
    "power": Layout(
        metrics=(
            ("acc", "acc"),
            ("cnll", "cNLL"),
            ("ood_auroc/primary", "OOD AUROC (declared)"),
            ("corruption_acc/s5", "acc@s5 (500 drawn)"),
        ),
        controls=("control:single_long", "control:label_smoothing", "control:self_kd"),
        bases=(("single", "single"), ("control:self_kd", "self_kd"), ("kd", "kd")),
        shares=(("single", "acc"), ("single", "cnll"), ("control:self_kd", "acc"), ("control:self_kd", "cnll")),
    ),
    "nam": Layout(
        metrics=(("acc", "acc"), ("nll", "NLL"), ("cnll", "cNLL"), ("ood_auroc/primary", "OOD AUROC (declared)")),
        controls=(),
        bases=(("single", "single"), ("be4_kd", "be4_kd")),
        shares=(("single", "acc"), ("single", "nll"), ("single", "cnll")),
    ),
}
SHORT = {"acc": "acc", "nll": "NLL", "cnll": "cNLL"}


def _mean_std(cell: dict[str, Any] | None) -> str:
    return "-" if not cell or cell.get("mean") is None else f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def _diff(cell: dict[str, Any] | None) -> str:
    if not cell or cell.get("ci") is None:
        return "-"
    lo, hi = cell["ci"]
    return f"{cell['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def students(gap: dict[str, Any]) -> list[str]:
    names = list(gap["models"])
    return names[names.index("teacher") + 1 :]


def _head(first: str, layout: Layout) -> list[str]:
    cols = [h for _, h in layout.metrics]
    return [f"| {first} | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]


def models_table(gap: dict[str, Any], layout: Layout) -> list[str]:
    lines = _head("model", layout)
    for name in ("single", *layout.controls, "teacher", *students(gap)):
        if name in gap["models"]:
            cells = [_mean_std(gap["models"][name].get(m)) for m, _ in layout.metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def differences_table(gap: dict[str, Any], layout: Layout) -> list[str]:
    lines = _head("difference", layout)
    for base, short in layout.bases:
        versus = gap["versus"].get(base, {})
        for name in ("teacher", *students(gap)):
            if name != base and name in versus:
                cells = [_diff(versus[name].get(m)) for m, _ in layout.metrics]
                lines.append(f"| {name} - {short} | " + " | ".join(cells) + " |")
    return lines


def mde80(cell: dict[str, Any] | None) -> float | None:
    """The smallest paired difference the runs detect 80% of the time (two-sided, at the interval's 95%), from the
    t-interval's half-width h = t_{.975, n-1} sd / sqrt(n): MDE80 = (t_{.975, n-1} + t_{.8, n-1}) sd / sqrt(n)."""
    if not cell or cell.get("ci") is None or cell.get("n", 0) < 2:
        return None
    df = cell["n"] - 1
    t975, t80 = stats.t.ppf(0.975, df), stats.t.ppf(0.8, df)
    half = (cell["ci"][1] - cell["ci"][0]) / 2
    return half * (t975 + t80) / t975


def power_table(gap: dict[str, Any], layout: Layout) -> list[str]:
    """MDE80 of every student against the last base (kd, or be4_kd): what a 'tie' there rules out."""
    base, short = layout.bases[-1]
    versus = gap["versus"].get(base, {})
    lines = _head("student", layout)
    for name in students(gap):
        if name != base and name in versus:
            cells = [mde80(versus[name].get(m)) for m, _ in layout.metrics]
            lines.append(f"| {name} - {short} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")
    return lines


def shares_table(gap: dict[str, Any], layout: Layout) -> list[str]:
    short = dict(layout.bases)
    head = " | ".join(f"{SHORT[m]}, over {short[b]}" for b, m in layout.shares)
    lines = [f"| student | {head} |", "|---|" + "---:|" * len(layout.shares)]
    for name in students(gap):
        cells = [share_cell(gap["shares"].get(b, {}).get(name, {}).get(m)) for b, m in layout.shares]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render(gap: dict[str, Any], study: str = "power") -> str:
    layout = LAYOUTS[study]
    runs = len(gap["runs"])
    return "\n".join(
        [
            f"Mean ± std over {runs} runs:",
            "",
            *models_table(gap, layout),
            "",
            f"Paired differences, mean [95% t-interval over the {runs} runs]:",
            "",
            *differences_table(gap, layout),
            "",
            "Share of the teacher's mean gain kept [Fieller 95%]:",
            "",
            *shares_table(gap, layout),
            "",
            f"MDE80, the smallest difference the {runs} runs detect 80% of the time (two-sided, 95%; from the observed",
            "spread of the paired differences, so itself an estimate): what a tie in the differences above rules out.",
            "",
            *power_table(gap, layout),
            "",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in LAYOUTS):
        print(f"usage: headline_table.py GAP.json [{'|'.join(LAYOUTS)}]", file=sys.stderr)
        raise SystemExit(2)
    study = sys.argv[2] if len(sys.argv) == 3 else "power"
    print(render(json.loads(Path(sys.argv[1]).read_text()), study), end="")
