"""Student distillation: the KD loss by hand, teacher/data mismatch, a frozen teacher, export round-trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_TRAIN, digits_recipe

from distill import UserError
from distill.checkpoint import load_model
from distill.cli import main
from distill.export import export
from distill.objectives.student import kd_loss
from distill.recipe import recipe_from_dict
from distill.train import train_student


def test_kd_loss_hand_computed():
    s_clean = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (S=1, B=2, K=2)
    s_pert = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]])
    t_pert = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [1.0, 0.0]]])  # (M=2, B=2, K=2)
    y = torch.tensor([0, 1])
    alpha, temp = 0.9, 2.0
    ce = (-torch.log_softmax(s_clean[0], -1)[torch.arange(2), y]).mean()
    q = (t_pert / temp).softmax(-1).mean(0)  # (B, K)
    log_s = (s_pert[0] / temp).log_softmax(-1)
    kl = (q * (q.log() - log_s)).sum(-1).mean()
    loss, terms = kd_loss(s_clean, s_pert, t_pert, y, alpha, temp)
    assert loss.item() == pytest.approx(((1 - alpha) * ce + alpha * temp**2 * kl).item(), rel=1e-6)
    assert terms["kd"].item() == pytest.approx(kl.item(), rel=1e-6)
    # one-to-one: a 2-member student, member m against teacher member m
    s2c, s2p = s_clean.expand(2, -1, -1), s_pert.expand(2, -1, -1)
    loss2, _ = kd_loss(s2c, s2p, t_pert, y, alpha, temp)
    per = []
    for m in range(2):
        qm = (t_pert[m] / temp).softmax(-1)
        klm = (qm * (qm.log() - log_s)).sum(-1).mean()
        per.append((1 - alpha) * ce + alpha * temp**2 * klm)
    assert loss2.item() == pytest.approx(torch.stack(per).mean().item(), rel=1e-6)


def _recipe(perturb: str = "confods", kind: str = "single") -> dict:
    """A student of the session's shared digits teacher (conftest.py)."""
    student = {"arch": "tiny_cnn", "kind": kind, "perturb": {"name": perturb}, "train": DIGITS_TRAIN}
    return digits_recipe(student=student)


@pytest.fixture(scope="module")
def teacher_dir(digits_runs):
    return digits_runs / "teacher"  # shared: the tests here only read it


@pytest.mark.parametrize("perturb, kind", [("confods", "single"), ("disagree", "batchensemble")])
def test_student_trains_and_leaves_teacher_untouched(teacher_dir, tmp_path, perturb, kind):
    before = (teacher_dir / "model.safetensors").read_bytes()
    summary = train_student(recipe_from_dict(_recipe(perturb, kind)), teacher_dir, tmp_path / "s")
    assert (teacher_dir / "model.safetensors").read_bytes() == before
    h = summary["history"][0]
    assert h["perturb/delta_rms"] > 0 and "perturb/mi_perturbed" in h
    model, info = load_model(tmp_path / "s")
    assert info["role"] == "student" and model.size == (2 if kind == "batchensemble" else 1)


def test_teacher_from_other_data_is_refused(teacher_dir, tmp_path, capsys):
    meta = json.loads((teacher_dir / "model.json").read_text())["meta"]
    bad = tmp_path / "bad_teacher"
    bad.mkdir()
    info = json.loads((teacher_dir / "model.json").read_text())
    info["meta"] = {**meta, "num_classes": 7}
    (bad / "model.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="num_classes 7"):
        train_student(recipe_from_dict(_recipe()), bad, tmp_path / "s")
    assert not (tmp_path / "s").exists()  # refused before any training


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_export_runs_without_the_package(teacher_dir, tmp_path, fmt):
    path, err = export(teacher_dir, fmt, tmp_path / f"m.{fmt}")
    assert err < 1e-5
    model, _ = load_model(teacher_dir)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = torch.logsumexp(model(x)[0].log_softmax(-1), 0) - torch.log(torch.tensor(2.0))
    load = "torch.jit.load(p)" if fmt == "torchscript" else "torch.export.load(p).module()"
    # distill is installed (editable) in the environment: block its import, so a file that needed it fails to load
    code = (
        f"import sys; sys.modules['distill'] = None; import torch; p = sys.argv[1]; m = {load};"
        "x = torch.load(sys.argv[2]); torch.save(m(x), sys.argv[3])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, rtol=1e-5, atol=1e-5)


def test_student_cli_errors(teacher_dir, tmp_path, capsys):
    recipe = Path(__file__).resolve().parents[1] / "recipes/digits_student_confods.yaml"
    code = main(
        [
            "student",
            "--teacher",
            str(teacher_dir),
            "--recipe",
            str(recipe),
            "--out",
            str(tmp_path / "s"),
            "--set",
            "data.limit_train=160",  # the teacher's subset and held-out classes: otherwise the same-data check
            "--set",  # fires first
            "data.holdout_classes=[8,9]",
            "--set",
            "student.perturb.name=fgsm",
        ]
    )
    assert code == 2 and "student.perturb.name" in capsys.readouterr().err
    code = main(["student", "--teacher", str(tmp_path / "nope"), "--recipe", str(recipe), "--out", str(tmp_path / "s")])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_frozen_teacher_takes_the_students_layout():
    """run.channels_last reaches the student stage's teacher (it runs 2-3 times per step), numbers unchanged."""
    from distill.data.base import DatasetMeta
    from distill.data.batches import Batch
    from distill.models import build_model, ensemble_spec
    from distill.objectives.student import KD
    from distill.perturb import make_perturbation

    meta = DatasetMeta("c", 10, 3, (16, 16), (0.5,) * 3, (0.25,) * 3)
    torch.manual_seed(0)
    teacher = build_model(ensemble_spec("small_cnn", 2), meta)
    student = build_model(ensemble_spec("small_cnn", 1), meta)
    x, y = torch.rand(1, 8, 3, 16, 16), torch.randint(0, 10, (1, 8))
    losses = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        kd = KD(teacher, make_perturbation("confods"), 0.9, 2.0).to(torch.device("cpu"), fmt)
        convs = [p for p in kd.teacher.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=fmt) for p in convs)
        torch.manual_seed(1)  # the same member and projection w drawn for both layouts
        loss, _ = kd(student, Batch(x, y))
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_channels_last_run_passes_the_layout_to_the_teacher(teacher_dir, tmp_path, monkeypatch):
    from distill.objectives.student import KD

    seen = []
    original = KD.to

    def spy(self, device, memory_format=torch.contiguous_format):
        seen.append(memory_format)
        return original(self, device, memory_format)

    monkeypatch.setattr(KD, "to", spy)
    recipe = _recipe("none")
    recipe["run"]["channels_last"] = True
    train_student(recipe_from_dict(recipe), teacher_dir, tmp_path / "s")
    assert seen == [torch.channels_last]
