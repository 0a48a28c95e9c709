"""Composable teacher objectives: CE + sum_k lam_k D_k over one diversity forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.data import Batch
from distill.objectives import objective_from_recipe
from distill.objectives.teacher import member_ce
from distill.recipe import to_dict
from distill.saliency import cam_similarity, gradcam


def _shared_batch(digits, n: int = 8) -> Batch:
    return Batch(x=(digits.train_x[:n].float() / 255).unsqueeze(0), y=digits.train_y[:n].unsqueeze(0))


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_a_preset_is_its_composition_bit_for_bit(tiny_ensemble, digits):
    """``sdde`` is DE with the cam term: the same loss and the same gradients, exactly."""
    import copy

    other = copy.deepcopy(tiny_ensemble)
    batch = Batch(x=(digits.train_x[:24].float() / 255).view(3, 8, 1, 8, 8), y=digits.train_y[:24].view(3, 8))
    preset, _ = objective_from_recipe({"name": "sdde", "lam": 0.3}, "k")
    composed, _ = objective_from_recipe(
        {"same_batch": False, "ce_reduction": "mean", "diversity": [{"name": "cam", "lam": 0.3}]}, "k"
    )
    results = []
    for obj, model in ((preset, tiny_ensemble), (composed, other)):
        model.train()
        torch.manual_seed(7)  # the random choice of the diversity batch
        loss, terms = obj(model, batch)
        loss.backward()
        results.append((loss.detach(), terms, _grads(model)))
    (l1, t1, g1), (l2, t2, g2) = results
    assert torch.equal(l1, l2) and t1.keys() == t2.keys() == {"ce", "div"}
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


def test_cam_plus_ncl_is_the_sum_of_both_terms_on_one_forward(tiny_ensemble, digits):
    batch = _shared_batch(digits)
    obj, params = objective_from_recipe(
        {"diversity": [{"name": "cam", "lam": 0.25}, {"name": "ncl", "lam": 0.5}]}, "teacher.objective"
    )
    assert obj.compile_when == "never"  # the CAMs double-backprop through the training forward itself
    loss, terms = obj(tiny_ensemble, batch)
    logits, feats = tiny_ensemble(batch.x[0])
    y = batch.y[0]
    div = cam_similarity(gradcam(logits, feats, y))
    p = logits.softmax(-1)
    dev = p - p.mean(0, keepdim=True)
    m = p.shape[0]
    gram = torch.einsum("ibk,jbk->bij", dev, dev)
    ncl = ((gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (m * (m - 1))).mean()
    expected = member_ce(logits, batch.y).sum() + 0.25 * div + 0.5 * ncl
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["div"].item() == pytest.approx(div.item(), rel=1e-5)
    assert terms["ncl"].item() == pytest.approx(ncl.item(), rel=1e-5)


def test_resolved_params_carry_every_default():
    _, params = objective_from_recipe({"diversity": [{"name": "cam"}, {"name": "igd", "lam": 0.2}]}, "k")
    record = to_dict(params)
    assert record["diversity"] == [{"name": "cam", "lam": 0.005, "crop": 1}, {"name": "igd", "lam": 0.2}]
    assert record["same_batch"] is True and record["diversity_bn"] == "eval"


@pytest.mark.parametrize(
    "spec, compile_when",
    [
        ({"diversity": [{"name": "ncl"}]}, "always"),
        ({"same_batch": False, "diversity": [{"name": "cam"}, {"name": "ncl"}]}, "train"),
        ({"diversity": [{"name": "igd"}, {"name": "adp_entropy"}]}, "never"),
        ({"diversity": [{"name": "oe"}, {"name": "igd"}]}, "train"),  # a separate forward on the outliers
    ],
)
def test_compile_declaration_follows_the_terms(spec, compile_when):
    obj, _ = objective_from_recipe(spec, "k")
    assert obj.compile_when == compile_when


def test_input_gradients_on_a_separate_diversity_batch(tiny_ensemble, digits):
    """A per-member-batch ensemble with igd: the gradients are taken on one member's batch, through all."""
    obj, _ = objective_from_recipe({"same_batch": False, "diversity_bn": "train", "diversity": [{"name": "igd"}]}, "k")
    batch = Batch(x=(digits.train_x[:24].float() / 255).view(3, 8, 1, 8, 8), y=digits.train_y[:24].view(3, 8))
    loss, terms = obj(tiny_ensemble, batch)
    loss.backward()
    assert -1.0 <= terms["grad_cos"].item() <= 1.0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tiny_ensemble.parameters())


