"""Design diversity of a population of ensembles and what it buys (Rosales, Munoz & Paulitsch 2023, "Assessing
the Impact of Diversity on the Resilience of Deep Learning Ensembles", ICCV 2023 workshops; arXiv 2303.09283).

For every teacher run, on its test split:

* prediction diversity (:func:`distill.metrics.prediction_diversity`): disagreement, pairwise KL, mutual
  information, and the oracle measures of Kuncheva & Whitaker (oracle disagreement, Q statistic, correlation,
  double fault, Kohavi-Wolpert variance);
* attribution similarity on ``diversity_images`` test images drawn class-stratified (``subset_seed``, as every
  subset here: :func:`distill.data.subsets.eval_subset`; the split may be class-sorted): the members' input
  gradients of the true class's logit (vanilla-gradient saliency, Simonyan et al. 2014) compared by
  :func:`distill.metrics.attribution_similarity` (signed cosine, saliency-map cosine, IoU of the top 10% pixels),
  and the SDDE Grad-CAM cosine (:func:`distill.saliency.mean_cam_similarity`);
* activation similarity: mean pairwise linear CKA (:func:`distill.metrics.mean_pairwise_cka`) of the members'
  CAM-layer feature maps (flattened), on the same images: ``cam_feature_cka``, not the report's ``cka`` (which
  compares penultimate features);
* accuracy, NLL and Brier of the ensemble (mean of member probabilities) and its members' mean accuracy;
* corruption resilience on ``corruption_limit`` drawn test images: the ensemble's accuracy averaged over every
  corruption and severity (``corrupt_acc``), and its drop from the clean accuracy on the same images
  (``corrupt_drop``); also per severity.

Similarities (``grad_cosine``, ``saliency_cosine``, ``iou_top``, ``cam_similarity``, ``cam_feature_cka``,
``q_statistic``, ``correlation``, ``double_fault``) are reported as they are: higher means *less* diverse. Then every
diversity measure is correlated with every target (Pearson's r and Spearman's rho with their two-sided p-values, scipy)
across the population, Pearson's with a 95% Fisher-z interval. Writes ``diversity.json``, ``diversity.md`` and
``scatter_<target>.png``.

When the population repeats designs over seeds (``groups``: one design label per run), a correlation across all runs
mixes two things: designs that differ in both diversity and resilience, and seeds of one design that differ by chance.
So the study also gives each design's mean ± std and the *within-design* correlation: each measure and target minus
its design's mean, pooled over designs (Rosales et al. correlate across designs only; their population has one run per
design). Its Fisher-z interval uses ``n - groups - 1`` degrees of freedom, as a partial correlation does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill import UserError
from distill.analysis.common import (
    FigureList,
    check_options,
    corruption_scores,
    corruption_set,
    pick_device,
    scores,
)
from distill.analysis.correlation import correlate, finite, within
from distill.checkpoint import atomic_write_text
from distill.data.subsets import eval_subset, subset_record
from distill.jsonio import to_plain, write_json
from distill.metrics import accuracy, attribution_similarity, mean_pairwise_cka, prediction_diversity
from distill.models.ensemble import eval_mode, mean_probs
from distill.predict import predict_logits
from distill.report.diversity import true_class_input_gradients
from distill.runs import load_run, run_splits
from distill.saliency import mean_cam_similarity

PREDICTION = (
    "disagreement",
    "pairwise_kl",
    "mutual_information",
    "oracle_disagreement",
    "q_statistic",
    "correlation",
    "double_fault",
    "kohavi_wolpert_variance",
)
ATTRIBUTION = ("grad_cosine", "saliency_cosine", "iou_top", "cam_similarity")
ACTIVATION = ("cam_feature_cka",)
MEASURES = PREDICTION + ATTRIBUTION + ACTIVATION
TARGETS = ("acc", "nll", "corrupt_acc", "corrupt_drop")
# every run's columns in the tables, and what each design's mean ± std is taken of
COLUMNS = ("acc", "nll", "brier", "member_acc_mean", "corrupt_acc", "corrupt_drop", *MEASURES)

DEFAULTS: dict[str, Any] = {
    "names": None,  # one label per run (default: the shortest path suffix that tells the run directories apart)
    "groups": None,  # one design label per run (repeats: the seeds of one design); None: every run its own design
    "diversity_images": 500,
    "corruptions": None,  # None: all 15; [] skips the corruption sweep
    "severities": (1, 2, 3, 4, 5),
    "corruption_limit": 1000,
    "top_frac": 0.1,  # attribution IoU: the top fraction of pixels
    "seed": 0,  # corruption noise
    "subset_seed": 0,  # the class-stratified draws of diversity_images and corruption_limit test images
    "device": None,
    "batch_size": 512,
}


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    return check_options("analyze_diversity", opts, DEFAULTS)


def _names(dirs: list[Path], names: list[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(dirs) or len(set(names)) != len(names):
            raise UserError(f"names: need {len(dirs)} distinct names, got {names}")
        return list(names)
    parts = [d.resolve().parts for d in dirs]
    if len(set(parts)) != len(parts):
        raise UserError("--teachers: a run directory is given twice")
    for k in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    raise AssertionError("distinct paths have distinct suffixes")  # unreachable


def _groups(n: int, groups: list[str] | None) -> list[str] | None:
    if groups is None:
        return None
    if len(groups) != n:
        raise UserError(f"groups: need one design label per run ({n}), got {len(groups)}")
    return [str(g) for g in groups]


def attribution_and_activation(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    top_frac: float = 0.1,
    batch_size: int = 128,
) -> dict[str, float]:
    """Input-gradient attribution similarity, Grad-CAM similarity and CAM-layer feature CKA of the members on
    uint8 ``x``. The gradients are the report's (:func:`distill.report.diversity.true_class_input_gradients`);
    CKA is not a mean over samples, so the features of all images are gathered first (on the CPU)."""
    m = model.size
    att = attribution_similarity(true_class_input_gradients(model, x, y, batch_size), top_frac)
    feats: list[list[torch.Tensor]] = [[] for _ in range(m)]
    with eval_mode(model), torch.no_grad():
        for i in range(0, len(x), batch_size):
            _, fb = model(x[i : i + batch_size].to(device).float().div(255))  # M x (B, C, H, W)
            for j, f in enumerate(fb):
                feats[j].append(f.flatten(1).cpu())
    out = {"grad_cosine": att["cosine"], "saliency_cosine": att["saliency_cosine"], "iou_top": att["iou_top"]}
    out["cam_feature_cka"] = mean_pairwise_cka([torch.cat(f) for f in feats]) if m > 1 else float("nan")
    out["cam_similarity"] = mean_cam_similarity(model, x, y) if m > 1 else float("nan")
    return out


def evaluate_run(run_dir: Path, o: dict[str, Any]) -> dict[str, Any]:
    """Diversity, accuracy and corruption resilience of one teacher run (see the module docstring)."""
    run = load_run(run_dir)
    model, info = run.model, run.info
    device = pick_device(o["device"])
    model.to(device)
    splits = run_splits(run.data)
    x, y = splits.test_x, splits.test_y
    logits = predict_logits(model, x, batch_size=o["batch_size"], device=device)  # (M, N, K)
    probs = logits.softmax(-1)
    row: dict[str, Any] = {
        "run": str(run_dir),
        "members": int(probs.shape[0]),
        "archs": (info.get("spec") or {}).get("archs"),
        "objective": info.get("objective"),
        **scores(mean_probs(logits), y),
        "member_acc_mean": float(np.mean([accuracy(p, y) for p in probs])),
    }
    row.update(prediction_diversity(probs, y))
    k, seed = splits.meta.num_classes, o["subset_seed"]
    idx = eval_subset(y, o["diversity_images"], seed)
    row.update(attribution_and_activation(model, x[idx], y[idx], device, o["top_frac"]))
    row["subsets"] = {"diversity": subset_record(y[idx], seed, k)}
    idx = eval_subset(y, o["corruption_limit"], seed)  # the clean accuracy is on the same images
    xc, keys = corruption_set(x[idx], o["corruptions"], o["severities"], o["seed"])
    if keys:
        row["subsets"]["corruption"] = subset_record(y[idx], seed, k)
        pc = mean_probs(predict_logits(model, xc, batch_size=o["batch_size"], device=device))
        corr = corruption_scores(pc, y[idx], keys)
        clean = accuracy(mean_probs(logits[:, idx]), y[idx])
        row["corrupt_acc"] = corr["mean"]["acc"]
        row["corrupt_nll"] = corr["mean"]["nll"]
        row["corrupt_drop"] = clean - corr["mean"]["acc"]
        row["corrupt_clean_acc"] = clean
        row["corrupt_severity_acc"] = {s: v["acc"] for s, v in corr["severity"].items()}
    return row


def design_means(rows: list[dict[str, Any]], groups: list[str]) -> dict[str, dict[str, Any]]:
    """Per design: its runs, and the mean and std (ddof 1) over them of every target and measure."""
    out: dict[str, dict[str, Any]] = {}
    for g in dict.fromkeys(groups):  # first-seen order
        rs = [r for r, h in zip(rows, groups) if h == g]
        cell: dict[str, Any] = {"runs": len(rs)}
        for c in COLUMNS:
            v = np.array([np.nan if r.get(c) is None else r[c] for r in rs], dtype=np.float64)
            v = v[np.isfinite(v)]
            cell[c] = {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else None}
        out[g] = cell
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not finite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _corr_table(title: str, corr: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = ["", title, "", "| measure | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for m in MEASURES:
        cells = []
        for t in TARGETS:
            c = corr[m][t]
            ci = f" [{_fmt(c['pearson_lo'], 2)}, {_fmt(c['pearson_hi'], 2)}]" if finite(c["pearson_lo"]) else ""
            cells.append(f"{_fmt(c['pearson'], 2)}{ci} / {_fmt(c['spearman'], 2)}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def markdown(
    rows: list[dict[str, Any]],
    corr: dict[str, dict[str, dict[str, float]]],
    designs: dict[str, dict[str, Any]] | None = None,
    corr_within: dict[str, dict[str, dict[str, float]]] | None = None,
) -> str:
    cols = list(COLUMNS)
    lines = [
        "# Design diversity of the population",
        "",
        "Similarity measures (grad/saliency cosine, IoU, CAM similarity, CKA, Q, correlation, double fault): "
        "higher = less diverse.",
        "",
        "| run | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    if designs is not None:
        lines += ["", "## Per design: mean ± std over its runs", ""]
        lines += ["| design | runs | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for g, cell in designs.items():
            vals = [f"{_fmt(cell[c]['mean'])} ± {_fmt(cell[c]['std'])}" if cell.get(c) else "-" for c in cols]
            lines.append(f"| {g} | {cell['runs']} | " + " | ".join(vals) + " |")
    lines += _corr_table(f"## Correlation across the {len(rows)} runs: Pearson r [95% Fisher-z] / Spearman rho", corr)
    if corr_within is not None:
        lines += _corr_table(
            "## Within designs (each value minus its design's mean): Pearson r [95%] / Spearman rho", corr_within
        )
    return "\n".join(lines) + "\n"


def _scatter(rows: list[dict[str, Any]], corr, target: str, figs: FigureList) -> None:
    from matplotlib.figure import Figure

    cols = 5
    nrows = -(-len(MEASURES) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.3 * nrows))
    # fixed margins: tight_layout would draw every axis twice (the figures are most of the study's run time)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.06, top=0.93, wspace=0.3, hspace=0.55)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    ys = [r.get(target, float("nan")) for r in rows]
    for ax, m in zip(axes, MEASURES):
        xs = [r.get(m, float("nan")) for r in rows]
        ax.scatter(xs, ys, s=14)
        for r, xv, yv in zip(rows, xs, ys):
            ax.annotate(r["name"], (xv, yv), fontsize=5, alpha=0.7)
        c = corr[m][target]
        ax.set_title(f"{m}: r={_fmt(c['pearson'], 2)} rho={_fmt(c['spearman'], 2)}", fontsize=6)
        ax.locator_params(nbins=3)
        ax.tick_params(labelsize=5)
    for ax in axes[len(MEASURES) :]:
        ax.set_visible(False)
    fig.suptitle(f"{target} (y) against each diversity measure (x), one point per run", fontsize=8)
    figs.save(fig, f"scatter_{target}.png")


def analyze_diversity(teacher_dirs: list[Path], out: Path, **opts: Any) -> dict[str, Any]:
    """The design-diversity study of the teacher runs ``teacher_dirs`` into ``out`` (``diversity.json``,
    ``diversity.md``, ``scatter_<target>.png``); options and defaults: :data:`DEFAULTS`. Returns the JSON data."""
    o = _options(opts)
    dirs = [Path(d) for d in teacher_dirs]
    if not dirs:
        raise UserError("--teachers: give at least one teacher run directory")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(o["seed"])
    names = _names(dirs, o["names"])
    groups = _groups(len(dirs), o["groups"])
    rows = [{"name": n, **evaluate_run(d, o)} for n, d in zip(names, dirs)]
    if groups is not None:
        for r, g in zip(rows, groups):
            r["design"] = g

    def column(c: str) -> list[float]:
        return [r.get(c, np.nan) for r in rows]

    corr = {m: {t: correlate(column(m), column(t)) for t in TARGETS} for m in MEASURES}
    designs = corr_within = None
    if groups is not None:
        designs = design_means(rows, groups)
        spent = len(designs) - 1  # the design means subtracted
        corr_within = {
            m: {t: correlate(within(column(m), groups), within(column(t), groups), spent) for t in TARGETS}
            for m in MEASURES
        }
    figs = FigureList(out, [])
    for t in TARGETS:
        if any(np.isfinite(r.get(t, np.nan)) for r in rows):
            _scatter(rows, corr, t, figs)
    result = {
        "runs": rows,
        "measures": {"prediction": PREDICTION, "attribution": ATTRIBUTION, "activation": ACTIVATION},
        "targets": TARGETS,
        "correlation": corr,
        "designs": designs,
        "correlation_within_designs": corr_within,
        "options": {k: v for k, v in o.items() if k != "device"},
        "figures": figs.names,
    }
    result = to_plain(result)  # plain data: lists, floats, None for NaN
    write_json(out / "diversity.json", result)
    atomic_write_text(out / "diversity.md", markdown(rows, corr, designs, corr_within))
    return result
