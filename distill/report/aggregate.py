"""``distill aggregate RUN...``: the seeds' view of several reports of one recipe.

Each run's report measures one seed on one test set; the spread across seeds is what a claim about the METHOD
must survive. For every model and metric this gives the mean ± sample std over the runs that have it (with how
many of them, so a one-seed number never reads as a mean); for every model against the reference network the
paired per-seed differences with a Student-t interval; and for every student the share of the MEAN gain,

    share = (mean_i s_i - mean_i b_i) / (mean_i t_i - mean_i b_i),

(not the mean of the per-seed shares, which a seed with a near-zero teacher gain would dominate), with Fieller's
interval for a ratio of paired means (Fieller 1954; the exact counterpart of the delta method, and unbounded,
printed as '-', when the teacher's mean gain is not distinguishable from 0 across seeds). With controls, each
run's strongest control (chosen on that run's validation split) is a second baseline.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scipy import stats

from distill import UserError
from distill.checkpoint import atomic_write_text
from distill.metrics.registry import label
from distill.report.schema import Comparisons
from distill.report.table import dig

METRICS = ("acc", "nll", "cnll", "brier", "ece", "cece", "dee", "agreement", "ood_auroc/primary")
SHARE_METRICS = ("acc", "nll", "cnll", "brier", "ood_auroc/primary")
MARK = "<!-- written by distill aggregate -->"


@dataclass(frozen=True)
class Spread:
    mean: float | None
    std: float | None  # sample std (ddof 1); None for one run
    n: int  # runs that have the value
    of: int  # runs given


@dataclass(frozen=True)
class Paired:
    """Mean of the per-seed differences ``model - baseline`` and its t-interval (None below 2 runs)."""

    mean: float | None
    ci: tuple[float, float] | None
    n: int


@dataclass(frozen=True)
class MeanShare:
    value: float | None
    ci: tuple[float, float] | None
    n: int
    reason: str | None = None


@dataclass(frozen=True)
class Aggregate:
    runs: list[str]
    dataset: str
    reference: str
    confidence: float
    metrics: list[str]
    models: dict[str, dict[str, Spread]]
    versus: dict[str, dict[str, dict[str, Paired]]]  # baseline -> model -> metric
    shares: dict[str, dict[str, dict[str, MeanShare]]]  # baseline -> student -> metric
    primary_scores: dict[str, list[str]]  # model -> the declared OOD score of each run
    cost: dict[str, dict[str, Spread]]  # model -> params, MFLOPs / image, latency at the report's batch (ms)


def report_path(run: Path) -> Path:
    """``run`` may be a pipeline run directory (``run/report/report.json``), a report directory or the file."""
    for p in (run / "report" / "report.json", run / "report.json", run):
        if p.is_file():
            return p
    raise UserError(f"aggregate: {run}: no report.json (expected a run directory of distill run, or a report)")


DATA_KEYS = ("name", "num_classes", "test", "val", "holdout_classes")  # reports that pair agree on these
COST_KEYS = ("params", "mflops", "latency_ms")


@dataclass(frozen=True)
class Seed:
    """What this command reads from one run's report.json: its data, its comparisons (summary rows, gain shares,
    strongest control), each model's declared OOD score and its cost at the report's latency batch."""

    data: dict[str, Any]  # DATA_KEYS -> value
    comparisons: Comparisons
    primary_scores: dict[str, str | None]  # model -> declared OOD score
    cost: dict[str, dict[str, float | None]]  # model -> COST_KEYS -> value

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Seed:
        batch = dig(d, "cost", "config", "latency_batch")
        cost = {}
        for m, c in (dig(d, "cost", "models") or {}).items():
            if not c:  # no measurement for this model
                continue
            flops = c.get("flops_per_image")
            mflops = None if flops is None else flops / 1e6
            cost[m] = {
                "params": c.get("params"),
                "mflops": mflops,
                "latency_ms": dig(c, "torch", f"b{batch}", "median_ms"),
            }
        return cls(
            data={k: d["dataset"].get(k) for k in DATA_KEYS},
            comparisons=Comparisons.from_json(d),
            primary_scores={m: dig(e, "ood", "primary", "score") for m, e in d.get("models", {}).items()},
            cost=cost,
        )


def load_reports(runs: list[Path]) -> list[Seed]:
    """The reports, refused when they were measured on different data (their numbers would not pair)."""
    if not runs:
        raise UserError("aggregate: give at least one run directory")
    reports = []
    for run in runs:
        path = report_path(Path(run))
        try:
            reports.append(Seed.from_json(json.loads(path.read_text())))
        except json.JSONDecodeError as err:
            raise UserError(f"aggregate: {path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    first = reports[0].data
    for run, r in zip(runs, reports):
        diff = [k for k in DATA_KEYS if r.data[k] != first[k]]
        if diff:
            raise UserError(f"aggregate: {run}: other data than {runs[0]} ({', '.join(diff)} differ)")
    return reports


def spread(values: list[float | None]) -> Spread:
    vals = [v for v in values if v is not None]
    mean = statistics.fmean(vals) if vals else None
    return Spread(mean, statistics.stdev(vals) if len(vals) > 1 else None, len(vals), len(values))


def paired(diffs: list[float], confidence: float) -> Paired:
    """The t-interval of the mean of paired differences (n - 1 degrees of freedom)."""
    n = len(diffs)
    if n == 0:
        return Paired(None, None, 0)
    mean = statistics.fmean(diffs)
    if n < 2:
        return Paired(mean, None, n)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return Paired(mean, (mean - half, mean + half), n)


def fieller(num: list[float], den: list[float], confidence: float) -> MeanShare:
    """``mean(num) / mean(den)`` with Fieller's interval for paired samples: the ratios r with
    ``(a - r d)^2 <= t^2 (v_aa - 2 r v_ad + r^2 v_dd)``, a, d the means and v the covariances of the means."""
    n = len(num)
    if n == 0:
        return MeanShare(None, None, 0, "no run has the student, the teacher and the baseline")
    a, d = statistics.fmean(num), statistics.fmean(den)
    if n < 2:
        return MeanShare(None if d == 0 else a / d, None, n, "one run: no interval")
    t2 = stats.t.ppf((1 + confidence) / 2, n - 1) ** 2
    v_aa, v_dd = statistics.variance(num) / n, statistics.variance(den) / n
    v_ad = statistics.covariance(num, den) / n
    qa, qb, qc = d * d - t2 * v_dd, a * d - t2 * v_ad, a * a - t2 * v_aa
    if qa <= 0:  # the mean gain's own interval holds 0: the set of ratios is unbounded
        return MeanShare(None, None, n, "the teacher's mean gain is not distinguishable from 0 across the runs")
    root = math.sqrt(max(qb * qb - qa * qc, 0.0))
    return MeanShare(a / d, ((qb - root) / qa, (qb + root) / qa), n)


def _value(report: Seed, model: str, metric: str) -> float | None:
    c = report.comparisons
    if model.startswith("strongest control"):
        model = c.strongest or ""
    return c.summary.get(model, {}).get(metric)


def _versus(reports: list[Seed], models: list[str], base: str, metrics: list[str], conf: float) -> dict:
    out: dict[str, dict[str, Paired]] = {}
    for m in models:
        if m in (base, "members"):
            continue
        out[m] = {}
        for k in metrics:
            pairs = [(_value(r, m, k), _value(r, base, k)) for r in reports]
            out[m][k] = paired([a - b for a, b in pairs if a is not None and b is not None], conf)
    return out


def _shares(reports: list[Seed], students: list[str], base: str, conf: float) -> dict:
    out: dict[str, dict[str, MeanShare]] = {}
    for s in students:
        if s == base:  # --against a student: its share of the gain over itself is no measurement
            continue
        out[s] = {}
        for k in SHARE_METRICS:
            rows = [(_value(r, s, k), _value(r, base, k), _value(r, "teacher", k)) for r in reports]
            rows = [(v, b, t) for v, b, t in rows if None not in (v, b, t)]
            out[s][k] = fieller([v - b for v, b, _ in rows], [t - b for _, b, t in rows], conf)
    return out


def union(lists: list[list[str]]) -> list[str]:
    """Names in first-seen order over the runs (a student trained only in a later run still gets its row)."""
    return list(dict.fromkeys(n for names in lists for n in names))


def aggregate(runs: list[Path], confidence: float = 0.95, against: Sequence[str] = ()) -> Aggregate:
    """The runs' reports together: every model's mean ± std, paired differences and gain shares against the
    single network, each run's strongest control (chosen on its validation split, so it may differ between runs),
    and each model named in ``against`` (one fixed model in every run, e.g. ``control:self_kd``)."""
    reports = load_reports(runs)
    refs = {r.comparisons.reference for r in reports}
    if len(refs) > 1:
        raise UserError(f"aggregate: the runs' baselines differ ({sorted(refs)}): give every run a single network")
    reference = refs.pop()
    models = union([list(r.comparisons.summary) for r in reports])
    students = union([list(r.comparisons.gain_share) for r in reports])
    teacher_rows = [r.comparisons.summary["teacher"] for r in reports]
    top = union([[k for k in row if k.startswith("corruption_acc/s")][-1:] for row in teacher_rows])
    metrics = [*METRICS, *top[-1:]]
    baselines = [reference]
    if any(r.comparisons.strongest for r in reports):
        baselines.append("strongest control")
    for name in against:
        missing = [str(run) for run, r in zip(runs, reports) if name not in r.comparisons.summary]
        if name == reference or missing:
            why = "it is the reference already" if name == reference else f"not in {missing[0]}"
            raise UserError(f"--against {name}: {why}; expected a model of every run: {', '.join(models)}")
        baselines.append(name)
    return Aggregate(
        runs=[str(r) for r in runs],
        dataset=reports[0].data["name"],
        reference=reference,
        confidence=confidence,
        metrics=metrics,
        models={m: {k: spread([_value(r, m, k) for r in reports]) for k in metrics} for m in models},
        versus={b: _versus(reports, models, b, metrics, confidence) for b in baselines},
        shares={b: _shares(reports, students, b, confidence) for b in baselines},
        primary_scores={m: [r.primary_scores.get(m) or "-" for r in reports] for m in models},
        cost={
            m: {k: spread([r.cost.get(m, {}).get(k) for r in reports]) for k in COST_KEYS}
            for m in models
            if any(r.cost.get(m) for r in reports)
        },
    )


def _spread_text(s: Spread, digits: int = 4) -> str:
    if s.mean is None:
        return "-"
    text = f"{s.mean:.{digits}f}" + ("" if s.std is None else f" ± {s.std:.{digits}f}")
    return text if s.n == s.of else f"{text} ({s.n} of {s.of} runs)"


def _paired_text(p: Paired) -> str:
    if p.mean is None:
        return "-"
    if p.ci is None:
        return f"{p.mean:+.4f} (n={p.n})"
    return f"{p.mean:+.4f} [{p.ci[0]:+.4f}, {p.ci[1]:+.4f}]"


def _share_text(s: MeanShare) -> str:
    if s.value is None or s.ci is None:
        return "-" if s.value is None else f"{s.value:.0%} (n={s.n})"
    return f"{s.value:.0%} [{s.ci[0]:.0%}, {s.ci[1]:.0%}]"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return [*lines, *("| " + " | ".join(r) + " |" for r in rows), ""]


def render(agg: Aggregate, title: str | None = None) -> str:
    conf = f"{agg.confidence:.0%}"
    cols = [label(k) if k in METRICS[:-1] else k for k in agg.metrics]
    lines = [MARK, f"# {title or f'{agg.dataset}: {len(agg.runs)} runs'}", "", "Runs: " + ", ".join(agg.runs), ""]
    lines += [f"## Every model: mean ± std over the runs (declared OOD score: {_scores(agg)})", ""]
    lines += _table(["model", *cols], [[m, *[_spread_text(v[k]) for k in agg.metrics]] for m, v in agg.models.items()])
    for base, rows in agg.versus.items():
        lines += [f"## Against {base}: paired per-run differences, mean [{conf} t-interval]", ""]
        lines += _table(["model", *cols], [[m, *[_paired_text(v[k]) for k in agg.metrics]] for m, v in rows.items()])
    for base, rows in agg.shares.items():
        text = (
            f"Share of the MEAN gain, (mean student - mean base) / (mean teacher - mean base), base = {base}, with "
            f"Fieller's {conf} interval for a ratio of paired means; '-': the teacher's mean gain is not "
            "distinguishable from 0 across the runs (no share to speak of)."
        )
        lines += [f"## Share of the teacher's mean gain kept, against {base}", "", text, ""]
        share_cols = [label(k) if k != "ood_auroc/primary" else "OOD AUROC" for k in SHARE_METRICS]
        rows_text = [[s, *[_share_text(v[k]) for k in SHARE_METRICS]] for s, v in rows.items()]
        lines += _table(["student", *share_cols], rows_text)
    if agg.cost:
        lines += ["## Inference cost (each report's own CPU measurement; mean ± std over the runs)", ""]
        head = ["model", "params", "MFLOPs / image", "latency ms"]
        rows = [[m, *[_spread_text(c[k], 2) for k in COST_KEYS]] for m, c in agg.cost.items()]
        lines += _table(head, rows)
    return "\n".join(lines)


def _scores(agg: Aggregate) -> str:
    return "; ".join(f"{m} {'/'.join(dict.fromkeys(s))}" for m, s in agg.primary_scores.items())


def write(agg: Aggregate, out: Path | None, json_out: Path | None, title: str | None = None) -> str:
    """Render, and write ``out`` (markdown) and ``json_out``; a file not written by this command is refused."""
    text = render(agg, title)
    for path in (p for p in (out, json_out) if p is not None):
        if path.exists() and not _ours(path):
            raise UserError(f"--out {path}: exists and was not written by distill aggregate; not overwritten")
    if out is not None:
        atomic_write_text(out, text + "\n")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps({"written_by": MARK, **asdict(agg)}, indent=2) + "\n")
    return text


def _ours(path: Path) -> bool:
    head = path.read_text(errors="replace")[:200]
    return MARK in head
