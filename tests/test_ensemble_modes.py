"""Ensemble execution modes: vmap gives what the loop gives (outputs, gradients, BatchNorm running statistics,
the SDDE loss and its double-backprop gradients), checkpoints load across modes, and the GPU options keep the
state and the numbers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import distill.models.ensemble as ensemble_module
from distill.data.batches import Batch
from distill.models import build_model
from distill.models.ensemble import (
    Ensemble,
    compile_ensemble,
    eval_mode,
    to_channels_last,
)
from distill.objectives import objective_from_recipe
from distill.saliency import cam_similarity, gradcam

TOL = {"rtol": 1e-4, "atol": 1e-5}


def pair(meta, arch: str, members: int = 3) -> tuple[Ensemble, Ensemble]:
    torch.manual_seed(0)
    loop = build_model({"kind": "ensemble", "archs": [arch] * members}, meta)
    loop.mode = "loop"
    vm = copy.deepcopy(loop)
    vm.mode = "vmap"
    return loop, vm


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: torch.nn.Module, b: torch.nn.Module) -> None:
    ga, gb = grads(a), grads(b)
    assert ga.keys() == gb.keys() and len(ga) == len(list(a.parameters()))
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], **TOL, msg=lambda m, n=n: f"{n}: {m}")


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("arch", ["tiny_cnn", "resnet20"])
@pytest.mark.parametrize("per_member", [False, True])
def test_vmap_matches_loop_train_step_and_eval(digits, arch, per_member):
    loop, vm = pair(digits.meta, arch)
    torch.manual_seed(1)
    x = torch.rand(3, 8, 1, 8, 8) if per_member else torch.rand(8, 1, 8, 8)
    y = torch.randint(10, (3, 8))
    outs = {}
    for name, model in (("loop", loop), ("vmap", vm)):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        logits, feats = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        outs[name] = (logits.detach(), [f.detach() for f in feats])
        if name == "vmap":
            assert isinstance(feats, torch.Tensor) and feats.shape[0] == 3
            assert_same_grads(loop, vm)
        opt.step()
    torch.testing.assert_close(outs["vmap"][0], outs["loop"][0], **TOL)
    for a, b in zip(outs["loop"][1], outs["vmap"][1]):
        torch.testing.assert_close(b, a, **TOL)
    # BatchNorm running statistics (and num_batches_tracked) were written back, weights stepped alike
    assert_same_state(loop, vm)
    assert (
        int(
            vm.members[1].state_dict()[
                "net.cam_layer.1.num_batches_tracked" if arch == "tiny_cnn" else "net.stem.1.num_batches_tracked"
            ]
        )
        == 1
    )
    loop.eval()
    vm.eval()
    with torch.no_grad():
        torch.testing.assert_close(vm(x)[0], loop(x)[0], **TOL)


def test_vmap_eval_mode_does_not_touch_running_stats(digits):
    loop, vm = pair(digits.meta, "tiny_cnn")
    before = copy.deepcopy(vm.state_dict())
    with eval_mode(vm):
        vm(torch.rand(4, 1, 8, 8))
    assert_same_state_dicts(before, vm.state_dict())


def assert_same_state_dicts(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)


@pytest.mark.parametrize("same_batch", [False, True])
def test_vmap_matches_loop_sdde_loss_and_double_backprop(digits, same_batch):
    loop, vm = pair(digits.meta, "tiny_cnn")
    objective, _ = objective_from_recipe({"name": "sdde", "lam": 0.5, "same_batch": same_batch}, "teacher.objective")
    torch.manual_seed(2)
    v = 1 if same_batch else 3
    batch = Batch(torch.rand(v, 16, 1, 8, 8), torch.randint(10, (v, 16)))
    results = {}
    for name, model in (("loop", loop), ("vmap", vm)):
        model.train()
        torch.manual_seed(3)  # SDDE draws the diversity batch's member
        loss, terms = objective(model, batch)
        loss.backward()
        results[name] = (loss.detach(), terms["div"])
    torch.testing.assert_close(results["vmap"][0], results["loop"][0], **TOL)
    torch.testing.assert_close(results["vmap"][1], results["loop"][1], **TOL)
    assert_same_grads(loop, vm)
    assert_same_state(loop, vm)
    # the diversity term reaches the layers below the CAM layer in vmap mode too
    for member in vm.members:
        assert member.net.features[0][0].weight.grad.abs().sum() > 0


def test_gradcam_stacked_equals_list(digits):
    loop, vm = pair(digits.meta, "tiny_cnn")
    x, y = torch.rand(6, 1, 8, 8), torch.randint(10, (6,))
    loop.eval()
    vm.eval()
    logits, feats = loop(x)
    cams = gradcam(logits, feats, y, create_graph=True)
    logits_v, feats_v = vm(x)
    cams_v = gradcam(logits_v, feats_v, y, create_graph=True)
    assert cams_v.shape == (3, 6, 8, 8)
    torch.testing.assert_close(cams_v.detach(), torch.stack(cams).detach(), **TOL)
    torch.testing.assert_close(cam_similarity(cams_v), cam_similarity(cams), **TOL)


def test_state_dict_keys_same_in_every_mode_and_load_across(digits):
    loop, vm = pair(digits.meta, "tiny_cnn")
    auto = copy.deepcopy(loop)
    auto.mode = "auto"
    assert list(loop.state_dict()) == list(vm.state_dict()) == list(auto.state_dict())
    vm.train()
    vm(torch.rand(8, 1, 8, 8))  # changes running statistics
    fresh = copy.deepcopy(loop)
    fresh.load_state_dict(vm.state_dict())
    assert_same_state(vm, fresh)


def test_modes_checked_and_auto_resolution(digits, monkeypatch):
    torch.manual_seed(0)
    hetero = build_model({"kind": "ensemble", "archs": ["tiny_cnn", "small_cnn"]}, digits.meta)
    assert not hetero.homogeneous
    with pytest.raises(ValueError, match="homogeneous"):
        hetero.mode = "vmap"
    with pytest.raises(ValueError, match="expected one of"):
        hetero.mode = "fast"
    loop, _ = pair(digits.meta, "tiny_cnn")
    loop.mode = "auto"
    one = build_model({"kind": "ensemble", "archs": ["tiny_cnn"]}, digits.meta)
    one.mode = "auto"
    # The rule: auto is the loop on the CPU (measured fastest there), and AUTO_CUDA_MODE on CUDA, but only for
    # more than one homogeneous member (vmap cannot stack differing members; one member has nothing to stack).
    # Both values of the constant are checked, so the rule holds whichever a GPU measurement picks.
    for cuda_mode in ("vmap", "loop"):
        monkeypatch.setattr(ensemble_module, "AUTO_CUDA_MODE", cuda_mode)
        assert loop.resolved_mode("cpu") == loop.resolved_mode(torch.device("cpu")) == "loop"
        assert loop.resolved_mode("cuda") == loop.resolved_mode(torch.device("cuda", 0)) == cuda_mode
        assert hetero.resolved_mode("cuda") == one.resolved_mode("cuda") == "loop"
        for explicit in ("loop", "vmap"):  # an explicit mode is never overridden, on any device
            loop.mode = explicit
            assert loop.resolved_mode("cpu") == loop.resolved_mode("cuda") == explicit
        loop.mode = "auto"
    monkeypatch.undo()
    shipped = ensemble_module.AUTO_CUDA_MODE
    assert shipped in ("loop", "vmap") and loop.resolved_mode("cuda") == shipped


def test_channels_last_keeps_numbers(digits):
    loop, _ = pair(digits.meta, "tiny_cnn")
    loop.eval()
    x = torch.rand(3, 4, 1, 8, 8)
    with torch.no_grad():
        want = loop(x)[0]
        cl = to_channels_last(copy.deepcopy(loop))
        assert list(cl.state_dict()) == list(loop.state_dict())
        torch.testing.assert_close(cl(x)[0], want, **TOL)


def test_compile_plan_and_probe_fallback(digits):
    de, _ = objective_from_recipe({"name": "de"}, "o")
    sdde, _ = objective_from_recipe({"name": "sdde", "same_batch": False}, "o")
    sdde_same, _ = objective_from_recipe({"name": "sdde", "same_batch": True}, "o")
    igd, _ = objective_from_recipe({"name": "igd"}, "o")
    assert [o.compile_when for o in (de, sdde, sdde_same, igd)] == ["always", "train", "never", "never"]

    loop, _ = pair(digits.meta, "tiny_cnn")
    keys = list(loop.state_dict())

    def failing_probe() -> None:
        raise RuntimeError("double backward is not supported")

    with pytest.warns(UserWarning, match="running eager"):
        msg = compile_ensemble(loop, "always", probe=failing_probe)
    assert "failed" in msg and loop._compiled is None
    assert compile_ensemble(loop, "never") == "eager (compile not used)"
    assert list(loop.state_dict()) == keys


def test_compiled_training_forward_keeps_sdde_double_backprop(digits):
    """torch.compile (aot_eager: AOTAutograd without codegen) on the training forward only; SDDE's eval-mode
    diversity forward stays eager, so its double backprop works and the numbers match eager."""
    loop, _ = pair(digits.meta, "tiny_cnn", members=2)
    compiled = copy.deepcopy(loop)
    objective, _ = objective_from_recipe({"name": "sdde", "lam": 0.5, "same_batch": False}, "o")
    assert compile_ensemble(compiled, objective.compile_when, backend="aot_eager") == "compiled (train)"
    batch = Batch(torch.rand(2, 8, 1, 8, 8), torch.randint(10, (2, 8)))
    for model in (loop, compiled):
        model.train()
        torch.manual_seed(3)
        loss, _ = objective(model, batch)
        loss.backward()
    assert_same_grads(loop, compiled)
