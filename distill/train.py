"""Pipeline stages as functions: train a teacher (or a single-model baseline) from a recipe section.

The CLI and the ``run`` pipeline call these; tests call them directly.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from distill import UserError, students
from distill.checkpoint import atomic_write_text, load_model, read_model_info, require_role, weights_sha256
from distill.data import Splits, load_ood, load_splits
from distill.data.identity import data_differences
from distill.data.images import check_transfer_disjoint, load_transfer
from distill.data.subsets import eval_subset, subset_record
from distill.loop import FitSetup, fit
from distill.metrics import accuracy, nll
from distill.models import build_model, ensemble_spec, mean_probs
from distill.models.contract import missing_features
from distill.models.ensemble import Ensemble
from distill.objectives import objective_from_recipe
from distill.objectives.diversity import DIVERSITY_TERMS
from distill.parallel import share_members
from distill.perturb import make_perturbation
from distill.predict import predict_logits
from distill.recipe import ControlCfg, DataCfg, Recipe, StudentCfg, TeacherCfg, TrainCfg, to_dict
from distill.saliency import mean_cam_similarity


def test_metrics(
    model: torch.nn.Module, splits: Splits, cam_images: int = 500, cam: bool = True, seed: int = 0
) -> dict[str, Any]:
    """Accuracy and NLL of the ensemble and of each member on the test split, and the CAM similarity on
    ``cam_images`` test images drawn class-stratified with ``seed`` (recorded as ``cam_subset``).

    The seed is a fixed 0 from the stages, not ``evaluate.subset_seed``: the summary belongs to the trained run,
    which ``distill run`` reuses whatever the recipe's evaluate section says."""
    logits = predict_logits(model, splits.test_x)  # (M, N, K)
    y = splits.test_y
    member_acc = [accuracy(p, y) for p in logits.softmax(-1)]
    out: dict[str, Any] = {
        "acc": accuracy(mean_probs(logits), y),
        "nll": nll(mean_probs(logits), y),
        "member_acc": member_acc,
        "member_acc_mean": statistics.fmean(member_acc),
    }
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
    state = PartialState()
    spread = recipe.run.parallel == "members" and state.num_processes > 1  # each process predicts its own members
    if state.is_main_process or spread:
        best, _ = load_model(setup.out)
        if spread:
            best = share_members(best, state.process_index, state.num_processes, state.device, info["role"])
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
    :class:`distill.analysis.trajectory.TrajectoryRecorder`."""
    cfg: TeacherCfg | None = getattr(recipe, section)
    if cfg is None:
        raise UserError(f"--recipe: no '{section}' section in the recipe")
    extra = {"resume": resume, "stop_after": stop_after, "epoch_callbacks": epoch_callbacks}
    return _train_alone(recipe, cfg, section, out, {"role": section}, **extra)


def _train_alone(
    recipe: Recipe,
    cfg: TeacherCfg,
    section: str,
    out: Path,
    info: dict[str, Any],
    *,
    resume: bool,
    stop_after: int | None,
    epoch_callbacks: list | None = None,
) -> dict[str, Any]:
    """Train the networks of ``cfg`` (recipe key ``section``, for errors) on labels alone; ``info`` starts
    model.json."""
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
        from distill.analysis.trajectory import TrajectoryRecorder

        callbacks.append(TrajectoryRecorder.from_splits(splits, cfg.trajectory_images, cfg.record_weights))
    elif cfg.record_weights:
        raise UserError(f"{section}.record_weights: needs {section}.record_trajectory: true")
    torch.manual_seed(recipe.seed)
    model = build_model(spec, splits.meta)
    require_features(objective, model, f"{section}.objective")
    set_member_mode(model, recipe.run.member_mode, section)
    info = {
        **info,
        "spec": spec,
        "meta": splits.meta.to_json(),
        "seed": recipe.seed,
        "objective": {"name": cfg.objective.get("name", "de"), **to_dict(params)},  # resolved: every default
        "recipe": to_dict(recipe),
    }
    extra = {"outlier_x": outlier_x, "epoch_callbacks": callbacks, "resume": resume, "stop_after": stop_after}
    return _fit_and_test(model, objective, recipe, cfg.train, out, splits, info, cam=True, **extra)


def require_features(objective: Any, model: torch.nn.Module, key: str) -> None:
    """A diversity term that reads feature maps (SDDE's Grad-CAM) with a member that has none is an error when the
    model is built, naming the term and the member, not a failure in the first step."""
    needs = [t for t in getattr(objective, "terms", ()) if getattr(t, "needs_features", False)]
    why = missing_features(model) if needs else None
    if why is not None:
        term = next((n for n, e in DIVERSITY_TERMS.items() if e.make is type(needs[0])), type(needs[0]).__name__)
        raise UserError(
            f"{key}: the diversity term '{term}' needs Grad-CAM feature maps, but {why}; register the architecture "
            "with cam_layer=<a layer giving (B, D, h, w)>, or drop the term"
        )


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
    """Distil the teacher in ``teacher_dir`` (a teacher run: model.json's role) into the student the recipe
    describes."""
    cfg = student_config(recipe, name)
    key = "student" if recipe.student is cfg else f"students[{cfg.name}]"
    teacher = (Path(teacher_dir), "teacher", "--teacher")
    return _distil(recipe, cfg, key, teacher, out, {"role": "student"}, resume=resume, stop_after=stop_after)


def _distil(
    recipe: Recipe,
    cfg: StudentCfg,
    key: str,
    teacher: tuple[Path, str, str],
    out: Path,
    info: dict[str, Any],
    *,
    resume: bool,
    stop_after: int | None,
) -> dict[str, Any]:
    """Distil the run ``teacher = (run dir, the role it must have, the flag that named it)`` into the student section
    ``cfg`` (recipe key ``key``); ``info`` starts model.json, which records the teacher's path and weights' sha256."""
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
    spec = student_spec(cfg, teacher_model.size)
    torch.manual_seed(recipe.seed)
    model = build_model(spec, splits.meta)
    set_member_mode(model, recipe.run.member_mode, key)
    info = {
        **info,
        "name": cfg.name,
        "spec": spec,
        "meta": splits.meta.to_json(),
        "seed": recipe.seed,
        "teacher": str(teacher_dir),
        "teacher_sha256": teacher_sha256,  # checked by `distill evaluate` against the teacher it is given
        "perturb": {"name": cfg.perturb.name, **cfg.perturb.params},
        "recipe": to_dict(recipe),
    }
    if transfer is not None:
        info["transfer"] = transfer
    extra = {"resume": resume, "stop_after": stop_after, "transfer_x": transfer_x}
    return _fit_and_test(model, objective, recipe, cfg.train, out, splits, info, cam=False, **extra)


def _transfer_images(data: DataCfg, splits: Splits) -> tuple[torch.Tensor | None, dict[str, Any] | None]:
    """``data.transfer``'s images in the splits' format, refused where any is a validation, test or held-out
    image, and what model.json / summary.json record of them; (None, None) without it."""
    if data.transfer is None:
        return None, None
    x = load_transfer(data.transfer, splits.meta, data.cache_dir)
    held_out = {"validation": splits.val_x, "test": splits.test_x, "held-out classes'": splits.heldout_x}
    check_transfer_disjoint(x, held_out, data.transfer)
    return x, {"path": str(Path(data.transfer).expanduser().resolve()), "images": len(x), "labels": "the teacher's"}


# --- controls: what a student would reach without the ensemble ---------------------------------------

DEFAULT_SMOOTHING = 0.1


@dataclass(frozen=True)
class ControlPlan:
    """What one control stage trains, resolved from the recipe (:func:`control_plans`). It is stored in the control's
    model.json (``control``) and compared with the new recipe's on reuse (:mod:`distill.reuse`), so a control is
    retrained exactly when what decides its weights changed, wherever in the recipe that was."""

    name: str
    like: str  # the student whose architecture, train section and data the control copies
    ensemble: TeacherCfg | None = None  # single_long, label_smoothing: this section trained on labels alone
    student: StudentCfg | None = None  # self_kd: this student section, distilled from the single network
    teacher: TeacherCfg | None = None  # self_kd: the single section its teacher is trained from


def _controls_like(recipe: Recipe) -> StudentCfg:
    if not recipe.students:
        raise UserError("recipe key 'controls': controls copy a student's architecture and schedule; no 'students'")
    names = [s.name for s in recipe.students]
    like = recipe.controls_like if recipe.controls_like is not None else names[0]
    if like not in names:
        raise UserError(f"recipe key 'controls_like': no student '{like}'; expected one of: {', '.join(names)}")
    cfg = recipe.students[names.index(like)]
    if cfg.kind != "single":
        # A control is one network: copying a BatchEnsemble's or Hydra's architecture would compare models of
        # another size and readout, which is not the comparison a control exists for.
        default = "" if recipe.controls_like is not None else " (default: the first student)"
        raise UserError(
            f"recipe key 'controls_like'{default}: student '{like}' is a {cfg.kind} student; controls copy a 'single' "
            "student (one network): name one with controls_like"
        )
    return cfg


def _plan(recipe: Recipe, control: ControlCfg, like: StudentCfg, key: str) -> ControlPlan:
    if control.smoothing is not None and control.name != "label_smoothing":
        raise UserError(f"recipe key '{key}.smoothing': only the label_smoothing control takes it ({control.name})")
    single = recipe.single
    if control.name == "label_smoothing":
        smoothing = DEFAULT_SMOOTHING if control.smoothing is None else control.smoothing
        objective = {"name": "label_smoothing", "smoothing": smoothing}
        return ControlPlan(control.name, like.name, ensemble=TeacherCfg(like.arch, 1, objective, like.train))
    if single is None:
        raise UserError(f"recipe key '{key}.name': the {control.name} control needs the recipe's 'single' section")
    if control.name == "single_long":
        # The single network's members (1) and objective; only the train section is the student's. The trajectory
        # recording of the single stage is not repeated.
        section = replace(single, train=like.train, record_trajectory=False, record_weights=False)
        return ControlPlan(control.name, like.name, ensemble=section)
    return ControlPlan(control.name, like.name, student=replace(like, name=control.name), teacher=single)


def control_plans(recipe: Recipe) -> list[ControlPlan]:
    """The recipe's ``controls``, each resolved against the student ``controls_like`` names; a UserError names the
    recipe key of the first problem (called by :func:`distill.resolve.check_recipe`, before any data loads)."""
    if not recipe.controls:
        return []
    like = _controls_like(recipe)
    names = [c.name for c in recipe.controls]
    plans = []
    for i, control in enumerate(recipe.controls):
        if control.name in names[:i]:
            raise UserError(
                f"recipe key 'controls.{i}.name': {control.name!r} also names controls.{names.index(control.name)}; "
                "names must be unique (each names its run directory)"
            )
        plans.append(_plan(recipe, control, like, f"controls.{i}"))
    return plans


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
    info = {"role": "control", "control": to_dict(plan)}
    if plan.student is not None:
        if single_dir is None:
            raise UserError(f"{key}: the self_kd control needs the single network's run directory")
        teacher = (Path(single_dir), "single", "single")
        return _distil(recipe, plan.student, key, teacher, out, info, resume=resume, stop_after=stop_after)
    assert plan.ensemble is not None
    extra = {"resume": resume, "stop_after": stop_after}
    return _train_alone(recipe, plan.ensemble, key, out, {**info, "name": plan.name}, **extra)
