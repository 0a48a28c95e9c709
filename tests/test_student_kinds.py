"""The student-kind seam end to end: EnD² and Hydra students train (EnD² with every perturbation method), every kind
exports to ONNX and round-trips under onnxruntime in a subprocess, and the report reads every kind through its
readout (ensemble-only scores where the student provides them, FPR95 gain shares, selective metrics, costs)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_TRAIN, digits_recipe

from distill import UserError
from distill.checkpoint import load_model
from distill.cli import main
from distill.export import ONNX_TOLERANCE
from distill.perturb import PERTURBATIONS
from distill.recipe import CostCfg, EvalCfg, OODSetCfg, recipe_from_dict
from distill.report import evaluate_runs
from distill.students import STUDENT_KINDS, readout_for
from distill.train import train_student

TRAIN = DIGITS_TRAIN
KINDS = {
    "single": {},
    "batchensemble": {},
    "hydra": {"hinton_phase": 0.5, "head_lr_scale": 2.0},
    "dirichlet": {"t_start": 5.0},
}


def _recipe(students: list[dict]) -> dict:
    """The session's shared digits recipe (conftest.py) with these students."""
    return digits_recipe(students=[{"arch": "tiny_cnn", "train": TRAIN, **s} for s in students])


NAMES = {"single": "kd", "batchensemble": "be", "hydra": "hydra", "dirichlet": "end2"}  # "single" is the baseline's
STUDENTS = [{"name": NAMES[k], "kind": k, "options": o, "perturb": {"name": "disagree"}} for k, o in KINDS.items()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_runs) -> Path:
    """The session's shared teacher and single network (conftest.py), and a student of every kind."""
    root = tmp_path_factory.mktemp("kinds")
    recipe = recipe_from_dict(_recipe(STUDENTS))
    for name in ("teacher", "single"):
        shutil.copytree(digits_runs / name, root / name)
    for s in STUDENTS:
        train_student(recipe, root / "teacher", root / s["name"], name=s["name"])
    return root


def test_every_registered_kind_is_covered():
    assert set(STUDENT_KINDS) == set(KINDS)


def test_students_of_every_kind_trained(runs):
    sizes = {"kd": 1, "be": 2, "hydra": 2, "end2": 1}
    for name, size in sizes.items():
        model, info = load_model(runs / name)
        assert model.size == size and info["role"] == "student"
        summary = json.loads((runs / name / "summary.json").read_text())
        assert math.isfinite(summary["history"][0]["loss"]) and summary["test"]["acc"] > 0
    assert load_model(runs / "end2")[1]["spec"] == {"kind": "dirichlet", "arch": "tiny_cnn"}
    hydra = load_model(runs / "hydra")[1]["spec"]
    assert hydra["kind"] == "hydra" and hydra["heads"] == 2 and hydra["identical_heads"] is True
    assert hydra["head_lr_scale"] == 2.0  # the recipe's option reaches the model, whose optimizer groups use it


def test_end2_anneals_its_temperature_during_training(runs):
    h = json.loads((runs / "end2" / "summary.json").read_text())["history"][0]
    # one epoch, T from 5 to 1 over the first half of the steps: the epoch's mean T lies strictly between
    assert 1.0 < h["temperature"] < 5.0 and math.isfinite(h["dirichlet_nll"])


# What each method's step must measure (per-pixel RMS of x~ - x, epoch mean) at its defaults: eta = 1/255 for
# gaussian / ods (clipping at 0 and 1 only shrinks it), ConfODS scales it by a confidence <= 1, disagree stays in
# its eps = 2/255 ball, mixup moves images by a whole fraction of another image, none by nothing.
STEP_RMS = {
    "none": (0.0, 0.0),
    "gaussian": (0.2 / 255, 1.0001 / 255),
    "ods": (0.2 / 255, 1.0001 / 255),
    "confods": (0.05 / 255, 1.0001 / 255),
    "disagree": (0.2 / 255, 2.0001 / 255),
    "mixup": (0.02, 1.0),
}


def test_every_perturbation_has_a_step_size():
    assert set(STEP_RMS) == set(PERTURBATIONS)


@pytest.mark.parametrize("perturb", sorted(PERTURBATIONS))
def test_end2_runs_with_every_perturbation_method(runs, tmp_path, perturb, digits):
    student = {"name": "d", "kind": "dirichlet", "perturb": {"name": perturb}}
    summary = train_student(recipe_from_dict(_recipe([student])), runs / "teacher", tmp_path / "d")
    h = summary["history"][0]
    assert math.isfinite(h["loss"]) and math.isfinite(h["dirichlet_nll"])
    lo, hi = STEP_RMS[perturb]
    assert lo <= h["perturb/delta_rms"] <= hi, h["perturb/delta_rms"]  # the student saw the method's x~
    if perturb == "disagree":  # the search found inputs where the members disagree more than on x
        assert h["perturb/mi_perturbed"] > h["perturb/mi_clean"]
    if perturb == "none":
        assert h["perturb/mi_perturbed"] == h["perturb/mi_clean"]
    # what the trained student outputs: one concentration vector per image, read as a distribution summing to 1
    model, info = load_model(tmp_path / "d")
    x = digits.val_x[:16].float() / 255
    with torch.no_grad():
        logits = model(x)[0]
    assert logits.shape == (1, 16, 8)  # one network, 16 images, 10 digits minus the 2 held out
    probs = readout_for(info["spec"]).log_predictive(logits).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(16, dtype=probs.dtype), rtol=0, atol=1e-6)


