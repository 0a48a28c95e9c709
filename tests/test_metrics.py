"""Metrics against hand-computed cases, numpy/scipy/scikit-learn, and synthetic predictors with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from sklearn.metrics import average_precision_score, roc_auc_score

from distill import metrics as dm


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample_labels(probs: torch.Tensor, seed: int = 1) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=_gen(seed)).squeeze(1)


# ------------------------------------------------------------------------------------------------ classification


def test_accuracy_nll_brier_hand_case() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1]])
    labels = torch.tensor([0, 0])
    assert dm.accuracy(probs, labels) == pytest.approx(0.5)
    assert dm.nll(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.4)) / 2)
    # (0.3^2 + 0.2^2 + 0.1^2 + 0.6^2 + 0.5^2 + 0.1^2) / 2 = (0.14 + 0.62) / 2
    assert dm.brier(probs, labels) == pytest.approx(0.38)


def test_nll_clamps_zero_probability() -> None:
    probs = torch.tensor([[1.0, 0.0]])
    assert dm.nll(probs, torch.tensor([1])) == pytest.approx(-math.log(1e-12))


def test_ece_hand_case_and_reliability() -> None:
    # two samples at confidence 0.9 (one right), one at 0.58 (right): bins (13/15, 14/15] and (8/15, 9/15]
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.42, 0.58]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.58)
    assert dm.ece(probs, labels) == pytest.approx(expected)
    r = dm.reliability(probs, labels, n_bins=15)
    assert r.count.sum().item() == 3 and r.count[13].item() == 2 and r.count[8].item() == 1
    assert r.confidence[13].item() == pytest.approx(0.9) and r.accuracy[13].item() == pytest.approx(0.5)
    assert torch.isnan(r.confidence[0]) and r.edges.shape == (16,)


def test_ece_calibrated_vs_overconfident() -> None:
    logits = 2.0 * torch.randn(20000, 5, generator=_gen(0), dtype=torch.float64)
    probs = logits.softmax(dim=1)
    labels = _sample_labels(probs)
    calibrated = dm.ece(probs, labels)
    overconfident = dm.ece((3.0 * logits).softmax(dim=1), labels)
    assert calibrated < 0.015
    assert overconfident > 0.1


def test_entropy() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(dm.entropy(p), torch.tensor([math.log(2), 0.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ calibration


def _synthetic_calibration(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    z = 3.0 * torch.randn(3000, 10, generator=_gen(seed), dtype=torch.float64)
    return z, _sample_labels(z.softmax(dim=1), seed + 1)


@pytest.mark.parametrize("t0", [2.5, 0.5])
def test_fit_temperature_recovers_known_temperature(t0: float) -> None:
    z, y = _synthetic_calibration()
    t = dm.fit_temperature(z * t0, y)  # the model's log-scores are T0 times the true ones
    assert t == pytest.approx(t0, rel=0.1)
    assert dm.fit_temperature(z * t0, y) == t  # deterministic


def test_fit_temperature_matches_scipy_and_bounds() -> None:
    z, y = _synthetic_calibration(3)
    lp = (1.7 * z).log_softmax(dim=1)

    def f(log_t: float) -> float:
        return torch.nn.functional.cross_entropy(lp / math.exp(log_t), y).item()

    ref = minimize_scalar(f, bounds=(math.log(0.05), math.log(20)), method="bounded", options={"xatol": 1e-10})
    assert dm.fit_temperature(lp, y) == pytest.approx(math.exp(ref.x), rel=1e-4)
    assert dm.fit_temperature(z * 1000.0, y) == pytest.approx(20.0)
    assert dm.fit_temperature(z * 1e-4, y) == pytest.approx(0.05)


def test_apply_temperature_and_calibrated_ll() -> None:
    z, y = _synthetic_calibration()
    p = dm.apply_temperature(z, 2.0)
    assert torch.allclose(p, (z / 2.0).softmax(dim=1)) and torch.allclose(p.sum(1), torch.ones(len(z), dtype=p.dtype))
    # -inf log-probabilities (an underflowed averaged probability) do not break fitting
    lp = z.log_softmax(dim=1).clone()
    lp[0, 1] = -math.inf
    assert 0.05 <= dm.fit_temperature(lp, y) <= 20
    ll = dm.calibrated_log_likelihood(z * 2.5, y, z * 2.5, y)
    assert ll == pytest.approx(-torch.nn.functional.cross_entropy(z, y).item(), abs=0.02)


# ------------------------------------------------------------------------------------------------ ood


def test_ood_scores_hand_case() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 4.0, 0.0]]])  # (M=2, B=1, C=3)
    assert dm.max_logit(logits).tolist() == [2.0]  # mean logits (1, 2, 0)
    assert dm.OOD_SCORES["mal"] is dm.max_logit
    assert dm.min_member_max_logit(logits).tolist() == [2.0]
    p = logits.double().softmax(-1)
    pbar = p.mean(0)
    assert dm.msp(logits).item() == pytest.approx(pbar.max().item())
    assert dm.neg_entropy(logits).item() == pytest.approx((pbar * pbar.log()).sum().item())
    mi = dm.entropy(pbar) - dm.entropy(p).mean(0)
    assert dm.neg_mutual_information(logits).item() == pytest.approx(-mi.item())
    same = torch.randn(1, 6, 4, generator=_gen(0)).expand(3, 6, 4)
    assert torch.allclose(dm.neg_mutual_information(same), torch.zeros(6, dtype=torch.float64), atol=1e-12)
    for fn in dm.OOD_SCORES.values():
        assert fn(same).shape == (6,) and fn(same[0]).shape == (6,)


def test_ood_metrics_separable() -> None:
    r = dm.ood_metrics(torch.tensor([2.0, 3.0, 4.0]), torch.tensor([-1.0, 0.0, 1.0]))
    assert r == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    flipped = dm.ood_metrics(torch.tensor([-1.0, 0.0]), torch.tensor([2.0, 3.0]))
    assert flipped["auroc"] == 0.0 and flipped["fpr95"] == 1.0


def test_ood_metrics_match_sklearn_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 200)
    r = dm.ood_metrics(torch.from_numpy(s_in), s_out)
    y = np.r_[np.ones(300), np.zeros(200)]
    s = np.r_[s_in, s_out]
    assert r["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert r["aupr_in"] == pytest.approx(average_precision_score(y, s))
    assert r["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s))
    # no ties: FPR@95 is the OOD fraction at or above the in-distribution score that keeps >= 95% accepted
    thr = np.sort(s_in)[::-1][math.ceil(0.95 * 300) - 1]
    assert r["fpr95"] == pytest.approx(np.mean(s_out >= thr))


def test_fpr95_hand_cases() -> None:
    s_in = torch.arange(20, dtype=torch.float64)  # accept s >= 1 keeps 19/20 = 95%
    s_out = torch.tensor([0.5, 1.5, 2.5, -1.0])
    assert dm.fpr_at_tpr(s_in, s_out) == pytest.approx(0.5)
    # 95% of 10 lies between thresholds: accept > 1 gives TPR 0.9, FPR 1/3; >= 1 gives TPR 1, FPR 2/3 (tie at 1).
    # Accepting the tied score with probability 1/2 gives TPR 0.95 and FPR 1/3 + 1/6.
    s_in = torch.arange(1, 11, dtype=torch.float64)
    assert dm.fpr_at_tpr(s_in, torch.tensor([1.0, 5.5, 0.0])) == pytest.approx(0.5)
    # without the tie the in-distribution step is vertical: FPR stays 1/3
    assert dm.fpr_at_tpr(s_in, torch.tensor([0.5, 5.5, 0.0])) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------ diversity

ORACLE = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
# pairs (0,1), (1,2): N11 = N00 = N10 = N01 = 1 -> Q = rho = 0, DF = 1/4; pair (0,2) identical -> Q = rho = 1, DF = 1/2


def test_oracle_measures_hand_case() -> None:
    assert dm.q_statistic(ORACLE) == pytest.approx(1 / 3)
    assert dm.correlation(ORACLE) == pytest.approx(1 / 3)
    assert dm.double_fault(ORACLE) == pytest.approx(1 / 3)
    assert dm.oracle_disagreement(ORACLE) == pytest.approx(1 / 3)
    # l_b = (3, 2, 1, 0): sum l (M - l) = 4, / (N M^2) = 4 / 36
    assert dm.kohavi_wolpert_variance(ORACLE) == pytest.approx(1 / 9)
    always_right = torch.ones(2, 5, dtype=torch.bool)
    assert math.isnan(dm.q_statistic(always_right)) and math.isnan(dm.correlation(always_right))
    assert dm.double_fault(always_right) == 0.0 and dm.kohavi_wolpert_variance(always_right) == 0.0


def _onehot_members(preds: list[list[int]], c: int = 3) -> torch.Tensor:
    p = torch.nn.functional.one_hot(torch.tensor(preds), c).double()
    return 0.8 * p + 0.2 / c  # soften, same argmax


def test_pairwise_disagreement_and_oracle_from_probs() -> None:
    probs = _onehot_members([[0, 1, 2, 0], [0, 1, 1, 1], [0, 0, 2, 0]])
    # pairs: (0,1) differ on 2 of 4, (0,2) on 1, (1,2) on 3 -> mean 0.5
    assert dm.pairwise_disagreement(probs) == pytest.approx(0.5)
    labels = torch.tensor([0, 1, 2, 2])
    expected = [[True, True, True, False], [True, True, False, False], [True, False, True, False]]
    assert dm.oracle(probs, labels).tolist() == expected
    d = dm.prediction_diversity(probs, labels)
    assert set(d) >= {"disagreement", "pairwise_kl", "mutual_information", "q_statistic", "correlation"}
    assert set(d) >= {"double_fault", "kohavi_wolpert_variance"}
    assert math.isnan(dm.pairwise_disagreement(probs[:1]))


def test_pairwise_kl_matches_bruteforce() -> None:
    probs = torch.rand(3, 7, 4, generator=_gen(2), dtype=torch.float64).softmax(-1)
    ref = np.mean(
        [
            (probs[i] * (probs[i].log() - probs[j].log())).sum(-1).mean().item()
            for i, j in itertools.permutations(range(3), 2)
        ]
    )
    assert dm.pairwise_kl(probs) == pytest.approx(ref)
    assert dm.pairwise_kl(probs[:1].expand(3, 7, 4)) == pytest.approx(0.0, abs=1e-12)


def test_mutual_information() -> None:
    same = torch.rand(1, 5, 4, generator=_gen(3), dtype=torch.float64).softmax(-1).expand(4, 5, 4)
    assert dm.mutual_information(same) == pytest.approx(0.0, abs=1e-12)
    opposite = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert dm.mutual_information(opposite) == pytest.approx(math.log(2))


def test_attribution_similarity() -> None:
    g = torch.randn(1, 3, 2, 10, 10, generator=_gen(6))
    same = dm.attribution_similarity(torch.cat([g, g]))
    assert same == pytest.approx({"cosine": 1.0, "saliency_cosine": 1.0, "iou_top": 1.0})
    neg = dm.attribution_similarity(torch.cat([g, -g]))
    assert neg == pytest.approx({"cosine": -1.0, "saliency_cosine": 1.0, "iou_top": 1.0})
    # top 10 of 100 pixels: pixels 0..9 vs 5..14 -> IoU 5 / 15
    sal = torch.zeros(2, 1, 1, 100)
    sal[0, 0, 0, :10] = torch.arange(10, 20).float()
    sal[1, 0, 0, 5:15] = torch.arange(10, 20).float()
    r = dm.attribution_similarity(sal.reshape(2, 1, 1, 10, 10))
    assert r["iou_top"] == pytest.approx(1 / 3)


def test_linear_cka() -> None:
    x = torch.randn(50, 8, generator=_gen(7), dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=_gen(8), dtype=torch.float64))
    r, _ = torch.linalg.qr(torch.randn(8, 8, generator=_gen(10), dtype=torch.float64))
    assert dm.linear_cka(x, 3.0 * x @ r + 2.0) == pytest.approx(1.0)
    assert dm.linear_cka(x, x @ q[:8]) == pytest.approx(1.0)  # (50, 12) with orthonormal rows q[:8]
    y = torch.randn(50, 5, generator=_gen(9), dtype=torch.float64)
    # the HSIC (Gram matrix) form
    h = torch.eye(50, dtype=torch.float64) - 1.0 / 50
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    ref = (k * l_).sum() / (torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l_))
    assert dm.linear_cka(x, y) == pytest.approx(ref.item())
    assert dm.mean_pairwise_cka([x, x @ r, x]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ dee


def test_dee_interpolation() -> None:
    curve = [-1.0, -0.8, -0.7]
    assert dm.dee(-1.0, curve) == 1.0
    assert dm.dee(-0.8, curve) == pytest.approx(2.0)
    assert dm.dee(-0.9, curve) == pytest.approx(1.5)
    assert dm.dee(-0.75, curve) == pytest.approx(2.5)
    assert dm.dee(-0.7, curve) == pytest.approx(3.0)
    assert dm.dee_result(-2.0, curve) == (1.0, True, False)
    assert dm.dee_result(-0.5, curve) == (3.0, False, True)


def _synthetic_ensemble(m: int, b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    z = 2.0 * torch.randn(b, 5, generator=g, dtype=torch.float64)
    y = torch.multinomial(z.softmax(-1), 1, generator=g).squeeze(1)
    members = z + 1.5 * torch.randn(m, b, 5, generator=g, dtype=torch.float64)
    return members.log_softmax(-1), y


def test_ensemble_curve_monotone_and_dee_of_a_member() -> None:
    test, y_test = _synthetic_ensemble(4, 500, 10)
    val, y_val = _synthetic_ensemble(4, 500, 11)
    curve = dm.ensemble_curve(test, y_test, val, y_val)
    assert len(curve) == 4 and all(c < 0 for c in curve)
    assert all(a < b for a, b in itertools.pairwise(curve))
    # the size-1 point is the mean calibrated LL of the members; size M is the full ensemble
    singles = [dm.calibrated_log_likelihood(test[i], y_test, val[i], y_val) for i in range(4)]
    assert curve[0] == pytest.approx(sum(singles) / 4)
    assert dm.dee(curve[0], curve) == 1.0 and dm.dee(curve[1], curve) == pytest.approx(2.0)
    # random subsets are reproducible
    a = dm.ensemble_curve(test, y_test, val, y_val, max_subsets=2, seed=3)
    assert a == dm.ensemble_curve(test, y_test, val, y_val, max_subsets=2, seed=3)
    assert a[-1] == pytest.approx(curve[-1])


# ------------------------------------------------------------------------------------------------ fidelity


def test_fidelity() -> None:
    t = torch.tensor([[0.6, 0.4], [0.2, 0.8]])
    s = torch.tensor([[0.3, 0.7], [0.1, 0.9]])
    assert dm.agreement(t, s) == pytest.approx(0.5)
    kl = (
        0.6 * math.log(0.6 / 0.3) + 0.4 * math.log(0.4 / 0.7) + 0.2 * math.log(0.2 / 0.1) + 0.8 * math.log(0.8 / 0.9)
    ) / 2
    assert dm.kl_teacher_student(t, s) == pytest.approx(kl)
    assert dm.kl_teacher_student(t, t) == pytest.approx(0.0, abs=1e-12)


def test_metric_registry_gives_summary_keys_their_direction():
    from distill.metrics.registry import higher_is_better

    assert higher_is_better("acc") and higher_is_better("ood_auroc/msp") and higher_is_better("corruption_acc/s5")
    assert not higher_is_better("cnll") and not higher_is_better("ood_fpr95/neg_mi")
    assert not higher_is_better("corruption_ece/s3") and higher_is_better("acc_cov95")
    from distill.metrics.registry import REPORT_METRICS
    from distill.report.evaluate import METRICS

    assert tuple(REPORT_METRICS) == METRICS  # the report computes exactly the registered metrics


# ------------------------------------------------------------------------------------------------ mutation checks
# Cases that mutation testing (docs/testing.md) showed missing: the hand cases above were symmetric (an accuracy
# of 0.5 equals its complement), used default bin counts only, or never reached a branch.


def test_accuracy_agreement_and_disagreement_are_not_their_complements() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    assert dm.accuracy(probs, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    other = torch.tensor([[0.4, 0.6], [0.1, 0.9], [0.3, 0.7]])
    assert dm.agreement(probs, other) == pytest.approx(1 / 3)  # only the second sample's argmax agrees
    members = _onehot_members([[0, 1, 1], [0, 1, 0]])  # differ on 1 of 3
    assert dm.pairwise_disagreement(members) == pytest.approx(1 / 3)


def test_log_mean_exp_is_the_log_of_the_mean_probability() -> None:
    log_p = torch.log(torch.tensor([[0.2, 0.5], [0.4, 0.1], [0.6, 0.3]], dtype=torch.float64))  # (M=3, B=2)
    want = torch.log(torch.tensor([0.4, 0.3], dtype=torch.float64))  # (0.2 + 0.4 + 0.6) / 3, (0.5 + 0.1 + 0.3) / 3
    torch.testing.assert_close(dm.log_mean_exp(log_p), want)


def _binary(conf_correct: list[tuple[float, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.tensor([[c, 1 - c] for c, _ in conf_correct], dtype=torch.float64)
    return probs, torch.tensor([0 if ok else 1 for _, ok in conf_correct])


def test_ece_bins_are_open_below_closed_above_and_n_bins_is_used() -> None:
    probs, labels = _binary([(0.5, False), (0.62, True), (0.79, False), (0.81, True)])
    # 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]: 0.5 sits on an edge and belongs to the bin below it;
    # |0 - .5| / 4 + |1 - .62| / 4 + 2/4 |.5 - .8| = .125 + .095 + .15
    assert dm.ece(probs, labels, n_bins=4) == pytest.approx(0.37)
    r = dm.reliability(probs, labels, n_bins=4)
    assert r.count.tolist() == [0, 1, 1, 2]
    # the default 15 bins put every sample alone: the mean |correct - confidence| = (.5 + .38 + .79 + .19) / 4
    assert dm.ece(probs, labels) == pytest.approx(0.465)


def test_temperature_below_one_sharpens_and_non_positive_is_refused() -> None:
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    want = torch.tensor([[0.25, 0.09, 0.04]], dtype=torch.float64) / 0.38  # p^2, renormalised
    torch.testing.assert_close(dm.apply_temperature(lp, 0.5), want)
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            dm.apply_temperature(lp, t)
    with pytest.raises(ValueError, match="NaN"):
        dm.fit_temperature(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    assert 0.05 <= dm.fit_temperature(lp, torch.tensor([0])) <= 20.0  # one validation image is enough


def test_aurc_uses_both_ends_of_the_curve_and_two_inputs_suffice() -> None:
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6])
    correct = torch.tensor([False, True, True, False])
    # r = [1, 1/2, 1/3, 1/2]; (sum - (r_1 + r_4) / 2) / 3
    assert dm.aurc(conf, correct) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 2 - (1 + 1 / 2) / 2) / 3)
    assert dm.aurc(torch.tensor([0.9, 0.1]), torch.tensor([False, True])) == pytest.approx(0.75)  # (1.5 - .75) / 1


def test_fpr_at_tpr_interpolates_between_the_right_points() -> None:
    # thresholds 10..2 (TPR .9, FPR 0), 1.5 (TPR .9, FPR 1/3), 1 (TPR 1, FPR 2/3, a tie): accept the tie with
    # probability 1/2 for TPR .95: FPR 1/3 + 1/6
    s_in = torch.arange(1, 11, dtype=torch.float64)
    assert dm.fpr_at_tpr(s_in, torch.tensor([1.0, 1.5, 0.0])) == pytest.approx(0.5)
    # the first threshold already reaches 95%: a tie between every in-distribution score and one of two OOD scores
    assert dm.fpr_at_tpr(torch.tensor([5.0, 5.0, 5.0]), torch.tensor([5.0, 1.0])) == pytest.approx(0.95 * 0.5)


def test_dee_flags_are_set_only_outside_the_curve() -> None:
    curve = [-1.0, -0.8, -0.7]
    assert dm.dee_result(-1.0, curve) == (1.0, False, False)  # on the curve's first point: not floored
    assert dm.dee_result(-0.9, curve) == (1.5, False, False)
    value, floored, capped = dm.dee_result(float("nan"), curve)
    assert math.isnan(value) and floored is False and capped is False


def test_gain_share_tolerance_scales_with_the_values() -> None:
    from distill.report.gain import gain_share

    # values below 1: the tolerance is 1e-6 absolute
    assert gain_share(0.5, 0.5, 0.5 + 8e-7) is None
    assert gain_share(0.5, 0.5, 0.5 + 1.5e-6) == pytest.approx(0.0)
    # values of 10: 1e-6 relative, i.e. 1e-5 absolute
    assert gain_share(10.0, 10.0 - 5e-6, 10.0) is None
    assert gain_share(10.0, 10.0 - 2e-5, 10.0) == pytest.approx(1.0)