def test_an_sdde_plus_ncl_teacher_trains(tmp_path):
    """The composition through the whole teacher stage: its terms logged, model.json resolved."""
    import json

    from distill.cli import main

    out = tmp_path / "teacher"
    rc = main(
        [
            "teacher",
            "--recipe",
            str(Path(__file__).parent.parent / "recipes" / "digits.yaml"),
            "--out",
            str(out),
            "--set",
            "teacher={arch: tiny_cnn, members: 2, train: {epochs: 1, batch_size: 64}}",
            "--set",
            "teacher.objective={same_batch: false, diversity: [{name: cam, lam: 0.1}, {name: ncl, lam: 0.5}]}",
            "--set",
            "data.limit_train=300",
        ]
    )
    assert rc in (0, None)
    info = json.loads((out / "model.json").read_text())
    assert info["objective"]["name"] == "de"
    assert [t["name"] for t in info["objective"]["diversity"]] == ["cam", "ncl"]
    summary = json.loads((out / "summary.json").read_text())
    assert {"div", "ncl"} <= set(summary["history"][0])


def _sdde_step(model, batch: Batch, lam: float, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """SDDE's loss terms' ``div`` and the parameters' gradient (flat) of one step on a copy of ``model``, under CPU
    autocast to ``dtype`` (None: float32)."""
    import copy

    obj, _ = objective_from_recipe({"name": "sdde", "lam": lam, "same_batch": False}, "teacher.objective")
    m = copy.deepcopy(model).train()
    torch.manual_seed(7)  # the diversity batch's draw
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss, terms = obj(m, batch)
    loss.backward()
    assert torch.isfinite(loss)
    return terms["div"].float(), torch.cat([p.grad.flatten() for p in m.parameters()])


# (max |D - D_fp32|, max relative L2 error, min cosine) of the cam term and its double-backprop gradient. bf16 keeps
# 8 significant bits (relative rounding 2^-9 per op), fp16 11: measured over 4 initialisations, D within 1.4e-4
# (bf16) / 5e-5 (fp16) of fp32, the term's gradient within 5-8% (bf16) / 1-1.5% (fp16) in L2 at cosine >= 0.997
# (bf16) / 0.9999 (fp16). The bounds below leave ~2-3x of that; a term whose gradient were lost under autocast (a
# detached Grad-CAM) would be 100% off.
AUTOCAST_TOL = {torch.bfloat16: (5e-4, 0.15, 0.99), torch.float16: (2e-4, 0.04, 0.999)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cam_term_under_cpu_autocast_is_close_to_fp32(tiny_ensemble, digits, dtype):
    """SDDE's double backprop under mixed precision: the cam term and its own gradient (the step with lam = 1
    minus the step with lam = 0) are finite and within the stated tolerance of float32."""
    n = 32
    batch = Batch(x=(digits.train_x[: 3 * n].float() / 255).view(3, n, 1, 8, 8), y=digits.train_y[: 3 * n].view(3, n))
    div32, g32 = _sdde_step(tiny_ensemble, batch, 1.0, None)
    term32 = g32 - _sdde_step(tiny_ensemble, batch, 0.0, None)[1]
    div, g = _sdde_step(tiny_ensemble, batch, 1.0, dtype)
    term = g - _sdde_step(tiny_ensemble, batch, 0.0, dtype)[1]
    d_tol, rel_tol, cos_min = AUTOCAST_TOL[dtype]
    assert torch.isfinite(g).all() and torch.isfinite(div)
    assert term32.norm() > 0.1 * g32.norm()  # the cam term's share of the gradient is large enough to compare
    assert (div - div32).abs().item() <= d_tol
    assert ((term - term32).norm() / term32.norm()).item() <= rel_tol
    assert torch.nn.functional.cosine_similarity(term, term32, dim=0).item() >= cos_min
