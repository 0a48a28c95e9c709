"""Selective classification: AURC of a perfect ranking against its closed form, a worst ranking, accuracy at
coverage, and the torch-uncertainty docstring example."""

from __future__ import annotations

import math

import pytest
import torch

from distill.metrics import accuracy_at_coverage, aurc, selective_metrics, selective_risks


def _perfect_ranking_aurc(n: int, e: int) -> float:
    """Closed form: the ``n - e`` correct inputs ranked first, so ``r_k = 0`` for ``k <= n - e`` and
    ``r_k = (k - (n - e)) / k`` after; ``sum_k r_k = e - (n - e) (H_n - H_{n-e})`` with harmonic numbers ``H``;
    AURC = ``(sum_k r_k - (r_1 + r_n) / 2) / (n - 1)`` with ``r_1 = 0`` (``e < n``) and ``r_n = e / n``."""
    harmonic = sum(1.0 / k for k in range(n - e + 1, n + 1))
    return (e - (n - e) * harmonic - e / (2 * n)) / (n - 1)


@pytest.mark.parametrize("n, e", [(10, 3), (100, 7), (1000, 250), (5, 0)])
def test_aurc_of_a_perfect_ranking_is_its_closed_form(n, e):
    correct = torch.tensor([True] * (n - e) + [False] * e)
    confidence = torch.linspace(1.0, 0.0, n)  # the correct ones are the most confident
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # input order must not matter
    assert aurc(confidence[perm], correct[perm]) == pytest.approx(_perfect_ranking_aurc(n, e), rel=1e-12, abs=1e-15)


def test_perfect_ranking_tends_to_the_optimal_area():
    # large-N limit of the closed form: r + (1 - r) ln(1 - r) (Geifman et al. 2019's optimal AURC)
    n, e = 100_000, 20_000
    r = e / n
    correct = torch.tensor([True] * (n - e) + [False] * e)
    assert aurc(torch.linspace(1, 0, n), correct) == pytest.approx(r + (1 - r) * math.log(1 - r), rel=1e-3)


def test_worst_ranking_and_risks():
    correct = torch.tensor([False, False, True, True])
    conf = torch.tensor([0.9, 0.8, 0.2, 0.1])  # the errors are the most confident
    torch.testing.assert_close(
        selective_risks(conf, correct), torch.tensor([1.0, 1.0, 2 / 3, 0.5], dtype=torch.float64)
    )
    assert aurc(conf, correct) == pytest.approx((1 + 1 + 2 / 3 + 0.5 - (1 + 0.5) / 2) / 3)
    assert aurc(conf, ~correct) < aurc(conf, correct)


def test_accuracy_at_coverage():
    conf = torch.arange(20, 0, -1).float()  # input i is the i-th most confident
    correct = torch.ones(20, dtype=torch.bool)
    correct[17] = False  # inside the top 90% (18 inputs)
    correct[19] = False  # only at 100% coverage
    assert accuracy_at_coverage(conf, correct, 0.90) == pytest.approx(17 / 18)
    assert accuracy_at_coverage(conf, correct, 0.95) == pytest.approx(18 / 19)
    assert accuracy_at_coverage(conf, correct, 1.0) == pytest.approx(18 / 20)
    assert accuracy_at_coverage(conf, correct, 0.85) == 1.0  # ceil(0.85 * 20) = 17


def test_selective_metrics_from_probabilities():
    # torch-uncertainty's AURC docstring example: tensor(0.0833)
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.8, 0.2]])
    m = selective_metrics(probs, torch.tensor([0, 1, 0]))
    assert m["aurc"] == pytest.approx(1 / 12)
    assert set(m) == {"aurc", "acc_cov90", "acc_cov95"} and m["acc_cov90"] == pytest.approx(2 / 3)
