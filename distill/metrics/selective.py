"""Selective classification (Geifman & El-Yaniv 2017): a model abstains on the inputs it is least confident about.

Inputs are ranked by a confidence score (here the maximum predictive probability, as torch-uncertainty's ``AURC``
and ``RiskAtxCov`` do). Keeping the ``k`` most confident of ``N`` inputs gives coverage ``c_k = k / N`` and
selective risk ``r_k = (1/k) sum_{i <= k} err_(i)`` (the error rate among the kept inputs).

* AURC: the area under the risk-coverage curve by the trapezoidal rule over ``c_1 .. c_N``, divided by
  ``1 - 1/N`` as if the support were [0, 1] (torch-uncertainty's normalisation):
  ``AURC = (1/(N - 1)) (sum_k r_k - (r_1 + r_N) / 2)``. Lower is better.
* Accuracy at coverage ``c``: ``1 - r_k`` with ``k = ceil(c N)``. Higher is better.

Ties in the confidence are broken by input order (a stable sort), so a tied ranking is not averaged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

COVERAGES = (0.90, 0.95)


def _check(confidence: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
    if confidence.dim() != 1 or confidence.shape != correct.shape:
        raise ValueError(f"confidence and correct must be (N,), got {tuple(confidence.shape)}, {tuple(correct.shape)}")
    if confidence.numel() == 0:
        raise ValueError("empty input")
    return confidence.detach().double().cpu(), correct.detach().bool().cpu()


def selective_risks(confidence: Tensor, correct: Tensor) -> Tensor:
    """``r_k`` for ``k = 1 .. N`` (float64 ``(N,)``): the error rate among the ``k`` most confident inputs."""
    conf, ok = _check(confidence, correct)
    order = torch.sort(conf, descending=True, stable=True).indices
    errors = (~ok[order]).double()
    return errors.cumsum(0) / torch.arange(1, len(errors) + 1, dtype=torch.float64)


def aurc(confidence: Tensor, correct: Tensor) -> float:
    """Area under the risk-coverage curve (see the module docstring); NaN for a single input."""
    r = selective_risks(confidence, correct)
    n = len(r)
    if n < 2:
        return math.nan
    return float((r.sum() - (r[0] + r[-1]) / 2) / (n - 1))


def accuracy_at_coverage(confidence: Tensor, correct: Tensor, coverage: float) -> float:
    """Accuracy on the ``ceil(coverage N)`` most confident inputs."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    r = selective_risks(confidence, correct)
    k = max(1, math.ceil(coverage * len(r) - 1e-9))
    return float(1.0 - r[k - 1])


def selective_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """``{"aurc", "acc_cov90", "acc_cov95"}`` of a predictive distribution ``probs (B, K)``, confidence = max prob."""
    conf, pred = probs.detach().double().max(dim=-1)
    correct = pred.cpu() == labels.detach().long().cpu()
    out = {"aurc": aurc(conf, correct)}
    for c in COVERAGES:
        out[f"acc_cov{round(100 * c)}"] = accuracy_at_coverage(conf, correct, c)
    return out
