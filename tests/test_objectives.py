"""Each teacher objective's value on a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill import UserError
from distill.data import Batch
from distill.objectives import objective_from_recipe


class FixedLogits(nn.Module):
    """An 'ensemble' whose logits are parameters: forward ignores x, returns logits (M, B, K)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.z = nn.Parameter(logits.clone())
        self.members = [None] * logits.shape[0]

    def forward(self, x):
        return self.z, [self.z.unsqueeze(-1).unsqueeze(-1)]


Z = torch.tensor(
    [
        [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]],  # member 0, two samples, three classes
        [[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]],
    ]  # member 1
)
Y = torch.tensor([0, 2])


def _batch() -> Batch:
    return Batch(x=torch.zeros(1, 2, 1, 1, 1), y=Y.view(1, 2))


def _ce(z: torch.Tensor, y: torch.Tensor) -> float:
    return sum(-math.log(math.exp(z[b][y[b]]) / sum(math.exp(v) for v in z[b])) for b in range(len(y))) / len(y)


def test_de_sum_and_mean():
    ce0, ce1 = _ce(Z[0].tolist(), Y.tolist()), _ce(Z[1].tolist(), Y.tolist())
    obj, _ = objective_from_recipe({"name": "de"}, "teacher.objective")
    loss, terms = obj(FixedLogits(Z), _batch())
    assert loss.item() == pytest.approx(ce0 + ce1, rel=1e-6)
    obj, _ = objective_from_recipe({"name": "de", "ce_reduction": "mean"}, "teacher.objective")
    loss, _ = obj(FixedLogits(Z), _batch())
    assert loss.item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def test_ncl_hand_case():
    p = Z.softmax(-1)  # (M, B, K)
    pbar = p.mean(0)
    d0, d1 = p[0] - pbar, p[1] - pbar
    # two members: the off-diagonal pairs (0,1) and (1,0), each <d0, d1>, averaged over M(M-1) = 2
    ncl = (d0 * d1).sum(-1).mean().item()
    ce = _ce(Z[0].tolist(), Y.tolist()) + _ce(Z[1].tolist(), Y.tolist())
    obj, _ = objective_from_recipe({"name": "ncl", "lam": 0.1}, "k")
    loss, terms = obj(FixedLogits(Z), _batch())
    assert terms["ncl"].item() == pytest.approx(ncl, rel=1e-5)
    assert loss.item() == pytest.approx(ce + 0.1 * ncl, rel=1e-6)
    assert ncl < 0  # with two members, deviations from the mean are opposite


def test_adp_hand_case():
    p = Z.softmax(-1).double()
    pbar = p.mean(0)
    h = -(pbar * pbar.log()).sum(-1).mean().item()
    logdets = []
    for b, y in enumerate(Y.tolist()):
        v = torch.stack([F.normalize(torch.cat([p[m, b, :y], p[m, b, y + 1 :]]), dim=0) for m in range(2)])
        logdets.append(torch.logdet(v @ v.T + 1e-5 * torch.eye(2, dtype=torch.double)).item())
    ce = _ce(Z[0].tolist(), Y.tolist()) + _ce(Z[1].tolist(), Y.tolist())
    expected = ce - 2.0 * h - 0.5 * sum(logdets) / 2
    obj, _ = objective_from_recipe({"name": "adp"}, "k")
    loss, _ = obj(FixedLogits(Z), _batch())
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_balanced_hand_case():
    lam = 0.3
    pbar = Z.softmax(-1).mean(0)
    joint = -pbar[torch.arange(2), Y].log().mean().item()
    ce = _ce(Z[0].tolist(), Y.tolist()) + _ce(Z[1].tolist(), Y.tolist())
    obj, _ = objective_from_recipe({"name": "balanced", "lam": lam}, "k")
    loss, _ = obj(FixedLogits(Z), _batch())
    assert loss.item() == pytest.approx((1 - lam) * ce + lam * 2 * joint, rel=1e-6)


