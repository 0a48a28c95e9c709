"""Controls (issue 31, part 5): single_long, label_smoothing and self_kd trained by `distill run` beside the students
with the students' schedule, reported as `control:<name>`, the strongest chosen on validation; their recipe errors;
their reuse."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from distill import UserError
from distill.checkpoint import load_model, load_tensors, save_tensors, weights_sha256
from distill.cli import main
from distill.data import load_splits
from distill.data.batches import Batch
from distill.objectives import objective_from_recipe
from distill.predict import predict_logits
from distill.recipe import apply_overrides
from distill.report.controls import strongest_control, validation_scores
from distill.resolve import check_recipe
from distill.reuse import prepare_out

CONTROLS = ("single_long", "label_smoothing", "self_kd")
EVAL = [
    "evaluate.corruptions=[]",
    "evaluate.diversity_images=32",
    "evaluate.cam_images=0",
    "evaluate.cost.enabled=false",
    "evaluate.ood_scores=[msp]",
]


def _recipe() -> dict:
    ens = {"arch": "tiny_cnn", "members": 2, "train": {"epochs": 1, "batch_size": 32, "optim": {"lr": 0.05}}}
    # the students' (and so the controls') schedule differs from the single network's: 2 epochs, not 1
    student_train = {"epochs": 2, "batch_size": 32, "optim": {"lr": 0.05}, "select": "best_val_acc"}
    return {
        "seed": 0,
        "data": {"name": "digits", "limit_train": 160},
        "teacher": ens,
        "single": {**ens, "members": 1},
        "students": [{"name": "kd", "arch": "tiny_cnn", "temperature": 2.0, "train": student_train}],
        "controls": [{"name": "single_long"}, {"name": "label_smoothing", "smoothing": 0.2}, {"name": "self_kd"}],
        "run": {"progress": False},
    }


def _run(recipe_file: Path, out: Path, *more: str) -> int:
    args = ["run", str(recipe_file), "--out", str(out)]
    for s in EVAL:
        args += ["--set", s]
    return main([*args, *more])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("controls")
    recipe_file = root / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(_recipe()))
    torch.manual_seed(0)
    assert _run(recipe_file, root / "out") == 0
    return recipe_file, root / "out"


def _info(run: Path) -> dict:
    return json.loads((run / "model.json").read_text())


def test_controls_train_what_they_say(pipeline):
    _, out = pipeline
    single, kd = _info(out / "single"), _info(out / "students" / "kd")
    infos = {c: _info(out / "controls" / c) for c in CONTROLS}
    assert {i["role"] for i in infos.values()} == {"control"}
    for name, info in infos.items():
        assert info["control"]["name"] == name and info["control"]["like"] == "kd"
        history = json.loads((out / "controls" / name / "summary.json").read_text())["history"]
        assert len(history) == 2, name  # the student's 2 epochs, not the single network's 1
    assert infos["single_long"]["spec"] == single["spec"] and infos["single_long"]["objective"]["name"] == "de"
    assert infos["label_smoothing"]["objective"] == {"name": "label_smoothing", "smoothing": 0.2}
    assert infos["label_smoothing"]["spec"] == kd["spec"]
    self_kd = infos["self_kd"]
    assert self_kd["teacher"] == str(out / "single") and self_kd["teacher_sha256"] == weights_sha256(out / "single")
    assert self_kd["spec"] == kd["spec"] and self_kd["control"]["student"]["temperature"] == 2.0


def test_report_lists_controls_after_single_and_chooses_on_validation(pipeline):
    recipe_file, out = pipeline
    report = json.loads((out / "report" / "report.json").read_text())
    keys = [f"control:{c}" for c in CONTROLS]
    assert list(report["models"]) == ["members", "single", *keys, "teacher", "kd"]
    assert all(report["models"][k]["role"] == "control" for k in keys)
    assert report["controls"]["keys"] == keys and "validation" in report["controls"]["chosen_by"]
    # by hand: validation accuracy of each control's own predictions, ties by validation NLL
    splits = load_splits(apply_overrides(yaml.safe_load(recipe_file.read_text())).data)
    y = splits.val_y
    scores = {}
    for c in CONTROLS:
        model, _ = load_model(out / "controls" / c)
        p = predict_logits(model, splits.val_x)[0].double().softmax(-1)  # (N, K): one network
        acc = (p.argmax(1) == y).double().mean().item()
        nll = -sum(math.log(p[i, y[i]].item()) for i in range(len(y))) / len(y)
        scores[f"control:{c}"] = (acc, nll)
        assert report["controls"]["val"][f"control:{c}"]["acc"] == pytest.approx(acc)
        assert report["controls"]["val"][f"control:{c}"]["nll"] == pytest.approx(nll, rel=1e-6)
    assert report["controls"]["strongest"] == max(scores, key=lambda k: (scores[k][0], -scores[k][1]))


def test_strongest_control_is_the_best_on_validation_not_on_test():
    y = torch.tensor([0, 1, 0, 1])

    def logits(pred: list[int], confidence: float = 2.0) -> torch.Tensor:  # (1, N, 2)
        return (torch.nn.functional.one_hot(torch.tensor(pred), 2).float() * confidence).unsqueeze(0)

    # a is right on 3 of 4 validation images and 2 of 4 test ones; b on 2 of 4 validation and all 4 test images
    val = {"control:a": logits([0, 1, 0, 0]), "control:b": logits([0, 1, 1, 0])}
    test = {"control:a": logits([0, 1, 1, 0]), "control:b": logits([0, 1, 0, 1])}
    assert strongest_control(val, y) == "control:a"
    assert strongest_control(test, y) == "control:b"  # what choosing on test would have given
    # equal validation accuracy: the lower validation NLL wins (b: less confident in its wrong answer), not the order
    tie = {"control:a": logits([0, 1, 0, 0], 3.0), "control:b": logits([0, 1, 0, 0], 1.0)}
    assert strongest_control(tie, y) == "control:b"
    # NLL by hand: 3 right at logit gap 1 (p = e / (e + 1)), 1 wrong (p = 1 / (e + 1))
    right, wrong = math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))
    assert validation_scores(tie["control:b"], y) == pytest.approx({"acc": 0.75, "nll": (3 * right + wrong) / 4})
    assert strongest_control({}, y) is None


def test_label_smoothing_loss_by_hand():
    objective, _ = objective_from_recipe({"name": "label_smoothing", "smoothing": 0.2}, "controls[x]")
    z = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])  # (M=1, B=2, K=3)
    y = torch.tensor([0, 2])
    loss, _ = objective(lambda x: (z, []), Batch(x=torch.zeros(1, 2, 1, 1, 1), y=y.unsqueeze(0)))
    logp = z[0].log_softmax(-1)
    # target (1 - eps) onehot + eps / K: (1 - eps) CE + eps * mean_k(-log p_k)
    hand = [(0.8 * -logp[i, y[i]] + 0.2 * -logp[i].mean()).item() for i in range(2)]
    assert loss.item() == pytest.approx(sum(hand) / 2, rel=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"controls": [{"name": "bogus"}]}, r"'controls\[0\].name': expected one of 'single_long' or"),
        ({"controls": [{"smoothing": 0.1}]}, r"'controls\[0\].name' is missing"),
        ({"controls": [{"name": "self_kd", "smoothing": 0.1}]}, r"'controls.0.smoothing': only the label_smoothing"),
        ({"controls": [{"name": "label_smoothing", "smoothing": 1.0}]}, r"'controls\[0\].smoothing': expected"),
        ({"controls": [{"name": "self_kd"}, {"name": "self_kd"}]}, r"'controls.1.name': 'self_kd' also names"),
        ({"single": None, "controls": [{"name": "single_long"}]}, r"single_long control needs the recipe's 'single'"),
        ({"controls_like": "nobody"}, r"'controls_like': no student 'nobody'; expected one of: kd"),
        ({"students": []}, r"'controls': controls copy a student's"),
        (
            {"students": [{"name": "be", "arch": "tiny_cnn", "kind": "batchensemble"}]},
            r"student 'be' is a batchensemble student; controls copy a 'single' student",
        ),
    ],
)
def test_recipe_errors_name_the_key(change, message):
    with pytest.raises(UserError, match=message):
        check_recipe(apply_overrides({**_recipe(), **change}))


def test_a_bad_control_exits_2_before_anything_trains(tmp_path, capsys):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({**_recipe(), "controls": [{"name": "self_distill"}]}))
    assert _run(recipe_file, tmp_path / "out") == 2
    assert "controls[0].name" in capsys.readouterr().err and not (tmp_path / "out" / "teacher").exists()


def test_finished_controls_are_reused_and_a_changed_one_is_refused(pipeline, tmp_path, capsys):
    recipe_file, out = pipeline
    capsys.readouterr()
    assert _run(recipe_file, out) == 0
    printed = capsys.readouterr().out
    assert printed.count("[reuse]") == 3 + len(CONTROLS)
    assert all(f"[reuse] {out / 'controls' / c}" in printed for c in CONTROLS)
    assert _run(recipe_file, out, "--set", "controls.1.smoothing=0.3") == 2
    err = capsys.readouterr().err
    assert "stage 'control/label_smoothing'" in err and "smoothing' is 0.2 there but 0.3 now" in err
    # the students' schedule decides a control's weights too
    assert _run(recipe_file, out, "--set", "students.0.train.select=last") == 2
    assert "students.0" in capsys.readouterr().err  # the student stage is checked (and refused) first
    # a single network trained again takes the self_kd control distilled from it along
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    prepare_out(check_recipe(apply_overrides(yaml.safe_load(recipe_file.read_text()))), copy, ["single"])
    assert (copy / "single.old").is_dir() and (copy / "controls" / "self_kd.old").is_dir()
    assert (copy / "controls" / "single_long").is_dir() and (copy / "students" / "kd").is_dir()


def test_evaluate_takes_controls_and_checks_them(pipeline, tmp_path, capsys):
    _, out = pipeline
    base = ["evaluate", "--teacher", str(out / "teacher"), "--single", str(out / "single")]
    sets = [a for s in EVAL for a in ("--set", s)]
    assert main([*base, "--control", str(out / "students" / "kd"), "--out", str(tmp_path / "a"), *sets]) == 2
    assert "a student run (role 'student'), expected a control run" in capsys.readouterr().err
    # self_kd against another single network than the one it was distilled from
    other = tmp_path / "single2"
    shutil.copytree(out / "single", other)
    weights, _ = load_tensors(other / "model.safetensors")
    save_tensors(other / "model.safetensors", {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()})
    control = str(out / "controls" / "self_kd")
    args = ["evaluate", "--teacher", str(out / "teacher"), "--single", str(other), "--control", control]
    assert main([*args, "--out", str(tmp_path / "b"), *sets]) == 2
    err = capsys.readouterr().err
    assert f"--control {control}: distilled from another teacher" in err and f"--single {other}" in err
    assert not (tmp_path / "b" / "report.json").exists()
    # no --single: reported, with a note that its teacher could not be checked
    args = ["evaluate", "--teacher", str(out / "teacher"), "--control", control, "--out", str(tmp_path / "c")]
    assert main([*args, *sets]) == 0
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["controls"]["keys"] == ["control:self_kd"] and report["controls"]["strongest"] == "control:self_kd"
    assert any(n.startswith(f"{control}: distilled from") for n in report["notes"])
