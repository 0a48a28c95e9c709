"""The recipe checked whole, before any data is loaded or any model is built.

:func:`~distill.recipe.load_recipe` checks types, ranges and keys of the typed sections. What it cannot check
are the names that registries resolve later (objectives and their parameters, perturbations and theirs,
architectures, student kinds and their options, datasets, OOD scores, corruptions, severities): each stage
resolved its own names when it started, so a typo in a student or in the report's settings surfaced only after
the teacher had trained, hours later on CIFAR. :func:`check_recipe` resolves every one of them up front with the
same functions the stages use, so the messages are the stages' own (each names its recipe key).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from distill import UserError, unknown
from distill.recipe import DataCfg, EvalCfg, Recipe, StudentCfg, TeacherCfg, apply_overrides, load_recipe


def _check_ensemble(cfg: TeacherCfg, key: str) -> None:
    from distill.models import ensemble_spec
    from distill.objectives import objective_from_recipe

    ensemble_spec(cfg.arch, cfg.members, f"{key}.arch")  # the names and their count, as the teacher stage builds it
    objective_from_recipe(cfg.objective, f"{key}.objective")


def _check_members(cfg: TeacherCfg, key: str) -> None:
    """run.parallel: members: an objective that can read members on other processes, and at least one member per
    launched process (``WORLD_SIZE``), before any data loads. A section of one network has nothing to spread: it
    trains data-parallel under any world size (the loop says so)."""
    from distill.objectives import objective_from_recipe
    from distill.parallel import check_members_mode

    objective, _ = objective_from_recipe(cfg.objective, f"{key}.objective")
    check_members_mode(cfg.members, objective.member_parallel, key, world=None if cfg.members > 1 else 1)


def _check_student(cfg: StudentCfg, key: str) -> None:
    from distill.models import ensemble_spec
    from distill.perturb import make_perturbation
    from distill.students import student_kind

    ensemble_spec(cfg.arch, 1, f"{key}.arch")
    make_perturbation(cfg.perturb.name, cfg.perturb.params, f"{key}.perturb")
    student_kind(cfg)


def _check_dataset(name: str, key: str, extra: tuple[str, ...] = ()) -> None:
    from distill.data.base import LOADERS

    if name not in LOADERS and name not in extra:
        raise unknown(f"recipe key '{key}'", "dataset", name, [*LOADERS, *extra])


def check_recipe(recipe: Recipe) -> Recipe:
    """Resolve every registered name of ``recipe`` and check its parameters; a :class:`UserError` names the key.

    Reads no data and builds no model, so it takes milliseconds; every command calls it before it trains.
    """
    import distill.data
    import distill.models  # noqa: F401  (registers the architectures)
    from distill.report.corruption import check_severities, corruption_names
    from distill.report.ood import check_scores

    _check_dataset(recipe.data.name, "data.name")
    if recipe.data.outlier is not None:
        _check_dataset(recipe.data.outlier, "data.outlier")
    for section, ensemble in (("teacher", recipe.teacher), ("single", recipe.single)):
        if ensemble is not None:
            _check_ensemble(ensemble, section)
            if recipe.run.parallel == "members":
                _check_members(ensemble, section)
            if recipe.run.member_mode == "vmap" and isinstance(ensemble.arch, list) and len(set(ensemble.arch)) > 1:
                raise UserError(
                    f"recipe key 'run.member_mode': vmap needs members of one architecture; {section}.arch lists "
                    f"{', '.join(dict.fromkeys(ensemble.arch))} (use loop or auto)"
                )
    if recipe.student is not None:
        _check_student(recipe.student, "student")
    names = [s.name for s in recipe.students]
    for i, cfg in enumerate(recipe.students):
        if cfg.name in names[:i]:
            raise UserError(
                f"recipe key 'students.{i}.name': {cfg.name!r} also names students.{names.index(cfg.name)}; "
                "names must be unique (each names its run directory)"
            )
        _check_student(cfg, f"students.{i}")
    _check_controls(recipe)
    ev = recipe.evaluate
    for i, ood in enumerate(ev.ood):
        _check_dataset(ood.name, f"evaluate.ood.{i}.name", extra=("heldout",))
    check_scores(ev.ood_scores)
    names = corruption_names(ev.corruptions)
    check_severities(ev.severities)
    if ev.cifar10c is not None:
        _check_cifar10c(recipe.data, ev.cifar10c, names)
    return recipe


def _check_controls(recipe: Recipe) -> None:
    """The controls resolved as ``distill run`` trains them (the student they copy, the sections they need), and
    each plan's sections checked as the recipe's own are."""
    from distill.sections import control_plans

    for plan in control_plans(recipe):
        if plan.ensemble is not None:
            _check_ensemble(plan.ensemble, f"controls[{plan.name}]")


def _check_cifar10c(data: DataCfg, root: str, names: list[str]) -> None:
    from distill.data.benchmarks import cifar10c_folder

    if data.name != "cifar10":
        raise UserError(
            f"recipe key 'evaluate.cifar10c': the released CIFAR-10-C is CIFAR-10's; data.name is {data.name}"
        )
    if data.holdout_classes:
        raise UserError(
            "recipe key 'evaluate.cifar10c': with data.holdout_classes the models predict fewer classes than "
            "CIFAR-10-C's labels; unset one of them"
        )
    try:
        cifar10c_folder(root, names)
    except UserError as err:
        raise UserError(f"recipe key 'evaluate.cifar10c': {err}") from None


def load_checked(path: str | None, overrides: list[str] = ()) -> Recipe:
    """:func:`~distill.recipe.load_recipe`, then :func:`check_recipe`: what every command reads a recipe with."""
    return check_recipe(load_recipe(path, overrides))


def evaluate_section(teacher: Path, overrides: list[str]) -> EvalCfg:
    """The teacher's recipe's ``evaluate`` section with ``--set evaluate.*`` overrides, checked as every recipe
    is. Only ``evaluate`` keys: the rest of the recipe is what the runs were trained with."""
    from distill.checkpoint import read_model_info

    for text in overrides:
        if not text.split("=", 1)[0].strip().startswith("evaluate."):
            raise UserError(f"--set {text}: distill evaluate takes evaluate.* keys only (the runs fix the rest)")
    info = read_model_info(teacher)
    if not isinstance(info.get("recipe"), dict):
        raise UserError(f"--teacher {teacher / 'model.json'}: no recipe; expected a run directory written by distill")
    recipe = apply_overrides(info["recipe"], overrides)
    # The controls are trained already, and resolved against the full recipe's students: a stored recipe holds
    # only those `distill run --students` kept, which need not include the one the controls copy.
    return check_recipe(dataclasses.replace(recipe, controls=[])).evaluate
