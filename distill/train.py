"""Pipeline stages as functions: train a teacher (or a single-model baseline) from a recipe section.

The CLI and the ``run`` pipeline call these; tests call them directly.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from distill import UserError, students
from distill.checkpoint import atomic_write_text, load_model, read_model_info
from distill.data import Splits, load_ood, load_splits
from distill.data.identity import data_differences
from distill.loop import FitSetup, fit
from distill.metrics import accuracy, nll
from distill.models import build_model, ensemble_spec, mean_probs
from distill.models.ensemble import Ensemble
from distill.objectives import objective_from_recipe
from distill.perturb import make_perturbation
from distill.predict import predict_logits
from distill.recipe import DataCfg, Recipe, StudentCfg, TeacherCfg, TrainCfg, to_dict
from distill.saliency import mean_cam_similarity


def test_metrics(model: torch.nn.Module, splits: Splits, cam_images: int = 500, cam: bool = True) -> dict[str, Any]:
    """Accuracy and NLL of the ensemble and of each member on the test split, and the CAM similarity."""
    logits = predict_logits(model, splits.test_x)  # (M, N, K)
    y = splits.test_y
    member_acc = [accuracy(p, y) for p in logits.softmax(-1)]
    out: dict[str, Any] = {
        "acc": accuracy(mean_probs(logits), y),
        "nll": nll(mean_probs(logits), y),
        "member_acc": member_acc,
        "member_acc_mean": statistics.fmean(member_acc),
    }
    if cam and logits.shape[0] > 1:
        n = min(cam_images, len(y))
        out["cam_similarity"] = mean_cam_similarity(model, splits.test_x[:n], y[:n])
    return out


def _fit_and_test(
    model: torch.nn.Module,
    objective: Any,
    recipe: Recipe,
    train: TrainCfg,
    out: Path,
    splits: Splits,
    info: dict[str, Any],
    *,
    cam: bool,
    **extra: Any,
) -> dict[str, Any]:
    """Train, then (one process) evaluate the selected checkpoint on the test split into summary.json.
    ``extra``: the optional fields of :class:`~distill.loop.FitSetup` (resume, stop_after, ...)."""
    setup = FitSetup(
        out=out, splits=splits, data=recipe.data, train=train, run=recipe.run, seed=recipe.seed, info=info, **extra
    )
    summary = fit(model, objective, setup)
    if "stopped_after" in summary:
        return summary
    if PartialState().is_main_process:
        best, _ = load_model(setup.out)
        summary["test"] = test_metrics(best, setup.splits, cam=cam)
        atomic_write_text(setup.out / "summary.json", json.dumps(summary, indent=2))
    return summary


def train_ensemble(
    recipe: Recipe,
    out: Path,
    *,
    section: str = "teacher",
    resume: bool = False,
    stop_after: int | None = None,
    epoch_callbacks: list | None = None,
) -> dict[str, Any]:
    """Train the recipe's ``teacher`` (or ``single``) section into ``out``; return its summary.

    ``epoch_callbacks``: extra ``(epoch, model, run_dir)`` callables run after each epoch (see ``FitSetup``), e.g.
    :class:`distill.analysis.trajectory.TrajectoryRecorder`."""
    cfg: TeacherCfg | None = getattr(recipe, section)
    if cfg is None:
        raise UserError(f"--recipe: no '{section}' section in the recipe")
    splits = load_splits(recipe.data)
    spec = ensemble_spec(cfg.arch, cfg.members)
    objective, params = objective_from_recipe(cfg.objective, f"{section}.objective")
    outlier_x = None
    if objective.needs_outliers:
        if recipe.data.outlier is None:
            raise UserError(f"{section}.objective: '{cfg.objective.get('name')}' needs data.outlier")
        outlier_x = load_ood(recipe.data.outlier, recipe.data.outlier_root, splits.meta)
    callbacks = list(epoch_callbacks or [])
    if cfg.record_trajectory:
        from distill.analysis.trajectory import TrajectoryRecorder

        callbacks.append(TrajectoryRecorder.from_splits(splits, cfg.trajectory_images, cfg.record_weights))
    elif cfg.record_weights:
        raise UserError(f"{section}.record_weights: needs {section}.record_trajectory: true")
    torch.manual_seed(recipe.seed)
    model = build_model(spec, splits.meta)
    set_member_mode(model, recipe.run.member_mode, section)
    info = {
        "role": section,
        "spec": spec,
        "meta": splits.meta.to_json(),
        "seed": recipe.seed,
        "objective": {"name": cfg.objective.get("name", "de"), **to_dict(params)},  # resolved: every default
        "recipe": to_dict(recipe),
    }
    extra = {"outlier_x": outlier_x, "epoch_callbacks": callbacks, "resume": resume, "stop_after": stop_after}
    return _fit_and_test(model, objective, recipe, cfg.train, out, splits, info, cam=True, **extra)


def set_member_mode(model: torch.nn.Module, mode: str, what: str) -> None:
    """Run an ensemble's members as ``run.member_mode`` says; other models have one forward and ignore it."""
    if isinstance(model, Ensemble):
        try:
            model.mode = mode
        except ValueError as err:
            raise UserError(f"run.member_mode {mode}: {what}: {err}") from None


