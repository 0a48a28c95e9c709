"""The headline's compact tables from ``distill aggregate``'s JSON: what docs/results.md section 1 and the README
quote, so every number there comes from a command.

    python experiments/headline_table.py results/cifar10_cpu_power/gap.json

Three tables: each model's mean ± std over the runs (accuracy, cNLL, declared OOD AUROC, accuracy at the top
corruption severity); the paired differences [95% t-interval over runs] of the teacher and every student against the
single network, against the self_kd control and against kd; the share of the teacher's mean gain each student keeps
[Fieller 95%]. The students are the JSON's models after the teacher, in its order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from seed_table import share_cell  # the same cell: 'value% [lo%, hi%]', '-' when undefined

METRICS = ("acc", "cnll", "ood_auroc/primary", "corruption_acc/s5")
HEAD = "| acc | cNLL | OOD AUROC (declared) | acc@s5 (500 drawn) |"
CONTROLS = ("control:single_long", "control:label_smoothing", "control:self_kd")
SHARES = (("single", "acc"), ("single", "cnll"), ("control:self_kd", "acc"), ("control:self_kd", "cnll"))


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


def models_table(gap: dict[str, Any]) -> list[str]:
    lines = ["| model " + HEAD, "|---|---:|---:|---:|---:|"]
    for name in ("single", *CONTROLS, "teacher", *students(gap)):
        if name in gap["models"]:
            cells = [_mean_std(gap["models"][name].get(m)) for m in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def differences_table(gap: dict[str, Any]) -> list[str]:
    lines = ["| difference " + HEAD, "|---|---:|---:|---:|---:|"]
    base_names = {"single": "single", "control:self_kd": "self_kd", "kd": "kd"}
    for base, short in base_names.items():
        versus = gap["versus"].get(base, {})
        for name in ("teacher", *students(gap)):
            if name != base and name in versus:
                cells = [_diff(versus[name].get(m)) for m in METRICS]
                lines.append(f"| {name} - {short} | " + " | ".join(cells) + " |")
    return lines


def shares_table(gap: dict[str, Any]) -> list[str]:
    short = {"single": "single", "control:self_kd": "self_kd"}
    head = " | ".join(f"{m if m == 'acc' else 'cNLL'}, over {short[b]}" for b, m in SHARES)
    lines = [f"| student | {head} |", "|---|" + "---:|" * len(SHARES)]
    for name in students(gap):
        cells = [share_cell(gap["shares"].get(b, {}).get(name, {}).get(m)) for b, m in SHARES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render(gap: dict[str, Any]) -> str:
    runs = len(gap["runs"])
    return "\n".join(
        [
            f"Mean ± std over {runs} runs:",
            "",
            *models_table(gap),
            "",
            f"Paired differences, mean [95% t-interval over the {runs} runs]:",
            "",
            *differences_table(gap),
            "",
            "Share of the teacher's mean gain kept [Fieller 95%]:",
            "",
            *shares_table(gap),
            "",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: headline_table.py GAP.json", file=sys.stderr)
        raise SystemExit(2)
    print(render(json.loads(Path(sys.argv[1]).read_text())), end="")
