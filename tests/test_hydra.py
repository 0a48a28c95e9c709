"""Hydra: the multi-head student equals M separately computed heads on one shared body, shares (and trains) its body
once, splits where the recipe says, narrows its heads, and refuses splits it cannot honour."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill import UserError
from distill.models import ARCHS, build_model
from distill.models.ensemble import eval_mode
from distill.models.hydra import Hydra, default_split, stage_names
from distill.models.registry import Normalized


def _x(n: int = 5, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(4))


def test_equals_separately_computed_heads_on_a_shared_body(digits):
    torch.manual_seed(0)
    model = build_model({"kind": "hydra", "arch": "small_cnn", "heads": 3}, digits.meta)
    assert model.split == "cam_layer" and model.size == 3
    x = _x()
    with torch.no_grad(), eval_mode(model):
        logits, cams = model(x)
        # by hand: standardise, run the shared stages, then each head's own stages, pooling and classifier
        h = model.body.features((x - model.mean) / model.std)
        for m, head in enumerate(model.heads):
            cam = head.cam_layer(h)
            torch.testing.assert_close(logits[m], head.head(cam.mean(dim=(2, 3))), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(cams[m], cam)
    assert logits.shape == (3, 5, digits.meta.num_classes)
    assert not torch.allclose(logits[0], logits[1])  # the heads are initialised independently
    # one batch per head, (M, B, C, H, W): head m sees batch m
    xs = torch.stack([x, x.flip(0), x * 0.5])
    with torch.no_grad(), eval_mode(model):
        per_head, _ = model(xs)
        for m in range(3):
            torch.testing.assert_close(per_head[m], model(xs[m])[0][m], rtol=1e-5, atol=1e-6)


def test_body_is_shared_and_gets_every_heads_gradient(digits):
    torch.manual_seed(0)
    model = build_model({"kind": "hydra", "arch": "tiny_cnn", "heads": 4}, digits.meta)
    body = sum(p.numel() for p in model.body.parameters())
    head = sum(p.numel() for p in model.heads[0].parameters())
    assert sum(p.numel() for p in model.parameters()) == body + 4 * head
    assert all(isinstance(h.features, nn.Identity) for h in model.heads)  # no copy of the body in a head
    logits, _ = model(_x())
    grads = []
    for m in range(4):
        model.zero_grad()
        logits[m].sum().backward(retain_graph=True)
        grads.append(next(model.body.parameters()).grad.clone())
        others = [p.grad for k, h in enumerate(model.heads) if k != m for p in h.parameters()]
        assert all(g is None or not g.any() for g in others)  # head m's output reaches no other head
    model.zero_grad()
    logits.sum().backward()
    torch.testing.assert_close(next(model.body.parameters()).grad, sum(grads), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(a for a in ARCHS if a not in ("wrn28_10", "resnet18")))
def test_every_stage_of_every_small_arch_can_be_split(arch):
    size = 28 if arch == "lenet" else 32 if arch.startswith(("resnet", "airnet", "wrn")) else 8
    net = ARCHS[arch](1, 10, (size, size))
    x = torch.rand(2, 1, size, size)
    for split in stage_names(net)[1:]:
        torch.manual_seed(1)
        nets = [Normalized(ARCHS[arch](1, 10, (size, size)), (0.5,), (0.25,)) for _ in range(2)]
        with torch.no_grad(), eval_mode(nets[0]):
            reference = nets[0](x)[0]
        model = Hydra(nets, (1, size, size), split)
        with torch.no_grad(), eval_mode(model):
            torch.testing.assert_close(model(x)[0][0], reference, rtol=1e-4, atol=1e-5)  # head 0 = the unsplit net
    assert default_split(net) in stage_names(net)


def test_head_width_narrows_the_heads(digits):
    torch.manual_seed(0)
    full = build_model({"kind": "hydra", "arch": "small_cnn", "heads": 2}, digits.meta)
    half = build_model({"kind": "hydra", "arch": "small_cnn", "heads": 2, "head_width": 0.5}, digits.meta)
    conv = half.heads[0].cam_layer[0]
    assert conv.in_channels == 64 and conv.out_channels == 32  # the body's 64 channels in, half the width out
    assert half.heads[0].head.in_features == 32 and half.heads[0].head.out_features == digits.meta.num_classes
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(half.heads[0]) < n(full.heads[0]) / 1.9 and n(half.body) == n(full.body)
    assert half(_x())[0].shape == (2, 5, digits.meta.num_classes)


def test_splits_it_cannot_honour_are_user_errors(digits):
    with pytest.raises(UserError, match="not a stage"):
        build_model({"kind": "hydra", "arch": "tiny_cnn", "heads": 2, "split": "nope"}, digits.meta)
    with pytest.raises(UserError, match="plain conv/BN/linear chain"):  # residual stages cannot be narrowed
        build_model({"kind": "hydra", "arch": "resnet20", "heads": 2, "head_width": 0.5}, digits.meta)


def test_identical_heads_start_equal(digits):
    model = build_model({"kind": "hydra", "arch": "tiny_cnn", "heads": 3, "identical_heads": True}, digits.meta)
    logits, _ = model(_x())
    torch.testing.assert_close(logits[0], logits[2])


def test_construction_leaves_the_global_rng_alone(digits):
    torch.manual_seed(5)
    build_model({"kind": "hydra", "arch": "tiny_cnn", "heads": 2}, digits.meta)
    after_hydra = torch.rand(1)
    torch.manual_seed(5)
    for _ in range(2):
        build_model({"kind": "ensemble", "archs": ["tiny_cnn"]}, digits.meta)
    assert torch.equal(after_hydra, torch.rand(1))  # the same draws as building two networks


def test_hinton_phase_trains_every_head_on_the_ensemble_mean(tiny_ensemble):
    from distill.objectives.student import kd_loss
    from distill.perturb import make_perturbation
    from distill.students.hydra import HydraKD

    obj = HydraKD(tiny_ensemble, make_perturbation("none", {}, "p"), 0.9, 4.0, hinton_phase=0.5)
    g = torch.Generator().manual_seed(3)
    s_clean, s_pert = torch.randn(3, 6, 10, generator=g), torch.randn(3, 6, 10, generator=g)
    t_pert, y = torch.randn(3, 6, 10, generator=g), torch.randint(0, 10, (6,), generator=g)
    obj.set_progress(0.2)  # phase 1: head m against the mean tempered prediction (what a 1-head student learns)
    phase1, _ = obj.loss(s_clean, s_pert, t_pert, y)
    per_head = [kd_loss(s_clean[m : m + 1], s_pert[m : m + 1], t_pert, y, 0.9, 4.0)[0] for m in range(3)]
    assert phase1.item() == pytest.approx(torch.stack(per_head).mean().item(), rel=1e-5)
    obj.set_progress(0.7)  # phase 2: one-to-one
    phase2, _ = obj.loss(s_clean, s_pert, t_pert, y)
    assert phase2.item() == pytest.approx(kd_loss(s_clean, s_pert, t_pert, y, 0.9, 4.0)[0].item(), rel=1e-6)
    assert phase1.item() != pytest.approx(phase2.item(), rel=1e-3)
