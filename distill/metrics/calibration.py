"""Temperature scaling (Guo et al. 2017): one scalar ``T`` fitted on a validation split.

Inputs are log-scores ``log_probs: (B, C)``: the logits of a single network, or, for an ensemble, the LOG OF
THE AVERAGED PROBABILITIES ``log((1/M) sum_m softmax(z_m))`` (see ``distill.models.ensemble.log_mean_probs``).
The temperature divides those log-probabilities, ``softmax(log p_bar / T)``; it never rescales the members'
logits before averaging. Shifting a row by a constant changes nothing, so logits and log-probabilities of a
single network give the same result.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

T_MIN: float = 0.05
T_MAX: float = 20.0
_LOG_FLOOR: float = -1e4  # -inf log-probabilities (a probability that underflowed) become this finite value
_LOG_T_TOL: float = 1e-8  # stop when the bracket on log T is this narrow (T known to a relative 1e-8)


def _prep(log_probs: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (B, C), got shape {tuple(log_probs.shape)}")
    lp = log_probs.detach().to(torch.float64)
    if torch.isnan(lp).any() or torch.isposinf(lp).any():
        raise ValueError("log_probs contains NaN or +inf")
    lp = lp.clamp_min(_LOG_FLOOR)
    if labels is None:
        return lp, None
    if labels.shape != lp.shape[:1] or lp.shape[0] == 0:
        raise ValueError(f"labels must be ({lp.shape[0]},) with B > 0, got shape {tuple(labels.shape)}")
    return lp, labels.detach().long().to(lp.device)


def _nll_at(lp: Tensor, y: Tensor, temperature: float) -> float:
    """``(1/B) sum_i [logsumexp_c(lp_ic / T) - lp_{i,y_i} / T]`` for float64 ``lp``."""
    z = lp / temperature
    return (torch.logsumexp(z, dim=1) - z.gather(1, y[:, None]).squeeze(1)).mean().item()


def fit_temperature(log_probs_val: Tensor, labels_val: Tensor) -> float:
    """The temperature ``T* = argmin_{T in [T_MIN, T_MAX]} (1/B) sum_i -log softmax(log_probs_i / T)_{y_i}``.

    ``log_probs_val: (B, C)`` (see the module docstring for what to pass for an ensemble), ``labels_val: (B,)``.

    With ``beta = 1/T`` the NLL is ``mean_i [logsumexp(beta * z_i) - beta * z_{i,y_i}]``, convex in ``beta``, so it
    is unimodal in ``log T``; a golden-section search on ``log T`` over ``[log 0.05, log 20]`` finds the minimum
    deterministically (no learning rate, no random start) and can return a bound when the optimum lies outside.
    """
    lp, y = _prep(log_probs_val, labels_val)
    assert y is not None

    def f(log_t: float) -> float:
        return _nll_at(lp, y, math.exp(log_t))

    lo, hi = math.log(T_MIN), math.log(T_MAX)
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    while b - a > _LOG_T_TOL:  # ~45 evaluations: the bracket shrinks by 0.618 each step
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    candidates = [(fc, c), (fd, d), (f(lo), lo), (f(hi), hi)]
    best = min(candidates, key=lambda t: t[0])[1]
    return float(min(max(math.exp(best), T_MIN), T_MAX))


def temperature_log_probs(log_probs: Tensor, temperature: float) -> Tensor:
    """``log softmax(log_probs / T)``: ``(B, C)`` -> ``(B, C)`` float64."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lp, _ = _prep(log_probs)
    return (lp / temperature).log_softmax(dim=1)


def apply_temperature(log_probs: Tensor, temperature: float) -> Tensor:
    """Calibrated probabilities ``softmax(log_probs / T)``: ``(B, C)`` -> ``(B, C)`` float64.

    For an ensemble pass the log of the averaged member probabilities (not averaged logits).
    """
    return temperature_log_probs(log_probs, temperature).exp()


def calibrated_log_likelihood(
    log_probs_test: Tensor, labels_test: Tensor, log_probs_val: Tensor, labels_val: Tensor
) -> float:
    """Test log-likelihood after temperature scaling fitted on validation (Ashukha et al. 2020, "calibrated LL"):
    ``T = fit_temperature(val)``, then ``(1/B) sum_i log softmax(log_probs_test_i / T)_{y_i}`` (<= 0, in nats).
    """
    t = fit_temperature(log_probs_val, labels_val)
    lp, y = _prep(log_probs_test, labels_test)
    assert y is not None
    return -_nll_at(lp, y, t)
