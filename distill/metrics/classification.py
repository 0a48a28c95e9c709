"""Classification metrics of a predictive distribution ``probs: (B, C)`` against integer ``labels: (B,)``.

For an ensemble, ``probs`` is the mean of the members' probabilities (never a softmax of averaged logits).
Everything is computed in float64; scalars come back as python floats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

EPS: float = 1e-12
"""Probabilities are clamped to at least ``EPS`` before a logarithm (so NLL is at most ``-log EPS`` ~ 27.6)."""


def _check(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if probs.dim() != 2:
        raise ValueError(f"probs must be (B, C), got shape {tuple(probs.shape)}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must be ({probs.shape[0]},), got shape {tuple(labels.shape)}")
    if probs.shape[0] == 0:
        raise ValueError("empty batch")
    return probs.detach().to(torch.float64), labels.detach().long().to(probs.device)


def log_mean_exp(log_p: Tensor) -> Tensor:
    """``log((1/M) sum_m exp(log_p[m]))`` over the first axis, stably: the log of a mixture's probabilities
    from its components' log-probabilities, ``(M, ...) -> (...)``, in ``log_p``'s dtype. Every "log of the
    ensemble's mean probabilities" in the package is this function."""
    return torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats over the last dimension: ``H(p) = -sum_c p_c log p_c`` (with ``0 log 0 = 0``).

    ``probs: (..., C)`` -> ``(...)`` float64.
    """
    p = probs.detach().to(torch.float64)
    return -torch.special.xlogy(p, p).sum(dim=-1)


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy: ``(1/B) sum_i [argmax_c p_ic = y_i]``. ``probs: (B, C)``, ``labels: (B,)``."""
    p, y = _check(probs, labels)
    return (p.argmax(dim=1) == y).double().mean().item()


def nll(probs: Tensor, labels: Tensor) -> float:
    """Negative log-likelihood: ``-(1/B) sum_i log max(p_{i,y_i}, EPS)`` in nats. ``probs: (B, C)``."""
    p, y = _check(probs, labels)
    py = p.gather(1, y[:, None]).squeeze(1)
    return (-py.clamp_min(EPS).log()).mean().item()


def brier(probs: Tensor, labels: Tensor) -> float:
    """Brier score (multi-class, not divided by C): ``(1/B) sum_i sum_c (p_ic - [c = y_i])^2``, in [0, 2]."""
    p, y = _check(probs, labels)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(torch.float64)
    return ((p - onehot) ** 2).sum(dim=1).mean().item()


class Reliability(NamedTuple):
    """Per-bin statistics for a reliability diagram; every field is ``(n_bins,)``.

    ``confidence`` and ``accuracy`` are NaN in empty bins (``count == 0``); ``edges`` is ``(n_bins + 1,)``.
    """

    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    edges: Tensor


def reliability(probs: Tensor, labels: Tensor, n_bins: int = 15) -> Reliability:
    """Bin samples by confidence ``conf_i = max_c p_ic`` into ``n_bins`` equal-width bins on [0, 1]; bin ``k``
    is ``(k/n, (k+1)/n]`` (the first bin also holds 0). Per bin ``B_k``: mean confidence
    ``conf(B_k) = mean_{i in B_k} conf_i``, accuracy ``acc(B_k) = mean_{i in B_k} [argmax p_i = y_i]``, and
    ``|B_k|``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check(probs, labels)
    conf, pred = p.max(dim=1)
    correct = (pred == y).to(torch.float64)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=p.device)
    # right=False with the upper edges gives the index of the first edge >= conf: bins (lo, hi].
    idx = torch.bucketize(conf.clamp(0.0, 1.0), edges[1:-1], right=False)
    count = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    nonempty = count > 0
    nan = torch.full_like(count, float("nan"))
    confidence = torch.where(nonempty, conf_sum / count.clamp_min(1.0), nan)
    acc = torch.where(nonempty, acc_sum / count.clamp_min(1.0), nan)
    return Reliability(confidence=confidence, accuracy=acc, count=count.long(), edges=edges)


def ece(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error (top-label, equal-width bins, L1):
    ``ECE = sum_k (|B_k| / B) * |acc(B_k) - conf(B_k)|`` with the bins of :func:`reliability`.
    """
    r = reliability(probs, labels, n_bins)
    nonempty = r.count > 0
    w = r.count[nonempty].to(torch.float64) / r.count.sum()
    return (w * (r.accuracy[nonempty] - r.confidence[nonempty]).abs()).sum().item()
