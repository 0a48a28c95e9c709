"""Out-of-distribution detection: scores from member logits, and the detection metrics.

Convention: a score is HIGHER for inputs that look MORE IN-DISTRIBUTION; in :func:`ood_metrics` the
in-distribution set is the POSITIVE class. Every score takes member logits ``logits: (M, B, C)`` (a single
network may pass ``(B, C)``, read as ``M = 1``) and returns ``(B,)`` float64. The ensemble's predictive
distribution is the mean of member probabilities ``p_bar = (1/M) sum_m softmax(z_m)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import Tensor

from distill.metrics.classification import entropy
from distill.registry import Registry


def _members(logits: Tensor) -> Tensor:
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    if logits.dim() != 3:
        raise ValueError(f"logits must be (M, B, C) or (B, C), got shape {tuple(logits.shape)}")
    return logits.detach().to(torch.float64)


def msp(logits: Tensor) -> Tensor:
    """Maximum softmax probability of the ensemble (Hendrycks & Gimpel 2017): ``max_c p_bar_c``."""
    return _members(logits).softmax(dim=-1).mean(dim=0).max(dim=-1).values


def max_logit(logits: Tensor) -> Tensor:
    """Max of the mean logit, "MaxLogit" / "MAL" (Hendrycks et al. 2022): ``max_c (1/M) sum_m z_mc``."""
    return _members(logits).mean(dim=0).max(dim=-1).values


def neg_entropy(logits: Tensor) -> Tensor:
    """Negative predictive entropy: ``-H(p_bar) = sum_c p_bar_c log p_bar_c``."""
    return -entropy(_members(logits).softmax(dim=-1).mean(dim=0))


def neg_mutual_information(logits: Tensor) -> Tensor:
    """Negative mutual information (the "epistemic" part of the entropy):
    ``-(H(p_bar) - (1/M) sum_m H(p_m))``; identically 0 for ``M = 1``.
    """
    p = _members(logits).softmax(dim=-1)
    return -(entropy(p.mean(dim=0)) - entropy(p).mean(dim=0))


def min_member_max_logit(logits: Tensor) -> Tensor:
    """The official SDDE CIFAR score: the smallest member max-logit, ``min_m max_c z_mc``."""
    return _members(logits).max(dim=-1).values.min(dim=0).values


OOD_SCORES: Registry[Callable[[Tensor], Tensor]] = Registry("OOD score")
"""Scores by name; aliases map to the same function."""
OOD_SCORES.register("msp", msp)
OOD_SCORES.register("max_logit", max_logit)
OOD_SCORES.register("mal", max_logit)  # alias: mean-logit max is the max of the mean logit
OOD_SCORES.register("neg_entropy", neg_entropy)
OOD_SCORES.register("neg_mutual_information", neg_mutual_information)
OOD_SCORES.register("neg_mi", neg_mutual_information)  # alias
OOD_SCORES.register("min_member_max_logit", min_member_max_logit)
ENSEMBLE_ONLY = frozenset({"neg_mutual_information", "neg_mi"})
"""Scores that need several members (a single network's is None, not a constant)."""


def _to_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def fpr_at_tpr(scores_in: Tensor | np.ndarray, scores_out: Tensor | np.ndarray, tpr_level: float = 0.95) -> float:
    """False-positive rate at a true-positive rate of ``tpr_level`` (in-distribution positive, accept when
    ``score >= threshold``): the fraction of OOD samples accepted by the threshold at which a fraction
    ``tpr_level`` of in-distribution samples are accepted.

    When no threshold gives exactly ``tpr_level`` (samples are discrete), the value is interpolated linearly on
    the ROC curve between the last point below and the first point at or above ``tpr_level`` (all thresholds,
    ``drop_intermediate=False``). Between distinct scores held only by in-distribution samples that segment is
    vertical, so the value is the FPR of the first threshold reaching the TPR; across a score tied between
    in-distribution and OOD samples it is the expected FPR of accepting tied samples at random with the
    probability that gives exactly ``tpr_level``. Where the ROC has a horizontal run at exactly ``tpr_level``
    the smallest FPR is taken.
    """
    s_in, s_out = _to_numpy(scores_in), _to_numpy(scores_out)
    if s_in.size == 0 or s_out.size == 0:
        raise ValueError("need at least one in-distribution and one OOD score")
    if not 0.0 < tpr_level <= 1.0:
        raise ValueError(f"tpr_level must be in (0, 1], got {tpr_level}")
    y = np.concatenate([np.ones_like(s_in), np.zeros_like(s_out)])
    fpr, tpr, _ = roc_curve(y, np.concatenate([s_in, s_out]), drop_intermediate=False)
    k = int(np.searchsorted(tpr, tpr_level - 1e-12, side="left"))  # first point with tpr >= level
    if k == 0:
        return float(fpr[0])
    t0, t1, f0, f1 = tpr[k - 1], tpr[k], fpr[k - 1], fpr[k]
    return float(f0 + (tpr_level - t0) / (t1 - t0) * (f1 - f0))


def ood_metrics(scores_in: Tensor | np.ndarray, scores_out: Tensor | np.ndarray) -> dict[str, float]:
    """Detection metrics with in-distribution as the POSITIVE class (higher score = more in-distribution).

    - ``auroc``: area under the ROC curve (``sklearn.metrics.roc_auc_score``);
    - ``aupr_in``: average precision with in-distribution positive and the score as is;
    - ``aupr_out``: average precision with OOD positive and the NEGATED score;
    - ``fpr95``: :func:`fpr_at_tpr` at 95% TPR (lower is better).
    """
    s_in, s_out = _to_numpy(scores_in), _to_numpy(scores_out)
    if s_in.size == 0 or s_out.size == 0:
        raise ValueError("need at least one in-distribution and one OOD score")
    if not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
        raise ValueError("scores must be finite")
    y = np.concatenate([np.ones_like(s_in), np.zeros_like(s_out)])
    s = np.concatenate([s_in, s_out])
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr_in": float(average_precision_score(y, s)),
        "aupr_out": float(average_precision_score(1.0 - y, -s)),
        "fpr95": fpr_at_tpr(s_in, s_out, 0.95),
    }