def student_config(recipe: Recipe, name: str | None) -> StudentCfg:
    """The recipe's ``student`` section, or the ``students`` entry called ``name``."""
    if name is None:
        if recipe.student is not None:
            return recipe.student
        if len(recipe.students) == 1:
            return recipe.students[0]
        raise UserError("--recipe: give a 'student' section, or --name to pick one of 'students'")
    for s in recipe.students:
        if s.name == name:
            return s
    raise UserError(
        f"--name {name}: no student of that name; the recipe has: {', '.join(s.name for s in recipe.students)}"
    )


def student_spec(cfg: StudentCfg, teacher_size: int) -> dict:
    """The model spec of the recipe's student, from its kind (:mod:`distill.students`)."""
    return students.student_spec(cfg, teacher_size)


def check_teacher_matches(teacher_info: dict, splits: Splits | None, data: DataCfg, teacher_dir: Path) -> None:
    """A teacher trained on other data than the student's recipe describes is an error before any training
    (:mod:`distill.data.identity`): another split seed, say, would let the student select and report on
    images the teacher was trained on. Without ``splits`` only the recipe's cut is compared."""
    teacher = {"meta": teacher_info.get("meta", {}), "data": teacher_info.get("recipe", {}).get("data", {})}
    if splits is None:
        teacher["meta"] = {}
    mine = {"meta": splits.meta.to_json() if splits is not None else {}, "data": to_dict(data)}
    diffs = data_differences(mine, teacher, ref_label="recipe's data", cand_label="teacher")
    if diffs:
        raise UserError(f"--teacher {teacher_dir}: trained on other data: {'; '.join(diffs)}")


def train_student(
    recipe: Recipe,
    teacher_dir: Path,
    out: Path,
    *,
    name: str | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Distil the teacher in ``teacher_dir`` into the student the recipe describes."""
    cfg = student_config(recipe, name)
    key = "student" if recipe.student is cfg else f"students[{cfg.name}]"
    teacher_info = read_model_info(teacher_dir)
    check_teacher_matches(teacher_info, None, recipe.data, teacher_dir)  # the cut, before loading any data
    splits = load_splits(recipe.data)
    check_teacher_matches(teacher_info, splits, recipe.data, teacher_dir)
    perturb = make_perturbation(cfg.perturb.name, cfg.perturb.params, f"{key}.perturb")
    teacher, _ = load_model(teacher_dir)
    set_member_mode(teacher, recipe.run.member_mode, f"--teacher {teacher_dir}")
    objective = students.student_objective(cfg, teacher, perturb)
    spec = student_spec(cfg, teacher.size)
    torch.manual_seed(recipe.seed)
    model = build_model(spec, splits.meta)
    set_member_mode(model, recipe.run.member_mode, key)
    info = {
        "role": "student",
        "name": cfg.name,
        "spec": spec,
        "meta": splits.meta.to_json(),
        "seed": recipe.seed,
        "teacher": str(teacher_dir),
        "perturb": {"name": cfg.perturb.name, **cfg.perturb.params},
        "recipe": to_dict(recipe),
    }
    extra = {"resume": resume, "stop_after": stop_after}
    return _fit_and_test(model, objective, recipe, cfg.train, out, splits, info, cam=False, **extra)
