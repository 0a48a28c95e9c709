"""EnD²'s Dirichlet: the NLL against hand / scipy values, the closed-form uncertainties (peaked limit, disagreement,
Monte Carlo), the export-safe digamma, central smoothing, temperature annealing and the EnD² loss by hand."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import dirichlet as scipy_dirichlet

from distill.metrics import central_smoothing, digamma_series, dirichlet_nll, dirichlet_uncertainty
from distill.perturb import make_perturbation
from distill.students.dirichlet import DirichletOptions, DirichletReadout, EnD2, annealed_temperature


def test_dirichlet_nll_hand_computed():
    alpha = torch.tensor([[2.0, 3.0, 5.0]], dtype=torch.float64)  # (B=1, K=3), alpha_0 = 10
    pis = torch.tensor([[[0.2, 0.3, 0.5]], [[0.1, 0.6, 0.3]]], dtype=torch.float64)  # (M=2, B=1, K=3)
    # log Dir(pi | alpha) = lgamma(10) - lgamma(2) - lgamma(3) - lgamma(5) + sum_k (alpha_k - 1) log pi_k
    norm = math.lgamma(10) - math.lgamma(2) - math.lgamma(3) - math.lgamma(5)
    logpdf = [norm + 1 * math.log(p[0]) + 2 * math.log(p[1]) + 4 * math.log(p[2]) for p in pis[:, 0].tolist()]
    by_hand = -(logpdf[0] + logpdf[1]) / 2
    got = dirichlet_nll(alpha.log(), pis)
    assert got.shape == (1,) and got.dtype == torch.float64
    assert got.item() == pytest.approx(by_hand, rel=1e-12)
    # and against an independent implementation, on a batch
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 5, generator=g, dtype=torch.float64)
    p = torch.rand(3, 4, 5, generator=g, dtype=torch.float64).add(0.05)
    p = p / p.sum(-1, keepdim=True)
    ref = [-sum(scipy_dirichlet.logpdf(p[m, b].numpy(), z[b].exp().numpy()) for m in range(3)) / 3 for b in range(4)]
    torch.testing.assert_close(dirichlet_nll(z, p), torch.tensor(ref, dtype=torch.float64), rtol=1e-10, atol=1e-10)


def test_knowledge_vanishes_in_the_peaked_limit():
    mean = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    h_mean = -(mean * mean.log()).sum().item()
    knowledge = []
    for a0 in (1e1, 1e3, 1e5, 1e8):
        u = dirichlet_uncertainty((mean * a0).log()[None])
        assert u["total"].item() == pytest.approx(h_mean, rel=1e-12)  # the mean, hence total, does not move
        knowledge.append(u["knowledge"].item())
        assert u["knowledge"].item() == pytest.approx(u["total"].item() - u["data"].item(), abs=1e-12)
    assert all(a > b for a, b in itertools.pairwise(knowledge))  # falls as alpha_0 grows
    # I[y, pi] ~ (K - 1) / (2 alpha_0) for large alpha_0
    assert knowledge[-1] == pytest.approx((3 - 1) / (2 * 1e8), rel=1e-3) and knowledge[-1] < 1e-7


def _fit(members: torch.Tensor, steps: int = 600) -> torch.Tensor:
    """The maximum-likelihood Dirichlet's log-concentrations for members ``(M, 1, K)``."""
    z = torch.zeros(1, members.shape[-1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        dirichlet_nll(z, members).sum().backward()
        opt.step()
    return z.detach()


def test_knowledge_is_positive_when_members_disagree():
    agree = torch.tensor([[0.70, 0.20, 0.10], [0.68, 0.21, 0.11], [0.71, 0.19, 0.10]], dtype=torch.float64)
    disagree = torch.tensor([[0.90, 0.05, 0.05], [0.05, 0.90, 0.05], [0.05, 0.05, 0.90]], dtype=torch.float64)
    k_agree = dirichlet_uncertainty(_fit(agree[:, None]))["knowledge"].item()
    k_disagree = dirichlet_uncertainty(_fit(disagree[:, None]))["knowledge"].item()
    assert k_disagree > 0.3 and k_agree >= 0
    assert k_disagree > 20 * k_agree
    # the disagreeing members' Dirichlet is flat: alpha_0 below K
    assert _fit(disagree[:, None]).exp().sum().item() < 3


def test_uncertainties_match_monte_carlo():
    alpha = torch.tensor([[0.8, 2.0, 4.0, 0.5]], dtype=torch.float64)
    u = dirichlet_uncertainty(alpha.log())
    torch.manual_seed(0)
    pi = torch.distributions.Dirichlet(alpha[0]).sample((400_000,)).clamp_min(1e-300)  # (S, K)
    expected_entropy = -(pi * pi.log()).sum(-1).mean().item()
    assert u["data"].item() == pytest.approx(expected_entropy, abs=3e-3)
    p = alpha / alpha.sum()
    assert u["total"].item() == pytest.approx(-(p * p.log()).sum().item(), rel=1e-12)


def test_digamma_series_matches_torch():
    x = torch.logspace(-6, 6, 2000, dtype=torch.float64)
    torch.testing.assert_close(digamma_series(x), torch.digamma(x), rtol=1e-10, atol=1e-9)
    x32 = torch.logspace(0, 20, 500)  # what the exported file evaluates: psi(alpha + 1), float32
    torch.testing.assert_close(digamma_series(x32), torch.digamma(x32.double()).float(), rtol=2e-6, atol=2e-6)


def test_export_outputs_match_the_closed_forms():
    z = torch.randn(1, 6, 10, generator=torch.Generator().manual_seed(1)) * 3  # (1, B, K)
    readout = DirichletReadout()
    log_p, total, data, knowledge = readout.export_outputs(z)
    u = readout.uncertainty(z)
    torch.testing.assert_close(log_p, z[0].log_softmax(-1))
    for name, got in (("total", total), ("data", data), ("knowledge", knowledge)):
        torch.testing.assert_close(got.double(), u[name], rtol=1e-5, atol=1e-5)
    assert torch.equal(readout.score("neg_mi", z), -u["knowledge"])


def test_central_smoothing():
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    s = central_smoothing(p, 0.1)
    torch.testing.assert_close(s, torch.tensor([[0.925, 0.025, 0.025, 0.025]]))
    assert s.sum().item() == pytest.approx(1.0)
    assert torch.equal(central_smoothing(p, 0.0), p)
    with pytest.raises(ValueError):
        central_smoothing(p, 1.0)


def test_annealed_temperature():
    assert annealed_temperature(0.0, 10.0, 0.5) == 10.0
    assert annealed_temperature(0.25, 10.0, 0.5) == pytest.approx(5.5)
    assert annealed_temperature(0.5, 10.0, 0.5) == 1.0 and annealed_temperature(0.9, 10.0, 0.5) == 1.0
    assert annealed_temperature(0.3, 10.0, 0.0) == 1.0


def test_end2_loss_by_hand(tiny_ensemble):
    opts = DirichletOptions(t_start=4.0, anneal_fraction=0.5, smoothing=1e-3)
    obj = EnD2(tiny_ensemble, make_perturbation("none", {}, "p"), 0.75, opts)
    obj.set_progress(0.25)  # T = 4 + (1 - 4) * 0.5 = 2.5
    assert obj.current_temperature == pytest.approx(2.5)
    g = torch.Generator().manual_seed(2)
    s_clean, s_pert = torch.randn(1, 5, 4, generator=g), torch.randn(1, 5, 4, generator=g)
    t_pert, y = torch.randn(3, 5, 4, generator=g), torch.tensor([0, 1, 2, 3, 0])
    loss, terms = obj.loss(s_clean, s_pert, t_pert, y)
    t = 2.5
    pi = (1 - 1e-3) * (t_pert / t).softmax(-1) + 1e-3 / 4
    nll = torch.stack(
        [
            -torch.stack(
                [
                    torch.distributions.Dirichlet((s_pert[0, b] / t).double().exp()).log_prob(pi[m, b].double())
                    for m in range(3)
                ]
            ).mean()
            for b in range(5)
        ]
    ).mean()
    ce = torch.nn.functional.cross_entropy(s_clean[0], y)
    assert loss.item() == pytest.approx((0.25 * ce + 0.75 * t * nll).item(), rel=1e-5)
    assert terms["dirichlet_nll"].item() == pytest.approx(nll.item(), rel=1e-5)
