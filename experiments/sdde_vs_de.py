"""SDDE against DE, de-confounded: the teacher arms of ``tools/sdde_vs_de.sh`` compared over paired seeds.

    PYTHONPATH=. python experiments/sdde_vs_de.py ROOT [--arms ARM ...] [--out FILE.md] [--json FILE.json]

ROOT holds one folder per seed (``s0``, ``s1``, ...), each with one folder per arm holding that arm's report
(``<arm>/report/report.json`` of a run directory, or ``<arm>/report.json`` as copied into results/). For each arm's
teacher: accuracy, NLL, cNLL, ECE, the members' CAM similarity and label disagreement, and for each OOD set and
score AUROC and FPR95. Then each arm against its twin (``PAIRS``; same seed = same data, initialisations and split):
the mean paired difference with its Student-t interval over seeds, and the experiment's power as the smallest
difference it would detect 80% of the time (two-sided, at the interval's level),

    MDE = (t_{1 - a/2, n-1} + t_{0.8, n-1}) * sd(d) / sqrt(n),

with sd(d) the observed std of the per-seed differences (a planning figure: itself estimated from n seeds).

Scores, declared before any run: MSP of the ensemble's mean prediction (OpenOOD's baseline for ensembles, the
protocol of the SDDE paper's tables) and the project's declared ensemble score, the members' mutual information
(``neg_mi``). Nothing here is chosen on test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from scipy import stats

from distill.report.aggregate import paired, spread

ARMS = ["de", "sdde_eval", "sdde_train", "de_shared", "sdde_shared"]
# each comparison: (arm, its twin); the shared-batch pair is compared within itself
PAIRS = [("sdde_eval", "de"), ("sdde_train", "de"), ("sdde_eval", "sdde_train"), ("sdde_shared", "de_shared")]
SCORES = ("msp", "neg_mi")
TOP = ("acc", "nll", "cnll", "ece", "cece")
# Dereka et al. 2023, CIFAR-10, ResNet-18, 5 seeds, AUROC in %: (DE, SDDE) near and far OOD
PAPER = {"near": (91.07, 92.06), "far": (93.55, 94.60)}


def _report(seed_dir: Path, arm: str) -> dict[str, Any] | None:
    for p in (seed_dir / arm / "report" / "report.json", seed_dir / arm / "report.json"):
        if p.is_file():
            return json.loads(p.read_text())
    return None


def row(report: dict[str, Any]) -> dict[str, float]:
    """The teacher's numbers of one report, flat: ``acc``, ``ood/heldout/msp/auroc``, ``far/msp/fpr95``, ..."""
    t = report["models"]["teacher"]
    out = {k: float(t["metrics"][k]) for k in TOP}
    div = t.get("diversity") or {}
    if div.get("cam_similarity") is not None:
        out["cam_similarity"] = float(div["cam_similarity"])
    out["disagreement"] = float(div.get("prediction", {}).get("disagreement", math.nan))
    groups = {s["name"]: s["group"] for s in report["ood_sets"]}
    for name, cells in t["ood"]["sets"].items():
        for score in SCORES:
            for k in ("auroc", "fpr95"):
                out[f"ood/{name}/{score}/{k}"] = float(cells[score][k])
    for score in SCORES:
        for k in ("auroc", "fpr95"):
            far = [out[f"ood/{n}/{score}/{k}"] for n, g in groups.items() if g == "far" and n in t["ood"]["sets"]]
            if far:
                out[f"far/{score}/{k}"] = statistics.fmean(far)
    return out


