"""The runs a report compares: the teacher, the single-model baseline and the students, loaded from their run
directories, and the data they share, rebuilt from the teacher's recipe.

Every run must have been trained on the same data as the teacher: the same dataset, classes and image format
(``model.json``'s ``meta``) and the same validation / test cut (the recipe's ``data`` keys that decide it).
Otherwise the report would compare numbers measured on different test sets, so it stops with a UserError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill import UserError
from distill.checkpoint import load_model, read_model_info
from distill.data import Splits, load_splits
from distill.data.identity import data_differences
from distill.recipe import Recipe, recipe_from_dict

RESERVED = ("members", "single", "teacher")  # model keys the report uses itself


@dataclass
class Run:
    key: str  # the model's name in the report: "teacher", "single", or the student's name
    role: str  # "teacher" | "single" | "student"
    path: Path
    model: nn.Module
    info: dict[str, Any]
    summary: dict[str, Any] | None  # summary.json (training history), when present

    @property
    def size(self) -> int:
        return int(self.model.size)

    @property
    def kind(self) -> str:
        return str(self.info.get("spec", {}).get("kind", "ensemble"))


def _data_of(info: dict, path: Path) -> dict:
    try:
        return dict(info["recipe"]["data"])
    except (KeyError, TypeError):
        raise UserError(f"{path / 'model.json'}: no recipe.data; expected a run directory written by distill") from None


def check_same_data(teacher: dict, info: dict, path: Path, flag: str) -> None:
    """UserError naming every difference between a run's data and the teacher's (:mod:`distill.data.identity`)."""
    diffs = data_differences(
        {"meta": teacher.get("meta", {}), "data": _data_of(teacher, path)},
        {"meta": info.get("meta", {}), "data": _data_of(info, path)},
    )
    if diffs:
        raise UserError(f"{flag} {path}: trained on other data than the teacher: {'; '.join(diffs)}")


def _summary(path: Path) -> dict | None:
    f = path / "summary.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{f}: not valid JSON ({err.msg} at line {err.lineno})") from None


def _load(key: str, role: str, path: Path, device: torch.device) -> Run:
    model, info = load_model(path)
    return Run(key, role, path, model.to(device), info, _summary(path))


def _student_key(info: dict, path: Path, taken: set[str]) -> str:
    base = str(info.get("name") or path.name)
    key = f"student_{base}" if base in RESERVED else base
    n = 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


@dataclass
class Runs:
    teacher: Run
    single: Run | None
    students: list[Run]
    recipe: Recipe  # the teacher's
    splits: Splits

    @property
    def all(self) -> list[Run]:
        return [self.teacher, *([self.single] if self.single else []), *self.students]


def load_runs(teacher: Path, students: list[Path], single: Path | None, device: torch.device) -> Runs:
    """Check every run against the teacher's data (before loading any weights), then load them all."""
    teacher, students = Path(teacher), [Path(s) for s in students]
    t_info = read_model_info(teacher)
    try:
        recipe = recipe_from_dict(t_info["recipe"])
    except KeyError:
        raise UserError(f"{teacher / 'model.json'}: no recipe; expected a run directory written by distill") from None
    _data_of(t_info, teacher)
    infos = [(s, read_model_info(s)) for s in students]
    for s, info in infos:
        check_same_data(t_info, info, s, "--students")
    if single is not None:
        single = Path(single)
        check_same_data(t_info, read_model_info(single), single, "--single")
    taken: set[str] = set(RESERVED)
    runs = []
    for s, info in infos:
        key = _student_key(info, s, taken)
        taken.add(key)
        runs.append(_load(key, "student", s, device))
    return Runs(
        teacher=_load("teacher", "teacher", teacher, device),
        single=_load("single", "single", single, device) if single is not None else None,
        students=runs,
        recipe=recipe,
        splits=load_splits(recipe.data),
    )
