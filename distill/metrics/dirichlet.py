"""The Dirichlet of Ensemble Distribution Distillation, EnD² (Malinin, Mlodozeniec & Gales 2019): its negative
log-likelihood of the members' probability vectors, and its closed-form uncertainties.

A Dirichlet student outputs logits ``z (B, K)`` and concentrations ``alpha = exp(z)``, ``alpha_0 = sum_k alpha_k``.
Its predictive distribution is the Dirichlet's mean, ``E[pi] = alpha / alpha_0 = softmax(z)``.

Uncertainties (nats), the Dirichlet counterparts of an ensemble's entropy decomposition:

* total ``H[E[pi]] = -sum_k p_k log p_k`` with ``p = alpha / alpha_0`` (entropy of the mean);
* data ``E_{pi ~ Dir(alpha)}[H[pi]] = -sum_k p_k (psi(alpha_k + 1) - psi(alpha_0 + 1))`` (expected entropy; psi
  is the digamma function);
* knowledge ``I[y, pi] = total - data = -sum_k p_k (log p_k - psi(alpha_k + 1) + psi(alpha_0 + 1))``, the
  counterpart of the ensemble's mutual information; it tends to 0 as ``alpha_0 -> inf`` at a fixed mean.
"""

from __future__ import annotations

import torch
from torch import Tensor


def central_smoothing(probs: Tensor, eps: float) -> Tensor:
    """``(1 - eps) p + eps / K``: pulls every probability vector towards the simplex's centre, so that no
    component is 0 and ``log pi`` in the Dirichlet likelihood stays finite (EnD²'s numerical-safety smoothing)."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"smoothing epsilon must be in [0, 1), got {eps}")
    return (1.0 - eps) * probs + eps / probs.shape[-1]


def dirichlet_nll(log_alpha: Tensor, member_probs: Tensor) -> Tensor:
    """``-(1/M) sum_m log Dir(pi_m | alpha)`` per input: ``log_alpha (B, K)`` (the student's logits ``z``),
    ``member_probs (M, B, K)`` strictly positive -> ``(B,)`` float64.

    ``log Dir(pi | alpha) = lgamma(alpha_0) - sum_k lgamma(alpha_k) + sum_k (alpha_k - 1) log pi_k``, so the mean
    over members needs only the members' mean log-probabilities:

        NLL = sum_k lgamma(alpha_k) - lgamma(alpha_0) - sum_k (alpha_k - 1) (1/M) sum_m log pi_mk

    Computed in float64: ``alpha`` spans many orders of magnitude and ``lgamma`` of a large ``alpha_0`` is large.
    """
    z = log_alpha.double()
    alpha = z.exp()
    alpha0 = torch.logsumexp(z, dim=-1).exp()
    mean_log_pi = member_probs.double().log().mean(dim=0)  # (B, K)
    return torch.lgamma(alpha).sum(-1) - torch.lgamma(alpha0) - ((alpha - 1.0) * mean_log_pi).sum(-1)


def dirichlet_uncertainty(log_alpha: Tensor) -> dict[str, Tensor]:
    """``{"total", "data", "knowledge"}``, each ``(B,)`` float64, of the Dirichlets ``alpha = exp(log_alpha)``
    (``log_alpha (B, K)``); formulas in the module docstring."""
    z = log_alpha.detach().double()
    log_p = z.log_softmax(dim=-1)
    p = log_p.exp()
    alpha0 = torch.logsumexp(z, dim=-1, keepdim=True).exp()
    psi_gap = torch.digamma(z.exp() + 1.0) - torch.digamma(alpha0 + 1.0)  # (B, K), <= 0
    total = -(p * log_p).sum(-1)
    data = -(p * psi_gap).sum(-1)
    # knowledge from its own sum rather than total - data: no cancellation when both are large
    knowledge = -(p * (log_p - psi_gap)).sum(-1)
    return {"total": total, "data": data, "knowledge": knowledge}


# Bernoulli-number coefficients of the asymptotic series psi(y) ~ log y - 1/(2y) - sum_n B_2n / (2n y^2n)
_PSI_SERIES = (1.0 / 12, -1.0 / 120, 1.0 / 252, -1.0 / 240, 1.0 / 132)
_PSI_SHIFT = 6


def digamma_series(x: Tensor) -> Tensor:
    """``psi(x)`` for ``x > 0`` from elementary operations only (ONNX has no digamma operator).

    The recurrence ``psi(x) = psi(x + n) - sum_{j<n} 1 / (x + j)`` moves the argument to ``y = x + 6 >= 6``, where
    the asymptotic series to ``y^-10`` is accurate to about 1e-11 (the next term is ``691 / (32760 y^12)``).
    """
    shift = torch.zeros_like(x)
    for j in range(_PSI_SHIFT):
        shift = shift + 1.0 / (x + j)
    y = x + _PSI_SHIFT
    inv2 = 1.0 / (y * y)
    series = torch.zeros_like(x)
    for c in reversed(_PSI_SERIES):  # Horner in 1/y^2
        series = (series + c) * inv2
    return torch.log(y) - 0.5 / y - series - shift
