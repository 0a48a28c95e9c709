"""Shared by the analyses: predicting one network at a time, corrupted test sets, scores and figures. Runs and
their splits are loaded by :mod:`distill.runs`, as the report loads them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill import UserError
from distill.models import ensemble_of
from distill.predict import predict_logits
from distill.report.corruption import corrupted, corruption_table, measure


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def member_probs(net: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Softmax outputs ``(N, K)`` of one network (an ensemble member) on uint8 images ``x`` (eval mode)."""
    return predict_logits(ensemble_of([net]), x, batch_size=batch_size, device=device)[0].softmax(-1)


def corruption_set(
    x: torch.Tensor, names: list[str] | None, severities: list[int], seed: int = 0
) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Every (corruption, severity) of uint8 images ``x``, concatenated: ``(S * N, C, H, W)`` and the S keys.

    The images are the report's (:func:`distill.report.corruption.corrupted`): image ``i``'s noise comes from
    ``(seed, i)``, so an analysis and a report with the same seed measure the same corrupted bytes."""
    from distill.data.corruptions import BENCHMARK

    names = list(BENCHMARK) if names is None else list(names)  # None: CIFAR-10-C's 15, not the extras
    keys = [(n, s) for n in names for s in severities]
    if not keys or len(x) == 0:
        return x[:0], []
    return torch.cat([corrupted(x, n, s, batch_size=len(x), seed=seed) for n, s in keys]), keys


def scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, NLL and Brier score of a predictive distribution ``(N, K)``."""
    return measure(probs, labels, ("acc", "nll", "brier"))


def corruption_scores(probs: torch.Tensor, labels: torch.Tensor, keys: list[tuple[str, int]]) -> dict[str, Any]:
    """``probs (S * N, K)`` on :func:`corruption_set` -> the report's corruption table
    (:func:`distill.report.corruption.corruption_table`) with accuracy, NLL and Brier score: per corruption and
    severity, per severity (mean over corruptions) and overall (mean over both)."""
    if not keys:
        return {}
    n = len(labels)
    index = {k: i for i, k in enumerate(keys)}
    names = list(dict.fromkeys(name for name, _ in keys))
    severities = sorted({s for _, s in keys})
    table = corruption_table(
        lambda name, sev: probs[index[name, sev] * n : (index[name, sev] + 1) * n],
        labels,
        names,
        severities,
        ("acc", "nll", "brier"),
    )
    return {"mean": table["mean"], "severity": table["severity"], "corruption": table["corruptions"]}


def check_options(analysis: str, opts: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``opts``; an unknown option is a UserError naming the analysis."""
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise UserError(f"{analysis}: unknown option {unknown[0]!r}; expected one of: {', '.join(defaults)}")
    o = {**defaults, **opts}
    seed = o.get("subset_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"{analysis}: option 'subset_seed' must be an integer >= 0, got {seed!r}")
    o["severities"] = [int(s) for s in o["severities"]]
    o["corruptions"] = None if o["corruptions"] is None else list(o["corruptions"])
    return o


@dataclass
class FigureList:
    """The figures an analysis wrote, relative to its output folder."""

    out: Path
    names: list[str]

    def save(self, fig, name: str) -> None:
        fig.savefig(self.out / name, dpi=120)
        self.names.append(name)
