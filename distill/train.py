"""The training stages as functions: a teacher (or a single-model baseline), a student, a control, each from its
recipe section into a run directory, with the summary's test section.

The CLI and the orchestrators (:mod:`distill.stages`) call these; tests call them directly. What a stage checks
before it trains is in :mod:`distill.checks`, which recipe section it trains in :mod:`distill.sections`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from distill import UserError, students
from distill.checkpoint import atomic_write_text, load_model, read_model_info, require_role, weights_sha256
from distill.checks import check_teacher_matches, require_features, set_member_mode
from distill.data import Splits, load_ood, load_splits
from distill.data.images import check_transfer_disjoint, load_transfer
from distill.data.subsets import eval_subset, subset_record
from distill.loop import FitSetup, RunInfo, fit, split_metrics
from distill.models import build_model, ensemble_spec
from distill.models.contract import missing_features
from distill.objectives import objective_from_recipe
from distill.parallel import share_members
from distill.perturb import make_perturbation
from distill.predict import predict_logits
from distill.recipe import DataCfg, Recipe, StudentCfg, TeacherCfg, TrainCfg, to_dict
from distill.recorder import TrajectoryRecorder
from distill.saliency import mean_cam_similarity
from distill.sections import ControlPlan, student_config


def test_metrics(
    model: torch.nn.Module, splits: Splits, cam_images: int = 500, cam: bool = True, seed: int = 0
) -> dict[str, Any]:
    """Accuracy and NLL of the ensemble and of each member on the test split, and the CAM similarity on
    ``cam_images`` test images drawn class-stratified with ``seed`` (recorded as ``cam_subset``).

    The seed is a fixed 0 from the stages, not ``evaluate.subset_seed``: the summary belongs to the trained run,
    which ``distill run`` reuses whatever the recipe's evaluate section says."""
    y = splits.test_y
    logits = predict_logits(model, splits.test_x)  # (M, N, K)
    out = split_metrics(logits, y)
    out["member_acc_mean"] = statistics.fmean(out["member_acc"])
    if cam and logits.shape[0] > 1 and missing_features(model) is None:  # a featureless member: no CAM measure
        idx = eval_subset(y, cam_images, seed)  # the split may be class-sorted: never its first n
        out["cam_similarity"] = mean_cam_similarity(model, splits.test_x[idx], y[idx])
        out["cam_subset"] = subset_record(y[idx], seed, splits.meta.num_classes)
    return out


def _fit_and_test(
    model: torch.nn.Module,
    objective: Any,
    recipe: Recipe,
    train: TrainCfg,
    out: Path,
    splits: Splits,
    info: RunInfo,
    *,
    cam: bool,
    members_of_model: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Train, then (one process) evaluate the selected checkpoint on the test split into summary.json.
    ``members_of_model``: run.parallel: members spreads the model's members (False: a student's, whose teacher
    is spread instead while the student is whole on every process).
    ``extra``: the optional fields of :class:`~distill.loop.FitSetup` (resume, stop_after, ...)."""
    setup = FitSetup(
        out=out, splits=splits, data=recipe.data, train=train, run=recipe.run, seed=recipe.seed, info=info, **extra
    )
    summary = fit(model, objective, setup)
    if "stopped_after" in summary:
        return summary
    state = PartialState()
    # each process predicts its own members
    spread = members_of_model and recipe.run.parallel == "members" and state.num_processes > 1 and model.size > 1
    if state.is_main_process or spread:
        best, _ = load_model(setup.out)
        if spread:
            best = share_members(best, state.process_index, state.num_processes, state.device, info.role)
        test = test_metrics(best.to(state.device) if spread else best, setup.splits, cam=cam)
        if state.is_main_process:
            summary["test"] = test
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
    :class:`distill.recorder.TrajectoryRecorder`."""
    cfg: TeacherCfg | None = getattr(recipe, section)
    if cfg is None:
        raise UserError(f"--recipe: no '{section}' section in the recipe")
    extra = {"resume": resume, "stop_after": stop_after, "epoch_callbacks": epoch_callbacks}
    return _train_alone(recipe, cfg, section, out, None, **extra)


def _train_alone(
    recipe: Recipe,
    cfg: TeacherCfg,
    section: str,
    out: Path,
    plan: ControlPlan | None,
    *,
    resume: bool,
    stop_after: int | None,
    epoch_callbacks: list | None = None,
) -> dict[str, Any]:
    """Train the networks of ``cfg`` (recipe key ``section``, for errors) on labels alone: the teacher or single
    section (its role is ``section``), or the control ``plan``."""
    splits = load_splits(recipe.data)
    spec = ensemble_spec(cfg.arch, cfg.members)
    objective, params = objective_from_recipe(cfg.objective, f"{section}.objective")
    outlier_x = None
    if objective.needs_outliers:
        if recipe.data.outlier is None:
            raise UserError(f"{section}.objective: '{cfg.objective.get('name')}' needs data.outlier")
        outlier_x = load_ood(recipe.data.outlier, recipe.data.outlier_root, splits.meta, recipe.data.cache_dir)
    callbacks = list(epoch_callbacks or [])
    if cfg.record_trajectory:
        callbacks.append(TrajectoryRecorder.from_splits(splits, cfg.trajectory_images, cfg.record_weights))
    elif cfg.record_weights:
        raise UserError(f"{section}.record_weights: needs {section}.record_trajectory: true")
    torch.manual_seed(recipe.seed)
    model = build_model(spec, splits.meta)
    require_features(objective, model, f"{section}.objective")
    set_member_mode(model, recipe.run.member_mode, section)
    info = RunInfo(
        section if plan is None else "control",
        spec,
        splits.meta.to_json(),
        recipe.seed,
        to_dict(recipe),
        name=None if plan is None else plan.name,
        control=None if plan is None else to_dict(plan),
        objective={"name": cfg.objective.get("name", "de"), **to_dict(params)},  # resolved: every default
    )
    extra = {"outlier_x": outlier_x, "epoch_callbacks": callbacks, "resume": resume, "stop_after": stop_after}
    return _fit_and_test(model, objective, recipe, cfg.train, out, splits, info, cam=True, **extra)


