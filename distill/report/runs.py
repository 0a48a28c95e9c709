"""The runs a report compares: the teacher, the single-model baseline and the students, loaded from their run
directories, and the data they share, rebuilt from the teacher's recipe.

Every run must have been trained on the same data as the teacher: the same dataset, classes and image format
(``model.json``'s ``meta``) and the same validation / test cut (the recipe's ``data`` keys that decide it).
Otherwise the report would compare numbers measured on different test sets, so it stops with a UserError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from distill import UserError
from distill.checkpoint import read_model_info
from distill.data import Splits
from distill.data.identity import data_differences
from distill.recipe import Recipe, recipe_from_dict
from distill.runs import Run, load_run, recipe_data, run_splits

RESERVED = ("members", "single", "teacher")  # model keys the report uses itself


def check_same_data(teacher: dict, info: dict, path: Path, flag: str) -> None:
    """UserError naming every difference between a run's data and the teacher's (:mod:`distill.data.identity`)."""
    diffs = data_differences(
        {"meta": teacher.get("meta", {}), "data": recipe_data(teacher, path)},
        {"meta": info.get("meta", {}), "data": recipe_data(info, path)},
    )
    if diffs:
        raise UserError(f"{flag} {path}: trained on other data than the teacher: {'; '.join(diffs)}")


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
    recipe_data(t_info, teacher)
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
        runs.append(load_run(s, device, key, "student"))
    return Runs(
        teacher=load_run(teacher, device, "teacher", "teacher"),
        single=load_run(single, device, "single", "single") if single is not None else None,
        students=runs,
        recipe=recipe,
        splits=run_splits(recipe.data),
    )
