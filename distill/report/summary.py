"""One flat row of numbers per model: the metric table, OOD AUROC (mean over sets, per score and for the model's
declared primary score) and corruption accuracy / NLL / ECE per severity. The gap table and the gain shares read
these rows.
"""

from __future__ import annotations

from typing import Any

from distill.report.evaluate import METRICS


def summary_row(entry: dict[str, Any]) -> dict[str, float | None]:
    """``acc, nll, ...``, ``ood_auroc/<score>``, ``ood_fpr95/<score>``, ``ood_auroc/primary``,
    ``corruption_<acc|nll|ece>/s<severity>``."""
    row: dict[str, float | None] = {k: entry["metrics"].get(k) for k in METRICS}
    ood = entry.get("ood")
    if ood is not None:
        for score, v in ood["mean"].items():
            row[f"ood_auroc/{score}"] = None if v is None else v["auroc"]
        for score, v in ood["mean"].items():
            row[f"ood_fpr95/{score}"] = None if v is None else v["fpr95"]
        row["ood_auroc/primary"] = ood["primary"]["auroc"]
    corruption = entry.get("corruption")
    if corruption is not None:
        for measure in ("acc", "nll", "ece"):
            for sev, v in corruption["severity"].items():
                row[f"corruption_{measure}/s{sev}"] = v[measure]
    return row
