"""The runs a report compares: the teacher, the single-model baseline, the controls and the students, loaded from
their run directories, and the data they share, rebuilt from the teacher's recipe.

Every run must have been trained on the same data as the teacher: the same dataset, classes and image format
(``model.json``'s ``meta``) and the same validation / test cut (the recipe's ``data`` keys that decide it).
Otherwise the report would compare numbers measured on different test sets, so it stops with a UserError.

Every run must also be what its flag says (``model.json``'s role), and a student must have been distilled from
the given teacher: the sha256 of the teacher's weights file it recorded (:func:`distill.checkpoint.weights_sha256`)
must be the given teacher's, and a self_kd control's the given single network's. Runs written before the hash was
recorded are reported with a note that their provenance could not be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distill import UserError
from distill.checkpoint import read_model_info, require_role, weights_sha256
from distill.data import Splits
from distill.data.identity import data_differences
from distill.recipe import Recipe, recipe_from_dict
from distill.runs import RunDir, load_run, recipe_data, run_splits

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


def _control_key(info: dict, path: Path, taken: set[str]) -> str:
    base = f"control:{(info.get('control') or {}).get('name') or info.get('name') or path.name}"
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def check_provenance(path: Path, info: dict, source: Path, source_sha256: str, flags: tuple[str, str]) -> str | None:
    """UserError when the run at ``path`` was distilled from another run than ``source`` (by the sha256 of the
    weights file it recorded); a note when it recorded none (written before the hash was). ``flags``: the flags that
    named ``path`` and ``source``."""
    recorded = info.get("teacher_sha256")
    if recorded is None:
        return f"{path}: no teacher hash in its model.json (an older run): its provenance could not be checked."
    if recorded != source_sha256:
        raise UserError(
            f"{flags[0]} {path}: distilled from another teacher ({info.get('teacher')}, weights sha256 "
            f"{str(recorded)[:12]}) than {flags[1]} {source} (sha256 {source_sha256[:12]})"
        )
    return None


@dataclass
class Runs:
    teacher: RunDir
    single: RunDir | None
    students: list[RunDir]
    recipe: Recipe  # the teacher's
    splits: Splits
    controls: list[RunDir] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what loading could not check, for the report's notes

    @property
    def all(self) -> list[RunDir]:
        return [self.teacher, *([self.single] if self.single else []), *self.controls, *self.students]


def load_runs(
    teacher: Path, students: list[Path], single: Path | None, device: torch.device, controls: Sequence[Path] = ()
) -> Runs:
    """Check every run's role and data against the teacher's and each student's teacher hash (before loading any
    weights), then load them all."""
    teacher, students, controls = Path(teacher), [Path(s) for s in students], [Path(c) for c in controls]
    t_info = read_model_info(teacher)
    require_role(teacher, t_info, "teacher", "--teacher")
    try:
        recipe = recipe_from_dict(t_info["recipe"])
    except KeyError:
        raise UserError(f"{teacher / 'model.json'}: no recipe; expected a run directory written by distill") from None
    recipe_data(t_info, teacher)
    infos = [(s, read_model_info(s)) for s in students]
    for s, info in infos:
        require_role(s, info, "student", "--student")
        check_same_data(t_info, info, s, "--students")
    c_infos = [(c, read_model_info(c)) for c in controls]
    for c, info in c_infos:
        require_role(c, info, "control", "--control")
        check_same_data(t_info, info, c, "--control")
    if single is not None:
        single = Path(single)
        check_same_data(t_info, read_model_info(single), single, "--single")
    notes = _provenance_notes(teacher, infos, single, c_infos)
    taken: set[str] = set(RESERVED)
    runs, control_runs = [], []
    for s, info in infos:
        key = _student_key(info, s, taken)
        taken.add(key)
        runs.append(load_run(s, device, key, "student"))
    for c, info in c_infos:
        key = _control_key(info, c, taken)
        taken.add(key)
        control_runs.append(load_run(c, device, key, "control"))
    return Runs(
        teacher=load_run(teacher, device, "teacher", "teacher"),
        single=load_run(single, device, "single", "single") if single is not None else None,
        students=runs,
        recipe=recipe,
        splits=run_splits(recipe.data),
        controls=control_runs,
        notes=notes,
    )


def _provenance_notes(
    teacher: Path, students: list[tuple[Path, dict]], single: Path | None, controls: list[tuple[Path, dict]]
) -> list[str]:
    """Each student against the teacher, each distilled control (self_kd) against the single network: a UserError on
    a mismatch, else the notes of what could not be checked."""
    notes = []
    t_sha = weights_sha256(teacher) if students else ""
    for s, info in students:
        notes.append(check_provenance(s, info, teacher, t_sha, ("--student", "--teacher")))
    distilled = [(c, info) for c, info in controls if "teacher" in info]
    if distilled and single is None:
        notes += [f"{c}: distilled from {info['teacher']}; no --single to check that against." for c, info in distilled]
    elif distilled:
        s_sha = weights_sha256(single)
        for c, info in distilled:
            notes.append(check_provenance(c, info, single, s_sha, ("--control", "--single")))
    return [n for n in notes if n]