def train_student(
    recipe: Recipe,
    teacher_dir: Path,
    out: Path,
    *,
    name: str | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Distil the teacher in ``teacher_dir`` (a teacher run: model.json's role) into the student the recipe
    describes."""
    cfg = student_config(recipe, name)
    key = "student" if recipe.student is cfg else f"students[{cfg.name}]"
    teacher = (Path(teacher_dir), "teacher", "--teacher")
    return _distil(recipe, cfg, key, teacher, out, None, resume=resume, stop_after=stop_after)


def _distil(
    recipe: Recipe,
    cfg: StudentCfg,
    key: str,
    teacher: tuple[Path, str, str],
    out: Path,
    plan: ControlPlan | None,
    *,
    resume: bool,
    stop_after: int | None,
) -> dict[str, Any]:
    """Distil the run ``teacher = (run dir, the role it must have, the flag that named it)`` into the student section
    ``cfg`` (recipe key ``key``): a student, or the control ``plan``. model.json records the teacher's path and
    weights' sha256."""
    teacher_dir, role, flag = teacher
    teacher_info = read_model_info(teacher_dir)
    require_role(teacher_dir, teacher_info, role, flag)  # before any data: a student run is no teacher
    check_teacher_matches(teacher_info, None, recipe.data, teacher_dir)  # the cut, before loading any data
    splits = load_splits(recipe.data)
    check_teacher_matches(teacher_info, splits, recipe.data, teacher_dir)
    transfer_x, transfer = _transfer_images(recipe.data, splits)
    perturb = make_perturbation(cfg.perturb.name, cfg.perturb.params, f"{key}.perturb")
    teacher_sha256 = weights_sha256(teacher_dir)
    teacher_model, _ = load_model(teacher_dir)
    set_member_mode(teacher_model, recipe.run.member_mode, f"{flag} {teacher_dir}")
    objective = students.student_objective(cfg, teacher_model, perturb)
    spec = students.student_spec(cfg, teacher_model.size)
    torch.manual_seed(recipe.seed)
    model = build_model(spec, splits.meta)
    set_member_mode(model, recipe.run.member_mode, key)
    info = RunInfo(
        "student" if plan is None else "control",
        spec,
        splits.meta.to_json(),
        recipe.seed,
        to_dict(recipe),
        name=cfg.name,
        control=None if plan is None else to_dict(plan),
        teacher=str(teacher_dir),
        teacher_sha256=teacher_sha256,  # checked by `distill evaluate` against the teacher it is given
        perturb={"name": cfg.perturb.name, **cfg.perturb.params},
        transfer=transfer,
    )
    extra = {"resume": resume, "stop_after": stop_after, "transfer_x": transfer_x}
    return _fit_and_test(
        model, objective, recipe, cfg.train, out, splits, info, cam=False, members_of_model=False, **extra
    )


def _transfer_images(data: DataCfg, splits: Splits) -> tuple[torch.Tensor | None, dict[str, Any] | None]:
    """``data.transfer``'s images in the splits' format, refused where any is a validation, test or held-out
    image, and what model.json / summary.json record of them; (None, None) without it."""
    if data.transfer is None:
        return None, None
    x = load_transfer(data.transfer, splits.meta, data.cache_dir)
    held_out = {"validation": splits.val_x, "test": splits.test_x, "held-out classes'": splits.heldout_x}
    check_transfer_disjoint(x, held_out, data.transfer)
    return x, {"path": str(Path(data.transfer).expanduser().resolve()), "images": len(x), "labels": "the teacher's"}


def train_control(
    recipe: Recipe,
    plan: ControlPlan,
    out: Path,
    single_dir: Path | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train one control into ``out`` (role "control"); ``self_kd`` is distilled from the single network's run in
    ``single_dir``."""
    key = f"controls[{plan.name}]"
    if plan.student is not None:
        if single_dir is None:
            raise UserError(f"{key}: the self_kd control needs the single network's run directory")
        teacher = (Path(single_dir), "single", "single")
        return _distil(recipe, plan.student, key, teacher, out, plan, resume=resume, stop_after=stop_after)
    assert plan.ensemble is not None
    extra = {"resume": resume, "stop_after": stop_after}
    return _train_alone(recipe, plan.ensemble, key, out, plan, **extra)
