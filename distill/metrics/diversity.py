"""Diversity of an ensemble: of its predictions, of its oracle outputs, of its saliency maps and features.

Shapes: member probabilities ``probs: (M, B, C)``; oracle outputs ``correct: (M, B)`` bool (member ``m`` right
on sample ``b``); class activation maps a list of ``M`` tensors ``(B, H, W)``; input gradients
``(M, B, C, H, W)``; features a list of ``M`` tensors ``(B, D_m)``. Pairwise measures average over unordered
pairs ``i < j`` unless stated otherwise, and are NaN for ``M < 2`` (no pairs).

Oracle measures follow Kuncheva & Whitaker (2003). For a pair ``(i, j)`` let ``N11`` count samples both get right,
``N00`` both wrong, ``N10`` only ``i`` right, ``N01`` only ``j`` right, ``N`` their total.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.metrics.classification import EPS, entropy

_NAN = float("nan")


def _check_probs(probs: Tensor) -> Tensor:
    if probs.dim() != 3:
        raise ValueError(f"probs must be (M, B, C), got shape {tuple(probs.shape)}")
    return probs.detach().to(torch.float64)


def _pairs(m: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(m), 2))


# ---------------------------------------------------------------------------------------------------------------
# prediction based


def pairwise_disagreement(probs: Tensor) -> float:
    """Mean over pairs ``i < j`` of the fraction of samples whose top-1 predictions differ:
    ``(2 / (M(M-1))) sum_{i<j} (1/B) sum_b [argmax p_ib != argmax p_jb]``.
    """
    p = _check_probs(probs)
    pairs = _pairs(p.shape[0])
    if not pairs:
        return _NAN
    pred = p.argmax(dim=-1)  # (M, B)
    return sum((pred[i] != pred[j]).double().mean().item() for i, j in pairs) / len(pairs)


def pairwise_kl(probs: Tensor) -> float:
    """Mean over ORDERED pairs ``i != j`` of the sample-mean ``KL(p_i || p_j) = sum_c p_ic (log p_ic - log p_jc)``
    (``0 log 0 = 0``; ``p_jc`` clamped to at least ``EPS``), in nats.
    """
    p = _check_probs(probs)
    m = p.shape[0]
    if m < 2:
        return _NAN
    # sum_{i != j} KL(p_i||p_j) = sum_i [M * sum_c p_i log p_i - sum_j sum_c p_i log p_j]  (the i = j term is 0)
    neg_h = torch.special.xlogy(p, p).sum(dim=-1)  # (M, B)
    logp = p.clamp_min(EPS).log()  # (M, B, C)
    cross = torch.einsum("ibc,jbc->ijb", p, logp)  # (M, M, B): sum_c p_i log p_j
    kl = neg_h[:, None, :] - cross  # (M, M, B)
    off = ~torch.eye(m, dtype=torch.bool, device=p.device)
    return kl[off].mean().item()


def per_sample_mutual_information(probs: Tensor) -> Tensor:
    """``I_b = H(p_bar_b) - (1/M) sum_m H(p_mb)`` with ``p_bar = (1/M) sum_m p_m``: ``(M, B, C)`` -> ``(B,)``."""
    p = _check_probs(probs)
    return entropy(p.mean(dim=0)) - entropy(p).mean(dim=0)


def mutual_information(probs: Tensor) -> float:
    """Mean over samples of the mutual information between the label and the member index (Jensen-Shannon
    divergence of the members): ``(1/B) sum_b [H(p_bar_b) - (1/M) sum_m H(p_mb)]``; 0 when members agree.
    """
    return per_sample_mutual_information(probs).mean().item()


# ---------------------------------------------------------------------------------------------------------------
# oracle-output based (Kuncheva & Whitaker 2003)


def oracle(probs: Tensor, labels: Tensor) -> Tensor:
    """Oracle outputs ``correct[m, b] = [argmax_c p_mbc = y_b]``: ``(M, B, C), (B,)`` -> ``(M, B)`` bool."""
    p = _check_probs(probs)
    if labels.shape != p.shape[1:2]:
        raise ValueError(f"labels must be ({p.shape[1]},), got shape {tuple(labels.shape)}")
    return p.argmax(dim=-1) == labels.detach().long().to(p.device)[None, :]


def _counts(correct: Tensor, i: int, j: int) -> tuple[float, float, float, float]:
    a, b = correct[i], correct[j]
    n11 = (a & b).sum().item()
    n00 = (~a & ~b).sum().item()
    n10 = (a & ~b).sum().item()
    n01 = (~a & b).sum().item()
    return float(n11), float(n00), float(n10), float(n01)


def _check_oracle(correct: Tensor) -> Tensor:
    if correct.dim() != 2:
        raise ValueError(f"correct must be (M, B), got shape {tuple(correct.shape)}")
    return correct.detach().bool()


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else _NAN


def q_statistic(correct: Tensor) -> float:
    """Yule's Q averaged over pairs: ``Q_ij = (N11 N00 - N01 N10) / (N11 N00 + N01 N10)``, in [-1, 1]
    (1: the members err on the same samples; lower is more diverse). Pairs where the denominator is 0 are
    undefined and left out of the mean; NaN if every pair is undefined.
    """
    c = _check_oracle(correct)
    vals = []
    for i, j in _pairs(c.shape[0]):
        n11, n00, n10, n01 = _counts(c, i, j)
        den = n11 * n00 + n01 * n10
        vals.append((n11 * n00 - n01 * n10) / den if den > 0 else _NAN)
    return _nanmean(vals)


def correlation(correct: Tensor) -> float:
    """Correlation coefficient of the oracle outputs averaged over pairs:
    ``rho_ij = (N11 N00 - N01 N10) / sqrt((N11 + N10)(N01 + N00)(N11 + N01)(N10 + N00))``, in [-1, 1].
    Pairs with a member always right or always wrong (denominator 0) are left out; NaN if all are.
    """
    c = _check_oracle(correct)
    vals = []
    for i, j in _pairs(c.shape[0]):
        n11, n00, n10, n01 = _counts(c, i, j)
        den = math.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
        vals.append((n11 * n00 - n01 * n10) / den if den > 0 else _NAN)
    return _nanmean(vals)


def double_fault(correct: Tensor) -> float:
    """Fraction of samples both members get wrong, averaged over pairs: ``DF_ij = N00 / N`` (lower is more
    diverse).
    """
    c = _check_oracle(correct)
    pairs = _pairs(c.shape[0])
    if not pairs:
        return _NAN
    return sum((~c[i] & ~c[j]).double().mean().item() for i, j in pairs) / len(pairs)


def oracle_disagreement(correct: Tensor) -> float:
    """Kuncheva & Whitaker's disagreement, averaged over pairs: ``D_ij = (N01 + N10) / N`` (one right, one wrong;
    unlike :func:`pairwise_disagreement`, two different wrong answers do not count).
    """
    c = _check_oracle(correct)
    pairs = _pairs(c.shape[0])
    if not pairs:
        return _NAN
    return sum((c[i] != c[j]).double().mean().item() for i, j in pairs) / len(pairs)


def kohavi_wolpert_variance(correct: Tensor) -> float:
    """Kohavi-Wolpert variance (non-pairwise): ``KW = (1 / (N M^2)) sum_b l_b (M - l_b)`` where ``l_b`` is the
    number of members right on sample ``b``; 0 when all members agree on correctness, at most 1/4.
    """
    c = _check_oracle(correct)
    m = c.shape[0]
    correct_count = c.double().sum(dim=0)  # (B,)
    return (correct_count * (m - correct_count)).mean().item() / (m * m)


def prediction_diversity(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """Every prediction-based diversity measure of member probabilities ``(M, B, C)`` with labels ``(B,)``."""
    c = oracle(probs, labels)
    return {
        "disagreement": pairwise_disagreement(probs),
        "pairwise_kl": pairwise_kl(probs),
        "mutual_information": mutual_information(probs),
        "oracle_disagreement": oracle_disagreement(c),
        "q_statistic": q_statistic(c),
        "correlation": correlation(c),
        "double_fault": double_fault(c),
        "kohavi_wolpert_variance": kohavi_wolpert_variance(c),
    }


# ---------------------------------------------------------------------------------------------------------------
# saliency based


def _mean_pairwise_cosine(x: Tensor) -> float:
    """``x: (M, B, D)`` unit rows -> mean over pairs ``i < j`` and samples of ``<x_ib, x_jb>``."""
    pairs = _pairs(x.shape[0])
    if not pairs:
        return _NAN
    return sum((x[i] * x[j]).sum(dim=-1).mean().item() for i, j in pairs) / len(pairs)


def attribution_similarity(grads: Tensor, top_frac: float = 0.1) -> dict[str, float]:
    """Similarity of the members' input gradients ``grads: (M, B, C, H, W)``, averaged over pairs ``i < j`` and
    samples:

    - ``cosine``: cosine of the raw (signed) gradients flattened over ``(C, H, W)``;
    - ``saliency_cosine``: cosine of the saliency maps ``s = sum_c |g_c|`` ``(H, W)``;
    - ``iou_top``: IoU (Jaccard) of the sets of the ``ceil(top_frac * H * W)`` pixels with the largest saliency
      (ties broken by ``torch.topk``), ``|A ∩ B| / |A ∪ B|``.

    Zero gradients have cosine 0 with everything. All NaN for ``M < 2``.
    """
    if grads.dim() != 5:
        raise ValueError(f"grads must be (M, B, C, H, W), got shape {tuple(grads.shape)}")
    if not 0.0 < top_frac <= 1.0:
        raise ValueError(f"top_frac must be in (0, 1], got {top_frac}")
    g = grads.detach().to(torch.float64)
    m = g.shape[0]
    if m < 2:
        return {"cosine": _NAN, "saliency_cosine": _NAN, "iou_top": _NAN}
    sal = g.abs().sum(dim=2).flatten(2)  # (M, B, H*W)
    k = max(1, math.ceil(top_frac * sal.shape[-1]))
    mask = torch.zeros_like(sal, dtype=torch.bool)
    mask.scatter_(-1, sal.topk(k, dim=-1).indices, True)
    ious = []
    for i, j in _pairs(m):
        inter = (mask[i] & mask[j]).sum(dim=-1).double()
        union = (mask[i] | mask[j]).sum(dim=-1).double()
        ious.append((inter / union).mean().item())
    return {
        "cosine": _mean_pairwise_cosine(F.normalize(g.flatten(2), dim=-1)),
        "saliency_cosine": _mean_pairwise_cosine(F.normalize(sal, dim=-1)),
        "iou_top": sum(ious) / len(ious),
    }


# ---------------------------------------------------------------------------------------------------------------
# representation based


def linear_cka(feats_a: Tensor, feats_b: Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two representations of the same ``B`` samples,
    ``feats_a: (B, D_a)``, ``feats_b: (B, D_b)`` (extra trailing dims are flattened). With column-centred
    ``X, Y``: ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``, in [0, 1]; invariant to orthogonal transforms
    and isotropic scaling. NaN if either representation is constant.
    """
    if feats_a.shape[0] != feats_b.shape[0]:
        raise ValueError(f"need the same samples: {feats_a.shape[0]} vs {feats_b.shape[0]} rows")
    x = feats_a.detach().to(torch.float64).flatten(1)
    y = feats_b.detach().to(torch.float64).flatten(1)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    num = torch.linalg.matrix_norm(y.T @ x) ** 2
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return (num / den).item() if den > 0 else _NAN


def mean_pairwise_cka(feats: list[Tensor]) -> float:
    """Mean of :func:`linear_cka` over member pairs ``i < j``; ``feats``: ``M`` tensors ``(B, D_m)``."""
    pairs = _pairs(len(feats))
    if not pairs:
        return _NAN
    return sum(linear_cka(feats[i], feats[j]) for i, j in pairs) / len(pairs)
