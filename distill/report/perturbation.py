"""What the perturbation found while each student trained: the teacher's disagreement on clean vs perturbed
inputs, logged per epoch in the student's ``summary.json`` history (``perturb/<stat>``), averaged over epochs."""

from __future__ import annotations

import statistics
from typing import Any

STATS = ("mi_clean", "mi_perturbed", "disagree_clean", "disagree_perturbed", "delta_rms")
"""Teacher mutual information (nats) and pairwise label disagreement, clean and perturbed; RMS of the
perturbation (in [0, 1] pixel units)."""


def perturbation_summary(summary: dict[str, Any] | None) -> dict[str, float | None] | None:
    """Mean over epochs of each stat (None when never logged); None when there is no history at all."""
    history = (summary or {}).get("history") or []
    if not any(f"perturb/{s}" in h for h in history for s in STATS):
        return None
    out: dict[str, float | None] = {}
    for s in STATS:
        vals = [float(h[f"perturb/{s}"]) for h in history if h.get(f"perturb/{s}") is not None]
        out[s] = statistics.fmean(vals) if vals else None
    out["epochs"] = len(history)
    return out
