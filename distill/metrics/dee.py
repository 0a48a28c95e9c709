"""Deep-ensemble equivalent (Ashukha et al. 2020, "Pitfalls of in-domain uncertainty estimation").

``DEE(model) = min {l >= 1 : CLL(l) >= CLL(model)}`` where ``CLL(l)`` is the calibrated test log-likelihood of a
deep ensemble of ``l`` members (averaged over member subsets) and ``CLL`` is linearly interpolated between
integer ``l``. "Calibrated" means temperature scaling fitted on validation and applied to the LOG OF THE AVERAGED
PROBABILITIES (:mod:`distill.metrics.calibration`). The model's own ``ll`` must be computed the same way, e.g. with
:func:`distill.metrics.calibration.calibrated_log_likelihood`.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import NamedTuple

import torch
from torch import Tensor

from distill.metrics.calibration import calibrated_log_likelihood
from distill.metrics.classification import log_mean_exp


def _log_mean_probs(member_log_probs: Tensor, subset: tuple[int, ...]) -> Tensor:
    """``log((1/l) sum_{m in subset} p_m)`` ``(B, C)`` in float64, stably."""
    return log_mean_exp(member_log_probs[list(subset)])


def _subsets(m: int, size: int, max_subsets: int, rng: random.Random) -> list[tuple[int, ...]]:
    if math.comb(m, size) <= max_subsets:
        return list(itertools.combinations(range(m), size))
    chosen: set[tuple[int, ...]] = set()
    out: list[tuple[int, ...]] = []
    while len(out) < max_subsets:  # C(m, size) > max_subsets, so distinct subsets are plentiful
        s = tuple(sorted(rng.sample(range(m), size)))
        if s not in chosen:
            chosen.add(s)
            out.append(s)
    return out


def ensemble_curve(
    member_log_probs_test: Tensor,
    labels_test: Tensor,
    member_log_probs_val: Tensor,
    labels_val: Tensor,
    max_subsets: int = 20,
    seed: int = 0,
) -> list[float]:
    """``[CLL(1), ..., CLL(M)]``: calibrated test log-likelihood (mean ``log p_y``, nats, <= 0) of sub-ensembles.

    ``member_log_probs_*: (M, B, C)`` member log-probabilities (logits are accepted too: each member is
    log-softmax-normalised first). For size ``l``, every subset ``S`` of ``l`` members when there are at most
    ``max_subsets`` of them, else ``max_subsets`` distinct random subsets (``random.Random(seed)``, reproducible);
    for each, ``T_S`` is fitted on ``log p_bar_S`` of the validation split and
    ``CLL_S = mean_i log softmax(log p_bar_S(x_i) / T_S)_{y_i}`` on test; ``CLL(l)`` is the mean over subsets.
    """
    if member_log_probs_test.dim() != 3 or member_log_probs_val.dim() != 3:
        raise ValueError("member log-probabilities must be (M, B, C)")
    m = member_log_probs_test.shape[0]
    if member_log_probs_val.shape[0] != m:
        raise ValueError(f"{m} test members but {member_log_probs_val.shape[0]} validation members")
    if max_subsets < 1:
        raise ValueError(f"max_subsets must be >= 1, got {max_subsets}")
    test = member_log_probs_test.detach().to(torch.float64).log_softmax(dim=-1)
    val = member_log_probs_val.detach().to(torch.float64).log_softmax(dim=-1)
    rng = random.Random(seed)
    curve = []
    for size in range(1, m + 1):
        lls = [
            calibrated_log_likelihood(_log_mean_probs(test, s), labels_test, _log_mean_probs(val, s), labels_val)
            for s in _subsets(m, size, max_subsets, rng)
        ]
        curve.append(sum(lls) / len(lls))
    return curve


class DEEResult(NamedTuple):
    value: float
    floored: bool  # ll <= curve[0]: the model is no better than one member; DEE reported as 1
    capped: bool  # ll > curve[-1]: better than the whole ensemble; DEE reported as M (no extrapolation)


def dee_result(ll: float, curve: list[float]) -> DEEResult:
    """:func:`dee` with flags saying whether the value was floored at 1 or capped at ``M``."""
    if not curve:
        raise ValueError("empty curve")
    if math.isnan(ll):
        return DEEResult(float("nan"), False, False)
    if ll <= curve[0]:
        return DEEResult(1.0, ll < curve[0], False)
    for k in range(len(curve) - 1):
        lo, hi = curve[k], curve[k + 1]
        if lo < ll <= hi:  # first crossing; curve values are averages so the curve need not be monotone
            return DEEResult(k + 1 + (ll - lo) / (hi - lo), False, False)
    return DEEResult(float(len(curve)), False, True)


def dee(ll: float, curve: list[float]) -> float:
    """Deep-ensemble equivalent of a model with calibrated log-likelihood ``ll`` given
    ``curve = ensemble_curve(...)`` (``curve[l - 1]`` is the value for ``l`` members).

    The smallest real ``l >= 1`` with ``c(l) >= ll``, ``c`` the piecewise-linear interpolation of the curve
    (``c(k + t) = (1 - t) curve[k - 1] + t curve[k]``). So ``ll == curve[0]`` gives 1, ``ll == curve[1]`` gives 2,
    halfway between them 1.5. DEE floors at 1: ``ll <= curve[0]`` gives 1.0. It cannot extrapolate beyond the
    largest ensemble: ``ll > curve[-1]`` gives ``float(M)`` (see :func:`dee_result` for the flags).
    """
    return dee_result(ll, curve).value