class LinearMembers(nn.Module):
    """Member m: logits = W_m x (flattened); d(sum logits)/dx = sum_k W_m[k], known in closed form."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)  # (M, K, D)
        self.size = w.shape[0]

    def forward(self, x):  # x: (M, B, 1, 1, D)
        z = torch.einsum("mkd,mbd->mbk", self.w, x.flatten(2))
        return z, []


def test_input_gradient_diversity_hand_case():
    torch.manual_seed(0)
    w = torch.randn(2, 3, 4)
    g = w.sum(1)  # (M, D): every sample's input gradient
    cos = F.cosine_similarity(g[0], g[1], dim=0).item()
    model = LinearMembers(w)
    x = torch.rand(1, 2, 1, 1, 4)
    obj, _ = objective_from_recipe({"name": "igd", "lam": 0.5}, "k")
    loss, terms = obj(model, Batch(x=x, y=Y.view(1, 2)))
    assert terms["grad_cos"].item() == pytest.approx(cos, rel=1e-5)


def test_sdde_is_mean_ce_plus_lambda_cam_similarity(tiny_ensemble, digits):
    from distill.objectives.teacher import member_ce
    from distill.saliency import cam_similarity, gradcam

    x = digits.train_x[:8].float() / 255
    y = digits.train_y[:8]
    obj, _ = objective_from_recipe({"name": "sdde", "lam": 0.25, "same_batch": True}, "k")
    torch.manual_seed(0)
    loss, terms = obj(tiny_ensemble, Batch(x=x.unsqueeze(0), y=y.unsqueeze(0)))
    logits, feats = tiny_ensemble(x)
    div = cam_similarity(gradcam(logits, feats, y))
    expected = member_ce(logits, y.unsqueeze(0)).mean() + 0.25 * div
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["div"].item() == pytest.approx(div.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_sdde_diversity_batch_batchnorm_mode(tiny_ensemble, digits, mode):
    """Separate diversity batch: one member's batch through all members, BatchNorm in the asked mode."""
    import copy

    from distill.saliency import cam_similarity, gradcam

    assert any(isinstance(m, nn.BatchNorm2d) for m in tiny_ensemble.modules())
    x = (digits.train_x[:24].float() / 255).view(3, 8, 1, 8, 8)  # (M, B, C, H, W): one batch per member
    y = digits.train_y[:24].view(3, 8)
    reference = copy.deepcopy(tiny_ensemble)
    obj, _ = objective_from_recipe({"name": "sdde", "lam": 1.0, "diversity_bn": mode}, "k")
    tiny_ensemble.train()
    torch.manual_seed(3)
    _, terms = obj(tiny_ensemble, Batch(x=x, y=y))
    torch.manual_seed(3)
    k = int(torch.randint(3, ()).item())
    reference.train()
    with torch.no_grad():
        reference(x)  # the training forward moves the running statistics the eval-mode pass uses
    reference.train(mode == "train")
    logits, feats = reference(x[k])
    div = cam_similarity(gradcam(logits, feats, y[k]))
    assert terms["div"].item() == pytest.approx(div.item(), rel=1e-4)
    assert tiny_ensemble.training  # the eval-mode pass restores train mode


def test_sdde_ood_uses_outlier_batch_and_oe_term(tiny_ensemble, digits):
    x = digits.train_x[:8].float() / 255
    y = digits.train_y[:8]
    outlier = torch.rand(8, 1, 8, 8)
    obj, params = objective_from_recipe({"name": "sdde_ood"}, "k")
    assert params.outlier_weight == 0.5 and obj.needs_outliers
    loss, terms = obj(tiny_ensemble, Batch(x=x.unsqueeze(0), y=y.unsqueeze(0), outlier=outlier))
    tiny_ensemble.eval()
    z, _ = tiny_ensemble(outlier)
    oe = (torch.logsumexp(z, 2) - z.mean(2)).mean()
    assert terms["oe"].item() == pytest.approx(oe.item(), rel=1e-5)
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "nope"}, "teacher.objective.name"),
        ({"name": "sdde", "lamda": 0.1}, "teacher.objective.lamda"),
        ({"name": "sdde", "lam": "big"}, "teacher.objective.lam"),
    ],
)
def test_objective_recipe_errors_name_the_key(spec, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        objective_from_recipe(spec, "teacher.objective")
