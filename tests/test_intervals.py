"""The report's uncertainty: the paired bootstrap against independent computations, the shares' intervals and
their refusals, and the declared (never test-selected) OOD score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from distill import UserError
from distill.report.intervals import PerImage, bootstrap, compare, intervals, per_image, percentile, weighted_auroc
from distill.report.ood import check_ood_score, primary_score, with_primary
from distill.report.table import verdict
from distill.students.readout import MEMBERS, readout_for


def hib(metric: str) -> bool:
    return metric in ("acc", "ood_auroc/primary")


def test_weighted_auroc_equals_sklearn_with_ties_and_repeats():
    rng = np.random.default_rng(0)
    s_in = torch.from_numpy(rng.integers(0, 6, 40).astype(np.float64))  # few values: many ties
    s_out = torch.from_numpy(rng.integers(0, 5, 30).astype(np.float64))
    one = weighted_auroc(s_in, s_out, torch.ones(1, 40, dtype=torch.float64), torch.ones(1, 30, dtype=torch.float64))
    labels = np.r_[np.ones(40), np.zeros(30)]
    assert one.item() == pytest.approx(roc_auc_score(labels, np.r_[s_in, s_out]), abs=1e-12)
    # integer weights = the sample with each image repeated that many times
    w_in, w_out = torch.from_numpy(rng.integers(0, 3, 40)).double(), torch.from_numpy(rng.integers(0, 3, 30)).double()
    rep_in, rep_out = np.repeat(s_in.numpy(), w_in.long().numpy()), np.repeat(s_out.numpy(), w_out.long().numpy())
    want = roc_auc_score(np.r_[np.ones(len(rep_in)), np.zeros(len(rep_out))], np.r_[rep_in, rep_out])
    assert weighted_auroc(s_in, s_out, w_in[None], w_out[None]).item() == pytest.approx(want, abs=1e-12)


def test_bootstrap_resamples_every_model_on_the_same_images():
    n, r, seed = 25, 50, 3
    rng = np.random.default_rng(1)
    values = {k: torch.from_numpy(rng.normal(size=n)) for k in ("teacher", "single")}
    models = {k: PerImage({"nll": v}) for k, v in values.items()}
    got = bootstrap(models, r, seed, None)
    idx = torch.randint(0, n, (r, n), generator=torch.Generator().manual_seed(seed))  # the same draws, gathered
    for k, v in values.items():
        assert torch.allclose(got[k]["nll"], v[idx].mean(1), atol=1e-12)
    # paired: the difference's spread is that of the per-image differences, far below the unpaired spread
    diff = got["teacher"]["nll"] - got["single"]["nll"]
    assert torch.allclose(diff, (values["teacher"] - values["single"])[idx].mean(1), atol=1e-12)


def test_members_are_the_mean_of_their_metrics():
    a, b = torch.tensor([1.0, 0.0, 1.0, 1.0]).double(), torch.tensor([0.0, 0.0, 1.0, 0.0]).double()
    got = bootstrap({"members": [PerImage({"acc": a}), PerImage({"acc": b})], "x": PerImage({"acc": a})}, 20, 0, None)
    one = bootstrap({"m": PerImage({"acc": (a + b) / 2})}, 20, 0, None)
    assert torch.allclose(got["members"]["acc"], one["m"]["acc"])


def test_per_image_means_are_the_report_metrics():
    from distill.metrics import accuracy, brier, nll
    from distill.report.predictions import mean_probs64

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(3, 50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    v = per_image(logits, y, temperature=1.0)
    probs = mean_probs64(logits)
    assert v["acc"].mean().item() == pytest.approx(accuracy(probs, y))
    assert v["nll"].mean().item() == pytest.approx(nll(probs, y))
    assert v["brier"].mean().item() == pytest.approx(brier(probs, y))
    assert torch.allclose(v["cnll"], v["nll"])  # T = 1 changes nothing


def _three(student_of_gain: float, gain: torch.Tensor) -> tuple[dict, dict]:
    """Per-image nll: single = base, teacher = base - gain, student = base - share * gain (lower is better)."""
    base = torch.linspace(0.5, 1.5, 40).double()
    rows = {"single": base, "teacher": base - gain, "s": base - student_of_gain * gain}
    samples = bootstrap({k: PerImage({"nll": v}) for k, v in rows.items()}, 200, 0, None)
    summary = {k: {"nll": v.mean().item()} for k, v in rows.items()}
    return samples, summary


def test_share_interval_of_an_exact_half_is_a_point():
    samples, summary = _three(0.5, torch.full((40,), 0.2, dtype=torch.float64))
    iv = intervals(samples, summary, ["single"], ["s"], hib, resamples=200, seed=0, confidence=0.95)
    sh = iv.shares["single"]["s"]["nll"]
    assert sh.value == pytest.approx(0.5) and sh.ci == pytest.approx((0.5, 0.5))
    assert iv.versus["single"]["teacher"]["nll"].verdict == "better"


def test_share_is_refused_when_the_teacher_gain_is_noise():
    gain = torch.tensor([0.3, -0.3] * 20, dtype=torch.float64)  # mean 0: a gain the test set cannot show
    samples, summary = _three(0.5, gain)
    iv = intervals(samples, summary, ["single"], ["s"], hib, resamples=200, seed=0, confidence=0.95)
    assert iv.versus["single"]["teacher"]["nll"].verdict == "within_noise"
    sh = iv.shares["single"]["s"]["nll"]
    assert sh.value is None and sh.ci is None and "within noise" in sh.reason


def test_compare_reads_the_direction():
    a, b = torch.full((100,), 2.0), torch.full((100,), 1.0)
    assert compare(a, b, 1.0, True, 0.95).verdict == "better"
    assert compare(a, b, 1.0, False, 0.95).verdict == "worse"
    spread = torch.linspace(-1, 1, 101, dtype=torch.float64)
    assert percentile(spread, 0.9) == pytest.approx((-0.9, 0.9), abs=1e-9)
    assert percentile(torch.tensor([1.0, float("inf")] * 50), 0.95) is None  # an undefined ratio: no interval


def test_verdict_says_within_noise_and_gives_intervals():
    def report(teacher_diff_ci: tuple[float, float], verdict_word: str) -> dict:
        cmp = {"diff": 0.01, "ci": list(teacher_diff_ci), "verdict": verdict_word}
        share = {"value": 0.5, "ci": [0.2, 0.8], "reason": None}
        return {
            "reference": "single",
            "summary": {"single": {"acc": 0.8, "cnll": 0.6}, "teacher": {"acc": 0.81, "cnll": 0.59}},
            "gain_share": {"kd": {"acc": 0.5, "cnll": 0.5}},
            "teacher_gain": {"acc": 0.01, "cnll": 0.01},
            "intervals": {
                "confidence": 0.95,
                "versus": {"single": {"teacher": {"acc": cmp, "cnll": cmp}, "kd": {"acc": cmp, "cnll": cmp}}},
                "shares": {"single": {"kd": {"acc": share, "cnll": share}}},
            },
        }

    text = verdict(report((0.004, 0.016), "better"))
    assert "beats the single model beyond this test set's noise" in text
    assert "kd keeps 50% [20%, 80%] of the acc gain" in text
    noisy = verdict(report((-0.004, 0.024), "within_noise"))
    assert "does not beat" in noisy and "within noise" in noisy and "kd keeps" not in noisy


def test_declared_score_stays_primary_when_another_is_better_on_test():
    results = {"mean": {"msp": {"auroc": 0.70}, "neg_entropy": {"auroc": 0.90}}}
    assert with_primary(results, "msp")["primary"] == {"score": "msp", "auroc": 0.70}
    assert primary_score(MEMBERS, "ensemble", 1, {}) == "msp"
    assert primary_score(MEMBERS, "ensemble", 4, {}) == "neg_mi"
    assert primary_score(MEMBERS, "batchensemble", 4, {}) == "neg_mi"
    assert primary_score(readout_for("dirichlet"), "dirichlet", 1, {}) == "neg_mi"
    assert primary_score(MEMBERS, "ensemble", 1, {"single": "max_logit"}) == "max_logit"
    assert primary_score(MEMBERS, "ensemble", 4, {"single": "max_logit"}) == "neg_mi"  # per kind


@pytest.mark.parametrize(
    ("overrides", "words"),
    [({"ensembel": "msp"}, "evaluate.ood_score.ensembel: unknown model kind"), ({"single": "best"}, "unknown score")],
)
def test_ood_score_override_errors(overrides, words):
    with pytest.raises(UserError, match=words):
        check_ood_score(overrides)


def test_an_ensemble_only_score_for_one_network_is_refused():
    with pytest.raises(UserError, match="evaluate.ood_score.single: 'neg_mi' is meaningless"):
        primary_score(MEMBERS, "ensemble", 1, {"single": "neg_mi"})
