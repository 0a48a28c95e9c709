"""The report's ``controls`` entry: which control is the strongest, the one a student's share is also measured against.

The strongest is chosen on the validation split only: choosing it on test would pick the control that is luckiest
on the very images the shares are then measured on, and flatter every student's share against it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from distill.report.predictions import log_mean_probs64

CHOSEN_BY = (
    "the highest validation accuracy of the mean member softmax, ties broken by the lower validation NLL "
    "(then the order given); never the test split"
)


def validation_scores(logits: Tensor, y: Tensor) -> dict[str, float]:
    """Accuracy and NLL of the mean member softmax: ``logits (M, N, K)`` on the validation split, ``y (N,)``."""
    log_p = log_mean_probs64(logits)  # (N, K)
    return {
        "acc": float((log_p.argmax(-1) == y).double().mean()),
        "nll": float(-log_p.gather(1, y.long().unsqueeze(1)).mean()),
    }


def strongest_control(val_logits: dict[str, Tensor], y: Tensor) -> str | None:
    """The key of the control with the highest validation accuracy, then the lowest validation NLL; None without
    controls. Takes validation logits only (``{key: (M, N, K)}``), so the test split cannot enter the choice."""
    scores = {k: validation_scores(v, y) for k, v in val_logits.items()}
    if not scores:
        return None
    return min(scores, key=lambda k: (-scores[k]["acc"], scores[k]["nll"]))  # min keeps the first of equals


def controls_entry(val_logits: dict[str, Tensor], y: torch.Tensor) -> dict[str, Any]:
    """``report["controls"]``: the control keys in order, the strongest and how it was chosen, with the validation
    numbers that chose it."""
    return {
        "keys": list(val_logits),
        "strongest": strongest_control(val_logits, y),
        "chosen_by": CHOSEN_BY,
        "val": {k: validation_scores(v, y) for k, v in val_logits.items()},
    }
