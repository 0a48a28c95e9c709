"""The metric table of one model on the test split: classification, calibration before and after temperature
scaling, the deep-ensemble equivalent (DEE) and fidelity to the teacher.

An ensemble's prediction is the mean of its members' probabilities. Calibrated metrics (cNLL, cBrier, cECE) use
ONE temperature per model, fitted on the validation split and applied to the log of the averaged probabilities.
DEE compares the model's calibrated test log-likelihood with sub-ensembles of the teacher's own members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from distill.metrics import (
    accuracy,
    agreement,
    apply_temperature,
    brier,
    calibrated_log_likelihood,
    dee_result,
    ece,
    ensemble_curve,
    fit_temperature,
    kl_teacher_student,
    nll,
    selective_metrics,
)
from distill.metrics.registry import REPORT_METRICS, higher_is_better  # noqa: F401  (re-exported)
from distill.report.predictions import log_mean_probs64, mean_probs64
from distill.students.readout import Readout

N_BINS = 15  # ECE bins
METRICS = tuple(REPORT_METRICS)  # what model_metrics returns, in report order (distill/metrics/registry.py)


class Source(Protocol):
    """Anything that gives cached member logits by set key: a model's or one member's predictions."""

    size: int
    readout: Readout  # how the logits are read: uncertainties and OOD scores

    def logits(self, key: str, x: Tensor | None = None) -> Tensor: ...


@dataclass(frozen=True)
class Reference:
    """What every model is measured against: labels, the teacher's predictive distribution on test, and the
    teacher members' calibrated log-likelihood curve (DEE)."""

    y_val: Tensor
    y_test: Tensor
    teacher_probs: Tensor  # (B, K) float64
    curve: list[float]  # [CLL(1), ..., CLL(M)] of the teacher's sub-ensembles


def make_reference(teacher: Source, y_val: Tensor, y_test: Tensor) -> Reference:
    test, val = teacher.logits("test"), teacher.logits("val")
    curve = ensemble_curve(test, y_test, val, y_val)  # member logits: each is log-softmax-normalised
    return Reference(y_val, y_test, mean_probs64(test), curve)


def model_metrics(src: Source, ref: Reference) -> dict[str, float | bool]:
    """The test metrics of ``src``; ``temperature`` is the one fitted on validation."""
    test, val = src.logits("test"), src.logits("val")
    y = ref.y_test
    probs, lp_test, lp_val = mean_probs64(test), log_mean_probs64(test), log_mean_probs64(val)
    t = fit_temperature(lp_val, ref.y_val)
    calibrated = apply_temperature(lp_test, t)
    cll = calibrated_log_likelihood(lp_test, y, lp_val, ref.y_val)  # the same T, refitted (deterministic)
    d = dee_result(cll, ref.curve)
    return {
        "acc": accuracy(probs, y),
        "nll": nll(probs, y),
        "cnll": -cll,
        "brier": brier(probs, y),
        "cbrier": brier(calibrated, y),
        "ece": ece(probs, y, N_BINS),
        "cece": ece(calibrated, y, N_BINS),
        "temperature": t,
        "dee": d.value,
        "dee_floored": d.floored,
        "dee_capped": d.capped,
        "agreement": agreement(ref.teacher_probs, probs),
        "kl_teacher": kl_teacher_student(ref.teacher_probs, probs),
        **selective_metrics(probs, y),
    }