def collect(root: Path, arms: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """seed folder name -> arm -> row; seeds missing an arm are kept (the pairing drops them per comparison)."""
    seeds: dict[str, dict[str, dict[str, float]]] = {}
    dirs = [p for p in root.glob("s[0-9]*") if p.is_dir() and p.name[1:].isdigit()]
    for seed_dir in sorted(dirs, key=lambda p: int(p.name[1:])):
        rows = {a: row(r) for a in arms if (r := _report(seed_dir, a)) is not None}
        if rows:
            seeds[seed_dir.name] = rows
    return seeds


def mde(diffs: list[float], confidence: float = 0.95, power: float = 0.8) -> float | None:
    n = len(diffs)
    if n < 3:
        return None
    t = stats.t.ppf((1 + confidence) / 2, n - 1) + stats.t.ppf(power, n - 1)
    return t * statistics.stdev(diffs) / math.sqrt(n)


def compare(seeds: dict, pairs: list[tuple[str, str]], metrics: list[str]) -> dict[str, dict[str, dict]]:
    """``"arm - base"`` -> metric -> the paired mean, its interval, n, MDE80 and the per-seed differences."""
    out: dict[str, dict[str, dict]] = {}
    for arm, base in pairs:
        rows = [r for r in seeds.values() if arm in r and base in r]
        if not rows:
            continue
        cells = out[f"{arm} - {base}"] = {}
        for m in metrics:
            d = [r[arm][m] - r[base][m] for r in rows if m in r[arm] and m in r[base]]
            p = paired(d, 0.95)
            cells[m] = {"mean": p.mean, "ci": p.ci, "n": p.n, "mde80": mde(d), "diffs": d}
    return out


def _fmt(x: float | None, pct: bool) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{100 * x:+.2f}" if pct else f"{x:+.4f}"


def _cell(c: dict, pct: bool) -> str:
    if c["ci"] is None:
        return _fmt(c["mean"], pct)
    lo, hi = c["ci"]
    return f"{_fmt(c['mean'], pct)} [{_fmt(lo, pct)}, {_fmt(hi, pct)}]"


def metrics_of(seeds: dict) -> list[str]:
    keys = [k for r in seeds.values() for a in r.values() for k in a]
    return list(dict.fromkeys(keys))


def render(seeds: dict, arms: list[str], pairs: list[tuple[str, str]] = PAIRS) -> tuple[str, dict]:
    arms = [a for a in arms if any(a in r for r in seeds.values())]
    metrics = metrics_of(seeds)
    comp = compare(seeds, pairs, metrics)
    pct = {m: ("ood" in m or m.startswith("far")) for m in metrics}  # AUROC / FPR95 in points
    lines = [f"Seeds: {', '.join(seeds)}. OOD columns in percentage points; the rest as measured.", ""]
    lines += ["## Mean ± std over seeds", "", "| metric | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for m in metrics:
        cells = []
        for a in arms:
            s = spread([r[a].get(m) for r in seeds.values() if a in r])
            scale = 100 if pct[m] else 1
            cells.append("-" if s.mean is None else f"{scale * s.mean:.4g} ± {scale * (s.std or 0):.2g} (n={s.n})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for pair, cells in comp.items():
        lines += [
            "",
            f"## {pair}: paired mean [95% t-interval]; MDE80 = smallest difference detected 80% of the time",
            "",
            "| metric | difference | MDE80 |",
            "|---|---:|---:|",
        ]
        for m, c in cells.items():
            lines.append(f"| {m} | {_cell(c, pct[m])} | {_fmt(c['mde80'], pct[m]).lstrip('+')} |")
    per_seed = ["", "## Per seed", "", "| seed | arm | " + " | ".join(metrics) + " |"]
    per_seed.append("|---" * (len(metrics) + 2) + "|")
    for s, r in seeds.items():
        for a in arms:
            if a in r:
                vals = [f"{r[a][m]:.4f}" if m in r[a] else "-" for m in metrics]
                per_seed.append(f"| {s} | {a} | " + " | ".join(vals) + " |")
    return "\n".join(lines + per_seed) + "\n", {"seeds": seeds, "versus": comp, "paper": PAPER}


# the compact tables docs/results.md section 3 and the README quote: (key, heading, in points)
HEADLINE = (
    ("acc", "acc", False),
    ("cnll", "cNLL", False),
    ("cece", "cECE", False),
    ("cam_similarity", "CAM cosine", False),
    ("disagreement", "disagreement", False),
)
OOD_HEADLINE = (("ood/heldout/{}/auroc", "near AUROC"), ("ood/heldout/{}/fpr95", "near FPR95"))
OOD_HEADLINE += (("far/{}/auroc", "far AUROC"), ("far/{}/fpr95", "far FPR95"))


def _compact(cols: list[tuple[str, str, bool]], seeds: dict, arms: list[str], comp: dict) -> list[str]:
    """One table: each arm's mean ± std, then each pair's paired difference [95% t] and its MDE80 row."""
    lines = ["| | " + " | ".join(h for _, h, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for a in arms:
        cells = []
        for key, _, pts in cols:
            sp = spread([r[a].get(key) for r in seeds.values() if a in r])
            k, d = (100, 1) if pts else (1, 3)
            cells.append("-" if sp.mean is None else f"{k * sp.mean:.{d}f} ± {k * (sp.std or 0):.{d}f}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    for pair, by_metric in comp.items():
        diff, power = [], []
        for key, _, pts in cols:
            c, (k, d) = by_metric.get(key), ((100, 2) if pts else (1, 3))
            if c is None or c["ci"] is None:
                diff.append("-")
                power.append("-")
                continue
            lo, hi = c["ci"]
            diff.append(f"{k * c['mean']:+.{d}f} [{k * lo:+.{d}f}, {k * hi:+.{d}f}]")
            power.append("-" if c["mde80"] is None else f"{k * c['mde80']:.{d}f}")
        lines += [f"| {pair} | " + " | ".join(diff) + " |", "| MDE80 | " + " | ".join(power) + " |"]
    return lines


def headline(data: dict, arms: list[str] = ARMS) -> str:
    """The teacher metrics, then the OOD metrics by each declared score: mean ± std per arm, and every pair's paired
    difference [95% t-interval over seeds] with MDE80, the smallest difference the seeds detect 80% of the time."""
    seeds, comp = data["seeds"], data["versus"]
    arms = [a for a in arms if any(a in r for r in seeds.values())]
    n = len(seeds)
    lines = [f"Mean ± std over {n} seeds; each pair: paired mean [95% t-interval over the {n} seeds], MDE80.", ""]
    lines += _compact(list(HEADLINE), seeds, arms, comp)
    for score in SCORES:
        cols = [(k.format(score), h, True) for k, h in OOD_HEADLINE]
        lines += ["", f"OOD by {score}, in points (near: the held-out classes; far: the mean over the far sets):", ""]
        lines += _compact(cols, seeds, arms, comp)
    return "\n".join(lines) + "\n"


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--arms", nargs="+", default=ARMS)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    seeds = collect(a.root, a.arms)
    if not seeds:
        raise SystemExit(f"sdde_vs_de: no seed folder (s0, s1, ...) with an arm's report under {a.root}")
    text, data = render(seeds, a.arms)
    if a.out:
        a.out.write_text(text)
    else:
        print(text)
    if a.json:
        write_json(a.json, data)


if __name__ == "__main__":
    main()
