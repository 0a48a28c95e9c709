"""Fort et al.'s function-space comparison from ``distill analyze landscape`` outputs: one table per seed.

    PYTHONPATH=. python experiments/landscape_table.py results/cifar10_cpu_analyses/landscape_s*.json

For each seed (one ``landscape.json``): the diversity-accuracy plane against the reference member f0 on the test
split (the independent members, then each subspace sampler's samples of f0): test accuracy, top-1 disagreement with
f0, the disagreement normalised by the error ``d / (1 - a)`` and the limit position (0: on the lower curve, the
least disagreement an accuracy allows; 1: on the upper curve, predictions independent of f0's given the accuracy;
distill/analysis/plane.py). Then the ensembles: the independent members against an equal-size ensemble of each
sampler's samples, on the clean test split and averaged over the drawn corrupted images.

Fort et al.'s claim (their Fig. 5, CIFAR-10): subspace samples that keep f0's accuracy lie near the lower curve, the
independent solutions near the upper one, and ensembles of independent members beat subspace ensembles.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from distill.report.aggregate import paired


def _mean(rows: list[dict], key: str) -> float:
    v = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(v)) if v else float("nan")


def _f(v: float, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def plane_table(data: dict) -> list[str]:
    plane = data["plane"]
    lines = [
        f"f0 = member {data['member']}, test accuracy {plane['a0']:.4f}",
        "",
        "| points | n | acc | disagreement with f0 | d / (1 - a) | limit position |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rows in plane["points"].items():
        if not rows:
            continue
        cells = [_f(_mean(rows, k)) for k in ("acc", "disagreement", "y", "position")]
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return lines


def ensemble_table(data: dict) -> list[str]:
    lines = [
        "| ensemble | size | member acc | acc | NLL | Brier | corrupted acc (mean) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in data["ensembles"].items():
        clean, corr = e["clean"], (e.get("corrupted") or {}).get("mean", {})
        cells = [_f(e["member_acc_mean"]), _f(clean["acc"]), _f(clean["nll"]), _f(clean["brier"]), _f(corr.get("acc"))]
        lines.append(f"| {name} | {e['size']} | " + " | ".join(cells) + " |")
    return lines


def _diff(d: dict) -> str:
    ci = d.get("ci")
    return f"{d['diff']:+.3f}" + ("" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]")


def difference_table(data: dict) -> list[str]:
    """The independent ensemble minus each other one, clean test split, 95% paired bootstrap over test images."""
    minus = data.get("independent_minus") or {}
    if not minus:
        return []
    lines = [
        "independent ensemble minus each other ensemble, clean test split, [95% paired bootstrap over test images]:",
        "",
        "| minus | acc | NLL |",
        "|---|---:|---:|",
    ]
    for name, d in minus.items():
        lines.append(f"| {name} | {_diff(d['acc'])} | {_diff(d['nll'])} |")
    return lines


def _over_seeds(values: list[float]) -> str:
    p = paired(values, 0.95)
    return "-" if p.mean is None else _diff({"diff": p.mean, "ci": p.ci})


def seeds_table(datas: list[dict], names: list[str]) -> list[str]:
    """Across retrainings (one landscape per seed): each point group's limit position per seed, and the independent
    ensemble minus each other ensemble per seed with the mean [95% t-interval over seeds]. Seeds, not test images,
    are the unit here: this is what survives retraining."""
    if len(datas) < 2:
        return []
    groups = list(dict.fromkeys(g for d in datas for g, rows in d["plane"]["points"].items() if rows))
    head = " | ".join(names)
    lines = [f"Over the {len(datas)} seeds, limit position (0 lower curve, 1 upper):", ""]
    lines += [f"| points | {head} | mean ± std |", "|---|" + "---:|" * (len(datas) + 1)]
    for g in groups:
        pos = [_mean(d["plane"]["points"].get(g) or [], "position") for d in datas]
        ok = [v for v in pos if np.isfinite(v)]
        spread = f"{np.mean(ok):.2f} ± {np.std(ok, ddof=1):.2f}" if len(ok) > 1 else "-"
        lines.append(f"| {g} | " + " | ".join(_f(v, 2) for v in pos) + f" | {spread} |")
    others = list(dict.fromkeys(n for d in datas for n in d.get("independent_minus") or {}))
    if others:
        lines += ["", "Independent ensemble minus each other ensemble, clean test split: per seed, then the mean [95%"]
        lines += [
            "t-interval over seeds]:",
            "",
            f"| minus | acc per seed ({', '.join(names)}) | acc over seeds | NLL over seeds |",
        ]
        lines += ["|---|" + "---:|" * 3]
        for n in others:
            cells = [(d.get("independent_minus") or {}).get(n) for d in datas]
            acc = [c["acc"]["diff"] for c in cells if c]
            nll = [c["nll"]["diff"] for c in cells if c]
            per_seed = ", ".join("-" if c is None else f"{c['acc']['diff']:+.3f}" for c in cells)
            lines.append(f"| {n} | {per_seed} | {_over_seeds(acc)} | {_over_seeds(nll)} |")
    return lines


def render(paths: list[Path]) -> str:
    out = ["# Function space: independent members against subspace samples (Fort et al. 2019)", ""]
    datas = [json.loads(p.read_text()) for p in paths]
    for p in paths:
        data = json.loads(p.read_text())
        out += [f"## {p.name} ({data['teacher']})", ""]
        if data.get("notes"):
            out += [f"Notes: {'; '.join(data['notes'])}", ""]
        out += [*plane_table(data), "", *ensemble_table(data), ""]
        diffs = difference_table(data)
        out += [*diffs, ""] if diffs else []
    across = seeds_table(datas, [p.stem.removeprefix("landscape_") for p in paths])
    out += ["## Across seeds", "", *across, ""] if across else []
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: landscape_table.py LANDSCAPE.json ...", file=sys.stderr)
        raise SystemExit(2)
    print(render([Path(a) for a in sys.argv[1:]]))
