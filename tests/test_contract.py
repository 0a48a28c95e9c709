"""The model contract (distill/models/contract.py): any nn.Module returning logits is a member, features come from a
hook on a named layer, and a module that breaks the contract is refused in one line when the model is built."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from distill import UserError
from distill.data.base import DatasetMeta
from distill.data.batches import Batch
from distill.models import build_model, register_arch
from distill.models.contract import Member, as_member, describe, last_conv, missing_features
from distill.models.ensemble import Ensemble
from distill.models.registry import ARCHS
from distill.models.small import SmallCNN
from distill.objectives import objective_from_recipe
from distill.saliency import gradcam

META = DatasetMeta("digits", 10, 1, (8, 8), (0.5,), (0.25,))


class LogitsNet(nn.Module):
    """A user's network: two conv layers, global pooling, a head; returns logits only."""

    def __init__(self, channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.head = nn.Linear(5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


class NoisyMLP(nn.Module):
    """No conv layer; draws from the global RNG in every forward, even in eval mode (so a probe that did not
    restore the RNG would change the next member's initialisation)."""

    def __init__(self, channels: int = 1, num_classes: int = 10, pixels: int = 64) -> None:
        super().__init__()
        self.fc = nn.Linear(channels * pixels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) + 0 * torch.rand(1)


class TupleOfLogits(LogitsNet):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = super().forward(x)
        return z, z


class LogitsOfSmallCNN(nn.Module):
    """The registered SmallCNN, but returning logits only: its Grad-CAM layer is reached through the hook."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN(1, 10, (8, 8), width=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


register_arch("test_contract_logits")(lambda c, k, s: LogitsNet(c, k))
register_arch("test_contract_mlp")(lambda c, k, s: NoisyMLP(c, k, s[0] * s[1]))
register_arch("test_contract_tuple")(lambda c, k, s: TupleOfLogits(c, k))
register_arch("test_contract_k7")(lambda c, k, s: LogitsNet(c, 7))


def _spec(*archs: str) -> dict:
    return {"kind": "ensemble", "archs": list(archs)}


def test_logits_only_member_gets_features_from_its_last_conv():
    torch.manual_seed(0)
    model = build_model(_spec("test_contract_logits", "test_contract_logits"), META)
    x = torch.rand(3, 1, 8, 8)
    logits, feats = model(x)
    assert logits.shape == (2, 3, 10)
    net = model.members[0].net.module  # Normalized -> Member -> the user's module
    want = net.conv2(torch.relu(net.conv1((x - 0.5) / 0.25)))  # the last conv's output, by hand
    torch.testing.assert_close(feats[0], want)
    assert last_conv(net) == "conv2"
    assert missing_features(model) is None


def test_wrongly_shaped_tuple_fails_at_build_time_in_one_line():
    with pytest.raises(UserError) as err:
        build_model(_spec("test_contract_tuple"), META)
    msg = str(err.value)
    assert "\n" not in msg
    assert "arch 'test_contract_tuple'" in msg and "TupleOfLogits" in msg
    assert "tuple of (tensor (2, 10), tensor (2, 10))" in msg


def test_wrong_number_of_classes_names_the_shape():
    with pytest.raises(UserError, match=r"LogitsNet returned a tensor \(2, 7\).*expected logits \(2, 10\)"):
        build_model(_spec("test_contract_k7"), META)


def test_forward_that_fails_on_the_data_shape_is_one_line():
    class Needs32(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(32 * 32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    with pytest.raises(UserError, match=r"^mine: Needs32 failed on a probe batch \(2, 1, 8, 8\).*RuntimeError"):
        as_member(Needs32(), 1, (8, 8), 10, name="mine")


def test_unknown_cam_layer_is_named():
    with pytest.raises(UserError, match="cam_layer 'nope': LogitsNet has no such layer"):
        Member(LogitsNet(), cam_layer="nope")


def test_probe_leaves_rng_and_training_flags_alone():
    torch.manual_seed(0)
    model = build_model(_spec("test_contract_mlp", "test_contract_mlp"), META)
    after = torch.rand(3)
    torch.manual_seed(0)
    raw = [NoisyMLP(1, 10, 64), NoisyMLP(1, 10, 64)]
    torch.testing.assert_close(torch.rand(3), after)  # the probes drew nothing from the global RNG
    for member, net in zip(model.members, raw):
        torch.testing.assert_close(member.net.module.fc.weight, net.fc.weight)
    assert all(m.training for m in model.modules())


def test_featureless_member_is_reported_and_logits_still_flow():
    model = build_model(_spec("test_contract_mlp"), META)
    logits, feats = model(torch.rand(2, 1, 8, 8))
    assert logits.shape == (1, 2, 10) and feats == [None]
    why = missing_features(model)
    assert why is not None and "NoisyMLP" in why and "members.0.net" in why


def test_registered_architectures_keep_the_fast_path():
    # the package's own (other tests and the API register theirs in the same process)
    own = (a for a in ARCHS if ARCHS[a].__module__.startswith("distill.models."))
    for arch in sorted(a for a in own if a not in ("wrn28_10", "resnet18")):
        size = 32 if arch.startswith(("airnet", "resnet", "wrn")) else 8
        net = ARCHS[arch](1, 10, (size, size))
        assert as_member(net, 1, (size, size), 10, name=arch) is net, arch  # no hook, no wrapper


def test_member_survives_deepcopy_and_vmap():
    torch.manual_seed(0)
    model = build_model(_spec("test_contract_logits", "test_contract_logits"), META)
    x = torch.rand(4, 1, 8, 8)
    logits, feats = model(x)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.members[0].net.module.conv2.weight.zero_()
        clone.members[0].net.module.conv2.bias.zero_()
    _, clone_feats = clone(x)
    assert float(clone_feats[0].detach().abs().max()) == 0.0  # the copy's hook reads the copy's layer
    torch.testing.assert_close(model(x)[1][0], feats[0])  # and the original is untouched
    model.mode = "vmap"
    v_logits, v_feats = model(x)
    torch.testing.assert_close(v_logits, logits)
    torch.testing.assert_close(v_feats[1], feats[1])


def test_sdde_cam_term_equals_the_fast_path_for_the_same_network():
    torch.manual_seed(0)
    fast = [SmallCNN(1, 10, (8, 8), width=4) for _ in range(3)]
    hooked = []
    for net in fast:
        user = LogitsOfSmallCNN()
        user.net.load_state_dict(net.state_dict())
        hooked.append(as_member(user, 1, (8, 8), 10, name="hooked", cam_layer="net.cam_layer"))
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))

    def loss(members: list[nn.Module]) -> tuple[torch.Tensor, dict]:
        objective, _ = objective_from_recipe({"name": "sdde", "lam": 0.5}, "teacher.objective")
        return objective(Ensemble(members), Batch(x.unsqueeze(0), y.unsqueeze(0)))

    (l_fast, t_fast), (l_hook, t_hook) = loss(fast), loss(hooked)
    torch.testing.assert_close(l_hook, l_fast)
    torch.testing.assert_close(t_hook["div"], t_fast["div"])
    l_hook.backward()
    grad = hooked[0].module.net.cam_layer[0].weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0  # the CAM term reaches the hooked layer


def test_gradcam_of_hooked_features_matches_a_hand_computation():
    torch.manual_seed(1)
    member = as_member(LogitsNet(), 1, (8, 8), 10, name="m")
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 7])
    logits, feat = member(x)
    (cam,) = gradcam(logits.unsqueeze(0), [feat], y, create_graph=False)
    # by hand: logits = head(mean_hw ReLU(A)), so dz_y/dA = w_y * 1[A > 0] / (h * w)
    a = feat.detach()
    g = member.module.head.weight[y][:, :, None, None] * (a > 0) / 64
    want = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(cam, want)


def test_describe():
    assert describe(torch.zeros(2, 3)) == "a tensor (2, 3)"
    assert describe((torch.zeros(1), 3)) == "a tuple of (tensor (1,), int)"
    assert describe({"a": 1}) == "a dict"