def test_kind_options_are_checked(runs, tmp_path):
    bad = [{"name": "h", "kind": "hydra", "options": {"head_widht": 0.5}}]
    with pytest.raises(UserError, match="head_widht"):
        train_student(recipe_from_dict(_recipe(bad)), runs / "teacher", tmp_path / "h")
    none = [{"name": "s", "kind": "single", "options": {"x": 1}}]
    with pytest.raises(UserError, match="takes no options"):
        train_student(recipe_from_dict(_recipe(none)), runs / "teacher", tmp_path / "s")


@pytest.mark.parametrize("kind", ["teacher", "single", *NAMES.values()])
def test_onnx_export_round_trips_under_onnxruntime(runs, tmp_path, kind, capsys):
    out = tmp_path / f"{kind}.onnx"
    assert main(["export", str(runs / kind), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    check = json.loads((tmp_path / f"{kind}.onnx.check.json").read_text())
    assert check["max_abs_diff"] < ONNX_TOLERANCE and check["ok"] and check["batches"] == [1, 7]
    assert f"{check['max_abs_diff']:.2e}" in printed and set(check["per_output"]) == {
        "log_probs",
        "total",
        "data",
        "knowledge",
    }
    # the file's log_probs are the checkpoint's predictive distribution (not only what was exported)
    import onnxruntime as ort

    model, info = load_model(runs / kind)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    log_p, total, data, knowledge = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        logits = model(x)[0]
    readout = readout_for(info["spec"])
    torch.testing.assert_close(torch.from_numpy(log_p).double(), readout.log_predictive(logits), atol=1e-4, rtol=0)
    u = readout.uncertainty(logits)
    torch.testing.assert_close(torch.from_numpy(data).double(), u["data"], atol=1e-4, rtol=0)
    if u["knowledge"] is not None:
        torch.testing.assert_close(torch.from_numpy(knowledge).double(), u["knowledge"], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> dict:
    cfg = EvalCfg(
        ood=[OODSetCfg("heldout", group="near")],
        ood_scores=["msp", "neg_entropy", "neg_mi"],
        corruptions=[],
        cam_images=2,
        diversity_images=32,
        cost=CostCfg(reps=3, warmup=1, batches=[1, 64]),
    )
    out = tmp_path_factory.mktemp("kinds_report")
    return evaluate_runs(runs / "teacher", [runs / n for n in NAMES.values()], runs / "single", out, cfg), out


def test_report_reads_every_kind_through_its_readout(report):
    rep, out = report
    models = rep["models"]
    assert [models[n]["kind"] for n in NAMES.values()] == ["ensemble", "batchensemble", "hydra", "dirichlet"]
    for key in ("teacher", "be", "hydra", "end2"):  # the ensemble-only score, where the model provides it
        assert models[key]["ood"]["sets"]["heldout"]["neg_mi"] is not None, key
        assert models[key]["uncertainty"]["test"]["knowledge"] > 0, key
    for key in ("single", "kd"):  # one softmax network: no knowledge uncertainty
        assert models[key]["ood"]["sets"]["heldout"]["neg_mi"] is None
        assert models[key]["uncertainty"]["test"]["knowledge"] is None
    # the Dirichlet's neg_mi is its knowledge uncertainty, not the (zero) mutual information of one softmax
    d_auroc = models["end2"]["ood"]["sets"]["heldout"]
    assert d_auroc["neg_mi"]["auroc"] != d_auroc["neg_entropy"]["auroc"]
    for key, e in models.items():
        assert {"aurc", "acc_cov90", "acc_cov95"} <= set(e["metrics"]), key
        assert 0 <= e["metrics"]["aurc"] <= 1 and e["metrics"]["acc_cov90"] >= e["metrics"]["acc"] - 0.05
    shares = rep["gain_share"]["end2"]
    assert {"ood_auroc/neg_mi", "ood_fpr95/neg_mi", "ood_fpr95/msp", "aurc"} <= set(shares)
    md = (out / "report.md").read_text()
    assert "## Selective classification" in md and "## Uncertainty" in md and "## Inference cost" in md
    assert "Mean FPR@95" in md
    assert re.search(r"\| teacher \| \w+ \| heldout \| [0-9.]+ \|", md)  # the per-set detection table survives


def test_cost_table_is_measured_for_every_model(report):
    rep, out = report
    cost = rep["cost"]
    assert list(cost["models"]) == ["teacher", "single", *NAMES.values()]
    assert cost["config"]["baseline"] == "single" and cost["config"]["batches"] == [1, 64]
    for key, c in cost["models"].items():
        model, _ = load_model(Path(rep["models"][key]["path"]))
        assert c["params"] == sum(p.numel() for p in model.parameters()), key
        assert c["disk_bytes"] == (Path(rep["models"][key]["path"]) / "model.safetensors").stat().st_size
        assert c["flops_per_image"] > 0 and c["latency_ms"] > 0 and c["images_per_s"] > 0
        assert c["onnx"]["timing"]["b1"]["median_ms"] > 0 and c["onnx_check"]["max_abs_diff"] < ONNX_TOLERANCE
        assert (out / c["onnx"]["file"]).is_file()
    single, teacher = cost["models"]["single"], cost["models"]["teacher"]
    assert teacher["flops_per_image"] == 2 * single["flops_per_image"]  # two tiny_cnn members
    assert teacher["relative"]["params"] == pytest.approx(2.0) and single["relative"]["latency_ms"] == 1.0
    # the BatchEnsemble runs its batch M times through shared weights; the Hydra shares its body
    assert cost["models"]["be"]["flops_per_image"] == teacher["flops_per_image"]
    assert single["flops_per_image"] < cost["models"]["hydra"]["flops_per_image"] < teacher["flops_per_image"]
    assert cost["models"]["end2"]["flops_per_image"] == single["flops_per_image"]
