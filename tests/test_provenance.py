"""Provenance (issue 31, part 4): a student records the sha256 of its teacher's weights file; `distill student`
refuses a run that is not a teacher, and `distill evaluate` a student distilled from another teacher than the one
it is given (a student from before the hash was recorded is reported with a note)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from distill import UserError
from distill.checkpoint import require_role, weights_sha256
from distill.cli import main
from distill.recipe import recipe_from_dict
from distill.train import train_ensemble, train_student

EVAL = [
    "evaluate.corruptions=[]",
    "evaluate.diversity_images=32",
    "evaluate.cam_images=0",
    "evaluate.cost.enabled=false",
    "evaluate.ood_scores=[msp]",
]


def _recipe(seed: int = 0) -> dict:
    train = {"epochs": 1, "batch_size": 32, "optim": {"lr": 0.05}}
    return {
        "seed": seed,
        "data": {"name": "digits", "limit_train": 160},
        "teacher": {"arch": "tiny_cnn", "members": 2, "train": train},
        "student": {"arch": "tiny_cnn", "train": train},
        "run": {"progress": False},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """t1 and t2 (another seed: other weights, same data) and s, distilled from t1."""
    root = tmp_path_factory.mktemp("provenance")
    train_ensemble(recipe_from_dict(_recipe()), root / "t1")
    train_ensemble(recipe_from_dict(_recipe(seed=1)), root / "t2")
    train_student(recipe_from_dict(_recipe()), root / "t1", root / "s")
    (root / "recipe.yaml").write_text(yaml.safe_dump(_recipe()))
    return root


def _info(run: Path) -> dict:
    return json.loads((run / "model.json").read_text())


def _evaluate(teacher: Path, students: list[Path], out: Path) -> int:
    args = ["evaluate", "--teacher", str(teacher), "--out", str(out)]
    for s in students:
        args += ["--student", str(s)]
    for s in EVAL:
        args += ["--set", s]
    return main(args)


def test_a_student_records_its_teachers_hash_which_a_copy_keeps(runs, tmp_path):
    by_hand = hashlib.sha256((runs / "t1" / "model.safetensors").read_bytes()).hexdigest()
    info = _info(runs / "s")
    assert info["teacher"] == str(runs / "t1") and info["teacher_sha256"] == by_hand
    shutil.copytree(runs / "t1", tmp_path / "elsewhere" / "t1")
    assert weights_sha256(tmp_path / "elsewhere" / "t1") == weights_sha256(runs / "t1") == by_hand
    assert weights_sha256(runs / "t2") != by_hand


def test_student_refuses_a_student_run_as_teacher(runs, tmp_path, capsys):
    out = tmp_path / "s2"
    args = ["student", "--teacher", str(runs / "s"), "--recipe", str(runs / "recipe.yaml"), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"distill: error: --teacher {runs / 's'}: a student run (role 'student'), expected a teacher run"
    assert not (out / "model.json").exists() and not (out / "state.safetensors").exists()


def test_a_run_without_a_role_is_no_teacher(tmp_path):
    with pytest.raises(UserError, match=r"^--teacher x: a run with no role in its model.json, expected a teacher run$"):
        require_role(Path("x"), {}, "teacher", "--teacher")


def test_evaluate_refuses_a_student_of_another_teacher(runs, tmp_path, capsys):
    assert _evaluate(runs / "t2", [runs / "s"], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"--student {runs / 's'}: distilled from another teacher ({runs / 't1'}" in err
    assert f"than --teacher {runs / 't2'}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "report.json").exists()


def test_evaluate_refuses_a_student_run_as_teacher(runs, tmp_path, capsys):
    assert _evaluate(runs / "s", [], tmp_path / "out") == 2
    assert f"--teacher {runs / 's'}: a student run (role 'student'), expected a teacher run" in capsys.readouterr().err


def test_evaluate_takes_a_copied_teacher_and_notes_an_unhashed_student(runs, tmp_path):
    teacher = tmp_path / "moved" / "t1"
    shutil.copytree(runs / "t1", teacher)
    old = tmp_path / "old_student"  # as written before the hash was recorded
    shutil.copytree(runs / "s", old)
    info = _info(old)
    del info["teacher_sha256"]
    (old / "model.json").write_text(json.dumps(info))
    assert _evaluate(teacher, [runs / "s", old], tmp_path / "out") == 0
    notes = json.loads((tmp_path / "out" / "report.json").read_text())["notes"]
    unchecked = [n for n in notes if "provenance could not be checked" in n]
    assert len(unchecked) == 1 and unchecked[0].startswith(str(old))
