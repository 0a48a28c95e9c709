"""Which recipe section a stage trains: the student a name picks, and each control resolved into the sections it
trains (:class:`ControlPlan`). Plain recipe look-ups: no data, no model."""

from __future__ import annotations

from dataclasses import dataclass, replace

from distill import UserError
from distill.recipe import ControlCfg, Recipe, StudentCfg, TeacherCfg


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
