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


# the package's own architectures (tests collected earlier register theirs in the same process)
OWN = sorted(a for a in ARCHS if ARCHS[a].__module__.startswith("distill.models."))
OWN = [a for a in OWN if a not in ("wrn28_10", "resnet18")]


@pytest.mark.parametrize("arch", OWN)
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


def test_head_lr_scale_gives_every_head_the_update_of_a_network_trained_alone(digits):
    """The student's loss is the mean over heads, so each head gets 1/M of its own gradient; under SGD (Nesterov,
    weight decay) ``head_lr_scale = M`` makes each head's steps equal to those of the head trained alone on its own
    loss at the recipe's lr and decay. The body is frozen here so the heads' inputs are the same in both."""
    import copy

    import torch.nn.functional as F

    from distill.loop import make_optimizer
    from distill.recipe import OptimCfg, TrainCfg

    torch.manual_seed(0)
    heads = 3
    spec = {"kind": "hydra", "arch": "tiny_cnn", "heads": heads, "head_lr_scale": float(heads)}
    model = build_model(spec, digits.meta)
    alone = [copy.deepcopy(model) for _ in range(heads)]  # alone[m] trains head m on its own loss
    cfg = TrainCfg(optim=OptimCfg(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2))
    for net in (model, *alone):
        net.body.requires_grad_(False)
    opt = make_optimizer(model, cfg)
    assert [g["name"] for g in opt.param_groups] == ["body", "heads"]
    assert opt.param_groups[1]["lr"] == pytest.approx(0.05 * heads)
    opts = [
        torch.optim.SGD(a.heads[m].parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)
        for m, a in enumerate(alone)
    ]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
        logits, _ = model(x)  # (M, B, K)
        opt.zero_grad()
        torch.stack([F.cross_entropy(logits[m], y) for m in range(heads)]).mean().backward()
        opt.step()
        for m, (a, o) in enumerate(zip(alone, opts)):
            o.zero_grad()
            F.cross_entropy(a(x)[0][m], y).backward()
            o.step()
    for m in range(heads):
        for p, q in zip(model.heads[m].parameters(), alone[m].heads[m].parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # the plain mean (s = 1) keeps one group, as before the option: its heads would have moved less
    plain = build_model({**spec, "head_lr_scale": 1.0}, digits.meta)
    assert len(make_optimizer(plain, cfg).param_groups) == 1
    with pytest.raises(UserError, match="head_lr_scale"):
        build_model({**spec, "head_lr_scale": 0.0}, digits.meta)
