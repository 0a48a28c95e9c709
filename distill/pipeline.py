"""The whole pipeline from one recipe: teacher, single-model baseline, students, then the gap report.

Stages whose outputs exist are reused and half-finished ones resumed, so rerunning the same command
after a crash continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill import UserError
from distill.recipe import Recipe
from distill.train import train_ensemble, train_student


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and "test" in json.loads(summary.read_text())


def _stage(run_dir: Path, train: Any) -> None:
    if _finished(run_dir):
        print(f"[reuse] {run_dir}")
        return
    train(resume=(run_dir / "state.safetensors").exists())


def run_pipeline(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Train what the recipe lists into ``out/{teacher,single,students/<name>}``, then evaluate into
    ``out/report``. Returns the report."""
    if recipe.teacher is None:
        raise UserError("--recipe: a pipeline recipe needs a 'teacher' section")
    names = [s.name for s in recipe.students]
    if len(set(names)) != len(names):
        raise UserError(f"students: names must be unique, got {names}")
    teacher_dir = out / "teacher"
    print(f"== teacher -> {teacher_dir}")
    _stage(teacher_dir, lambda resume: train_ensemble(recipe, teacher_dir, resume=resume))
    single_dir = None
    if recipe.single is not None:
        single_dir = out / "single"
        print(f"== single-model baseline -> {single_dir}")
        _stage(single_dir, lambda resume: train_ensemble(recipe, single_dir, section="single", resume=resume))
    student_dirs = []
    for s in recipe.students:
        d = out / "students" / s.name
        print(f"== student '{s.name}' ({s.kind} {s.arch}, perturbation {s.perturb.name}) -> {d}")
        _stage(d, lambda resume, d=d, s=s: train_student(recipe, teacher_dir, d, name=s.name, resume=resume))
        student_dirs.append(d)
    from distill.report import evaluate_runs, format_gap_table

    print(f"== report -> {out / 'report'}")
    report = evaluate_runs(teacher_dir, student_dirs, single_dir, out / "report", recipe.evaluate)
    print(format_gap_table(report))
    return report
