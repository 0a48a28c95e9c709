"""BatchEnsemble: the rank-1 layers against explicit per-member computations, tiling, the model kind, param groups."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.models import build_arch, build_model
from distill.models.batchensemble import BatchEnsemble, BEConv2d, BELinear

M, B = 3, 4


def randomise(layer):
    with torch.no_grad():
        layer.r.normal_(1, 0.5)
        layer.s.normal_(1, 0.5)
        if layer.bias is not None:
            layer.bias.normal_()


@pytest.mark.parametrize("bias", [True, False])
def test_beconv2d_equals_separately_modulated_convs(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=bias)
    w = conv.weight.detach().clone()
    be = BEConv2d(conv, M)
    randomise(be)
    assert (be.bias is not None) == bias and conv.bias is None  # the shared bias became per-member
    x = torch.randn(M * B, 3, 7, 7)
    out = be(x)
    for m in range(M):
        xm = x[m * B : (m + 1) * B] * be.r[m].view(1, -1, 1, 1)
        want = F.conv2d(xm, w, None, stride=2, padding=1) * be.s[m].view(1, -1, 1, 1)
        if bias:
            want = want + be.bias[m].view(1, -1, 1, 1)
        torch.testing.assert_close(out[m * B : (m + 1) * B], want)


def test_belinear_equals_separately_modulated_linears():
    torch.manual_seed(1)
    lin = nn.Linear(6, 4)
    w = lin.weight.detach().clone()
    be = BELinear(lin, M)
    randomise(be)
    x = torch.randn(M * B, 6)
    out = be(x)
    for m in range(M):
        want = (x[m * B : (m + 1) * B] * be.r[m]) @ w.T * be.s[m] + be.bias[m]
        torch.testing.assert_close(out[m * B : (m + 1) * B], want)


def test_fast_weights_are_initialised_from_n_1_half():
    torch.manual_seed(2)
    be = BEConv2d(nn.Conv2d(64, 64, 3, bias=True), 8)
    for v in (be.r, be.s):
        assert v.mean().item() == pytest.approx(1.0, abs=0.05)
        assert v.std().item() == pytest.approx(0.5, abs=0.05)
    assert torch.equal(be.bias, torch.zeros(8, 64))


@pytest.fixture(scope="module")
def base_and_be(digits):
    torch.manual_seed(3)
    meta = digits.meta
    base = build_arch("tiny_cnn", meta.channels, meta.num_classes, meta.size, meta.mean, meta.std)
    with torch.no_grad():  # non-trivial BatchNorm running statistics, so eval mode is a real test
        for mod in base.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return base.eval(), BatchEnsemble(copy.deepcopy(base), M).eval()


def test_members_differ_with_random_fast_weights(digits, base_and_be):
    _, be = base_and_be
    x = digits.val_x[:B].float() / 255
    logits, feats = be(x)
    assert logits.shape == (M, B, 10)
    assert len(feats) == M and all(f.shape == (B, 16, 8, 8) for f in feats)
    for i in range(M):
        for j in range(i + 1, M):
            assert not torch.allclose(logits[i], logits[j])


def test_unit_fast_weights_give_the_base_net(digits, base_and_be):
    base, be = base_and_be
    be = copy.deepcopy(be)
    originals = {n: m for n, m in base.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    with torch.no_grad():
        for name, layer in be.net.named_modules():
            if isinstance(layer, (BEConv2d, BELinear)):
                layer.r.fill_(1)
                layer.s.fill_(1)
                if layer.bias is not None:  # the per-member bias took over the shared one
                    layer.bias.copy_(originals[name].bias.expand_as(layer.bias))
    x = digits.val_x[:B].float() / 255
    with torch.no_grad():
        logits, feats = be(x)
        want, want_feats = base(x)
    for m in range(M):
        torch.testing.assert_close(logits[m], want)
        torch.testing.assert_close(feats[m], want_feats)


def test_tiling_sends_each_block_of_rows_to_its_member(digits, base_and_be):
    _, be = base_and_be
    xs = (digits.val_x[: M * B].float() / 255).view(M, B, 1, 8, 8)
    with torch.no_grad():
        per_member, _ = be(xs)  # member m sees its own batch xs[m]
        for m in range(M):
            shared, _ = be(xs[m])  # every member sees xs[m]
            torch.testing.assert_close(per_member[m], shared[m])


def test_kind_builds_and_trains_every_parameter(digits):
    torch.manual_seed(4)
    model = build_model({"kind": "batchensemble", "arch": "tiny_cnn", "members": 4}, digits.meta)
    assert isinstance(model, BatchEnsemble) and model.size == 4
    x, y = digits.train_x[:8].float() / 255, digits.train_y[:8]
    logits, _ = model(x)
    assert logits.shape == (4, 8, 10)
    F.cross_entropy(logits.flatten(0, 1), y.repeat(4)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_param_groups_give_fast_weights_half_lr_and_no_decay(digits):
    model = build_model({"kind": "batchensemble", "arch": "tiny_cnn", "members": 2}, digits.meta)
    slow, fast = model.param_groups(0.1, 5e-4)
    assert (slow["lr"], slow["weight_decay"]) == (0.1, 5e-4)
    assert (fast["lr"], fast["weight_decay"]) == (0.05, 0.0)
    layers = [m for m in model.modules() if isinstance(m, (BEConv2d, BELinear))]
    assert len(layers) == 4  # three convs and the head
    want_fast = {id(p) for layer in layers for p in (layer.r, layer.s)}
    assert {id(p) for p in fast["params"]} == want_fast
    ids = [id(p) for g in (slow, fast) for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    torch.optim.SGD([slow, fast], lr=0.1, momentum=0.9)  # a valid torch param-group list


def test_resnet_converts(digits):
    torch.manual_seed(5)
    model = build_model({"kind": "batchensemble", "arch": "resnet20", "members": 2}, digits.meta)
    plain = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear) and not n.endswith(".layer")]
    assert plain == []
    logits, feats = model(digits.val_x[:2].float() / 255)
    assert logits.shape == (2, 2, 10) and len(feats) == 2


def test_prediction_keeps_the_tiled_batch_at_the_asked_rows(digits, base_and_be, monkeypatch):
    """A BatchEnsemble's validation / report batch counts rows through the network (M per image), which made its
    CIFAR-10 CPU validation 2x faster per image; the logits do not depend on it."""
    import distill.predict as predict
    from distill.models.ensemble import Ensemble

    base, be = base_and_be
    assert predict.rows_per_batch(be, 512) == 512 // M and predict.rows_per_batch(be, 2) == 1
    assert predict.rows_per_batch(Ensemble([base]), 512) == 512
    x = digits.test_x[:40]
    seen = []
    real = predict.eval_batches
    monkeypatch.setattr(predict, "eval_batches", lambda x, b, d: (seen.append(b), real(x, b, d))[1])
    by_rows = predict.predict_logits(be, x, batch_size=4 * M)
    assert seen == [4]
    whole = predict.predict_logits(be, x, batch_size=len(x) * M)
    assert by_rows.shape == (M, len(x), digits.meta.num_classes)
    torch.testing.assert_close(by_rows, whole, rtol=1e-5, atol=1e-5)
