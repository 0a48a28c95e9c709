"""Grad-CAM against an analytic case and against a plain hook-based implementation; the SDDE map
similarity and where its gradient goes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.models import Ensemble
from distill.saliency import cam_similarity, gradcam, pairwise_cosine, standardised_maps


class LinearCAMNet(nn.Module):
    """feats = x repeated over C channels scaled by s_c; logits_k = sum_c w_kc * mean_hw feats_c.

    dS/dA_c = w_yc / (H W) everywhere, so alpha_c = w_yc / (H W) and CAM = ReLU(sum_c alpha_c s_c x).
    """

    def __init__(self, w: torch.Tensor, s: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)  # (K, C)
        self.s = nn.Parameter(s)  # (C,)

    def forward(self, x: torch.Tensor):
        feats = x * self.s.view(1, -1, 1, 1)  # (B, C, H, W), x: (B, 1, H, W)
        return feats.mean((2, 3)) @ self.w.T, feats


def test_gradcam_matches_analytic_gradient():
    torch.manual_seed(0)
    k, c, h, w = 3, 4, 5, 6
    net = LinearCAMNet(torch.randn(k, c), torch.rand(c) + 0.5)
    x = torch.rand(2, 1, h, w)
    y = torch.tensor([0, 2])
    logits, feats = net(x)
    (cam,) = gradcam(logits.unsqueeze(0), [feats], y, create_graph=False)
    alpha = net.w[y] / (h * w)  # (B, C)
    expected = F.relu((alpha[:, :, None, None] * feats).sum(1))
    torch.testing.assert_close(cam, expected.detach())


def hook_gradcam(member: nn.Module, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Textbook Grad-CAM with forward/backward hooks, in eval mode, on a fresh graph."""
    store = {}
    h1 = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    h2 = layer.register_full_backward_hook(lambda m, gi, go: store.__setitem__("g", go[0]))
    member.eval()
    logits, _ = member(x)
    member.zero_grad()
    logits.gather(1, y[:, None]).sum().backward()
    h1.remove()
    h2.remove()
    alpha = store["g"].mean((2, 3), keepdim=True)
    return F.relu((alpha * store["a"]).sum(1)).detach()


def test_differentiable_cam_equals_hook_gradcam(tiny_ensemble, digits):
    x = digits.test_x[:8].float() / 255
    y = digits.test_y[:8]
    tiny_ensemble.eval()
    logits, feats = tiny_ensemble(x)
    cams = gradcam(logits, feats, y, create_graph=True)
    for member, cam in zip(tiny_ensemble.members, cams):
        ref = hook_gradcam(member, member.net.cam_layer, x, y)
        torch.testing.assert_close(cam.detach(), ref, rtol=1e-5, atol=1e-6)


def test_cam_similarity_identical_opposite_and_resized():
    torch.manual_seed(0)
    a = torch.rand(4, 8, 8)
    assert float(cam_similarity([a, a.clone()])) > 0.999
    # standardisation makes an affine copy identical, a mirrored-intensity copy opposite
    assert float(cam_similarity([a, 3 * a + 1])) > 0.999
    assert float(cam_similarity([a, 1 - a])) < -0.999
    big = F.interpolate(a.unsqueeze(1), size=(16, 16), mode="bilinear", align_corners=False).squeeze(1)
    assert standardised_maps([a, big]).shape == (2, 4, 36)  # common size 8x8, 1 px crop -> 6x6
    # a 2x nearest-upsampled copy is resized back exactly by bilinear interpolation
    twice = a.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert float(cam_similarity([twice, a])) == pytest.approx(1.0, abs=1e-5)
    # only the interior counts: a changed border changes nothing
    b = a.clone()
    b[:, 0, :] = 100.0
    assert float(cam_similarity([a, b])) == pytest.approx(1.0, abs=1e-5)
    r = float(cam_similarity([a, torch.rand(4, 8, 8)]))
    assert -1.0 <= r <= 1.0 and abs(r) < 0.5


def test_pairwise_cosine_hand_case():
    v = F.normalize(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]]), dim=2)  # (M=3, B=1, D=2)
    # pairs: (0,1) 0, (0,2) 1/sqrt2, (1,2) 1/sqrt2
    torch.testing.assert_close(pairwise_cosine(v), torch.tensor(2 / 2**0.5 / 3))


def test_diversity_loss_sends_gradient_into_every_member(tiny_ensemble, digits):
    x = digits.train_x[:16].float() / 255
    y = digits.train_y[:16]
    tiny_ensemble.eval()
    logits, feats = tiny_ensemble(x)
    div = cam_similarity(gradcam(logits, feats, y, create_graph=True))
    div.backward()
    assert isinstance(tiny_ensemble, Ensemble)
    for m, member in enumerate(tiny_ensemble.members):
        # the conv weights below the CAM layer get gradient only through the double-backward path
        g = member.net.cam_layer[0].weight.grad
        assert g is not None and g.abs().sum() > 0, f"member {m} got no gradient from the diversity loss"
        g_head = member.net.head.weight.grad
        assert g_head is not None and g_head.abs().sum() > 0, f"member {m}: no gradient through alpha"
