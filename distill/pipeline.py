"""The whole pipeline from one recipe: teacher, single-model baseline, students, controls, then the gap report.

Stages whose outputs exist are reused and half-finished ones resumed, so rerunning the same command
after a crash continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from distill import UserError
from distill.recipe import Recipe
from distill.reuse import prepare_out, stages_of
from distill.sections import control_plans
from distill.stages import StageTimes, run_stage
from distill.train import train_control, train_ensemble, train_student


def say(line: str) -> None:
    """Print a stage header once: on the main process of a launched run (every process runs the pipeline)."""
    if os.environ.get("RANK", "0") == "0":
        print(line, flush=True)


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
    names = [s.name for s in recipe.students]  # unique: check_recipe refused a repeated one, naming its key
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
    stage = {s.name: s for s in stages_of(recipe, out, plans)}
    teacher_dir = out / "teacher"
    say(f"== teacher -> {teacher_dir}")
    run_stage(recipe, stage["teacher"], partial(train_ensemble, recipe, teacher_dir), out, times)
    single_dir = None
    if recipe.single is not None:
        single_dir = out / "single"
        say(f"== single-model baseline -> {single_dir}")
        run_stage(recipe, stage["single"], partial(train_ensemble, recipe, single_dir, section="single"), out, times)
    student_dirs = []
    for s in recipe.students:
        d = out / "students" / s.name
        say(f"== student '{s.name}' ({s.kind} {s.arch}, perturbation {s.perturb.name}) -> {d}")
        run_stage(
            recipe, stage[f"student/{s.name}"], partial(train_student, recipe, teacher_dir, d, name=s.name), out, times
        )
        student_dirs.append(d)
    control_dirs = []
    for p in plans:
        d = out / "controls" / p.name
        say(f"== control '{p.name}' (like student '{p.like}') -> {d}")
        run_stage(recipe, stage[f"control/{p.name}"], partial(train_control, recipe, p, d, single_dir), out, times)
        control_dirs.append(d)
    from accelerate import PartialState

    from distill.report import evaluate_runs, format_gap_table

    if not PartialState().is_main_process:  # under accelerate launch one process reports (docs/scale.md)
        return {}
    say(f"== report -> {out / 'report'}")
    start = time.perf_counter()
    report = evaluate_runs(teacher_dir, student_dirs, single_dir, out / "report", recipe.evaluate, control_dirs)
    times.record("report", time.perf_counter() - start)
    print(format_gap_table(report))
    return report
