"""The whole pipeline from one recipe: teacher, single-model baseline, students, controls, then the gap report.

Stages whose outputs exist are reused and half-finished ones resumed, so rerunning the same command
after a crash continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from distill import UserError
from distill.recipe import Recipe
from distill.reuse import prepare_out
from distill.train import control_plans, train_control, train_ensemble, train_student


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and "test" in json.loads(summary.read_text())


class StageTimes:
    """Wall time of each stage this invocation ran, written to ``out/stages.json`` as stages finish (a reused
    stage keeps the time recorded when it ran)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "stages.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, name: str, seconds: float) -> None:
        from distill.checkpoint import atomic_write_text

        self.times[name] = round(seconds, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.times, indent=2))


def _stage(run_dir: Path, train: Any, times: StageTimes, name: str) -> None:
    if _finished(run_dir):
        print(f"[reuse] {run_dir}")
        return
    start = time.perf_counter()
    train(resume=(run_dir / "state.safetensors").exists())
    times.record(name, time.perf_counter() - start)


def run_pipeline(
    recipe: Recipe, out: Path, rerun: Sequence[str] = (), only_students: Sequence[str] | None = None
) -> dict[str, Any]:
    """Train what the recipe lists into ``out/{teacher,single,students/<name>,controls/<name>}``, then evaluate
    into ``out/report``. Returns the report. Stages already in ``out`` must come from the same recipe sections
    (see :mod:`distill.reuse`); ``rerun`` names stages to train again; ``only_students`` keeps only those
    of the recipe's students (in the recipe's order). The controls are trained whatever ``only_students`` says,
    after the students (the main comparison first), copying the student the full recipe's ``controls_like``
    names."""
    if recipe.teacher is None:
        raise UserError("--recipe: a pipeline recipe needs a 'teacher' section")
    names = [s.name for s in recipe.students]
    if len(set(names)) != len(names):
        raise UserError(f"students: names must be unique, got {names}")
    if recipe.data.transfer is not None and not Path(recipe.data.transfer).expanduser().exists():
        # the students read it, after the teacher has trained: say so before
        raise UserError(f"data.transfer {recipe.data.transfer}: not found; expected a folder of images or an archive")
    plans = control_plans(recipe)  # before students are left out: the student they copy may be one of them
    if only_students is not None:
        unknown = [n for n in only_students if n not in names]
        if unknown:
            raise UserError(
                f"--students {unknown[0]}: not a student of this recipe; expected one of: {', '.join(names)}"
            )
        recipe = dataclasses.replace(recipe, students=[s for s in recipe.students if s.name in set(only_students)])
    prepare_out(recipe, out, rerun, plans)
    times = StageTimes(out)
    teacher_dir = out / "teacher"
    print(f"== teacher -> {teacher_dir}")
    _stage(teacher_dir, partial(train_ensemble, recipe, teacher_dir), times, "teacher")
    single_dir = None
    if recipe.single is not None:
        single_dir = out / "single"
        print(f"== single-model baseline -> {single_dir}")
        _stage(single_dir, partial(train_ensemble, recipe, single_dir, section="single"), times, "single")
    student_dirs = []
    for s in recipe.students:
        d = out / "students" / s.name
        print(f"== student '{s.name}' ({s.kind} {s.arch}, perturbation {s.perturb.name}) -> {d}")
        _stage(d, partial(train_student, recipe, teacher_dir, d, name=s.name), times, f"student/{s.name}")
        student_dirs.append(d)
    control_dirs = []
    for p in plans:
        d = out / "controls" / p.name
        print(f"== control '{p.name}' (like student '{p.like}') -> {d}")
        _stage(d, partial(train_control, recipe, p, d, single_dir), times, f"control/{p.name}")
        control_dirs.append(d)
    from accelerate import PartialState

    from distill.report import evaluate_runs, format_gap_table

    if not PartialState().is_main_process:  # under accelerate launch one process reports (docs/scale.md)
        return {}
    print(f"== report -> {out / 'report'}")
    start = time.perf_counter()
    report = evaluate_runs(teacher_dir, student_dirs, single_dir, out / "report", recipe.evaluate, control_dirs)
    times.record("report", time.perf_counter() - start)
    print(format_gap_table(report))
    return report
