"""Whether the finished stages in a pipeline's ``--out`` belong to the recipe given now.

``distill run`` reuses finished stages (and resumes half-finished ones). That is only right when a stage was
trained from the same recipe section: each stage's ``model.json`` holds the recipe it was trained with, and
the parts that decide what the stage trains (``seed``, ``data``, the stage's own section, the precision) are
compared with the new recipe's. Equal: reuse. Different: stop with the first differing key, before anything
trains, unless ``--rerun STAGE`` asks for that stage to be trained again (the old one is moved aside, not
deleted). A control (``controls/<name>``) copies parts of several sections (a student's, the single network's), so
it is compared by what it trains: its resolved :class:`~distill.sections.ControlPlan`, stored in its ``model.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill import UserError
from distill.checkpoint import read_model_info
from distill.recipe import Recipe, build, recipe_from_dict, to_dict
from distill.sections import ControlPlan, control_plans

_MISSING = object()


@dataclass(frozen=True)
class Stage:
    name: str  # as in stages.json and --rerun: teacher, single, student/<name>, control/<name>
    run_dir: Path
    section: str  # the recipe key of its section: teacher, single, students.<i>, controls.<name>
    student: str | None = None  # the student's name
    plan: dict | None = None  # a control's resolved plan (plain data), what it is compared by
    on_single: bool = False  # distilled from the single network (the self_kd control)


def stages_of(recipe: Recipe, out: Path, plans: Sequence[ControlPlan] | None = None) -> list[Stage]:
    """The stages ``recipe`` trains into ``out``; ``plans``: its controls, when resolved before students were left
    out (``distill run --students``); default: resolved from ``recipe``."""
    stages = [Stage("teacher", out / "teacher", "teacher")]
    if recipe.single is not None:
        stages.append(Stage("single", out / "single", "single"))
    for i, s in enumerate(recipe.students):
        stages.append(Stage(f"student/{s.name}", out / "students" / s.name, f"students.{i}", s.name))
    for p in control_plans(recipe) if plans is None else plans:
        plain = _plain(to_dict(p))
        on_single = p.teacher is not None
        stages.append(
            Stage(f"control/{p.name}", out / "controls" / p.name, f"controls.{p.name}", None, plain, on_single)
        )
    return stages


def _plain(tree: Any) -> Any:
    return json.loads(json.dumps(tree))


def _normalised(tree: dict) -> dict:
    """A stored recipe with the defaults of fields added since it was written filled in (when it still
    builds), so that a new optional field does not count as a difference."""
    try:
        return _plain(to_dict(recipe_from_dict(tree)))
    except UserError:
        return tree


def _section(tree: dict, stage: Stage) -> Any:
    if stage.student is None:
        return tree.get(stage.section, _MISSING)
    for s in tree.get("students") or []:
        if isinstance(s, dict) and s.get("name") == stage.student:
            return s
    return _MISSING


def _stored_plan(info: dict) -> Any:
    """A control's stored plan, with the defaults of fields added since it was written filled in."""
    plan = info.get("control", _MISSING)
    if not isinstance(plan, dict):
        return plan
    try:
        return _plain(to_dict(build(ControlPlan, plan, "control")))
    except UserError:
        return plan


def _parts(tree: dict, stage: Stage, section: Any = _MISSING) -> list[tuple[str, Any]]:
    """(key, value) of what decides a stage's weights. ``data.cache_dir`` only says where decoded images are
    kept, and ``run`` is progress bars and logging except the precision. ``section``: the stage's own part when
    it is not read from ``tree`` (a control's plan)."""
    data = dict(tree.get("data") or {})
    data.pop("cache_dir", None)
    if stage.section in ("teacher", "single"):
        data.pop("transfer", None)  # a student's extra images: adding them does not retrain its teacher
    run = tree.get("run") or {}
    return [
        ("seed", tree.get("seed", _MISSING)),
        ("data", data),
        ("run.mixed_precision", run.get("mixed_precision", "no")),
        (stage.section, _section(tree, stage) if section is _MISSING else section),
    ]


def first_difference(old: Any, new: Any, key: str) -> tuple[str, Any, Any] | None:
    """The first dotted key where ``old`` and ``new`` differ, with both values; None when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(new) + [k for k in old if k not in new]:
            found = first_difference(old.get(k, _MISSING), new.get(k, _MISSING), f"{key}.{k}")
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = first_difference(a, b, f"{key}.{i}")
            if found:
                return found
        return None
    return None if old == new else (key, old, new)


def _show(value: Any) -> str:
    if value is _MISSING:
        return "absent"
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _trained_with(run_dir: Path) -> dict | None:
    """The recipe a stage directory was trained with, or None when it holds no model yet."""
    if not (run_dir / "model.json").is_file():
        return None
    recipe = read_model_info(run_dir).get("recipe")
    if not isinstance(recipe, dict):
        raise UserError(f"{run_dir / 'model.json'}: no 'recipe' mapping; cannot tell whether it may be reused")
    return recipe


def _aside(run_dir: Path) -> Path:
    n = 1
    while True:
        target = run_dir.with_name(f"{run_dir.name}.old" + (f"-{n}" if n > 1 else ""))
        if not target.exists():
            run_dir.rename(target)
            return target
        n += 1


def _compare(old: dict, new: dict, stage: Stage, out: Path, remedy: str) -> None:
    """Raise on the first part deciding the stage's weights that differs between the recipe it was trained with
    (``old``) and the one given now (``new``, plain data); ``remedy`` ends the message."""
    old = _normalised(old)
    was_plan = _stored_plan(read_model_info(stage.run_dir)) if stage.plan is not None else _MISSING
    now_plan = stage.plan if stage.plan is not None else _MISSING
    for (key, was), (_, now) in zip(_parts(old, stage, was_plan), _parts(new, stage, now_plan)):
        found = first_difference(was, now, key)
        if found:
            where, a, b = found
            raise UserError(
                f"--out {out}: stage '{stage.name}' was trained with another recipe: '{where}' is {_show(a)} "
                f"there but {_show(b)} now; {remedy}"
            )


def check_stage(recipe: Recipe, stage: Stage, out: Path, remedy: str | None = None) -> None:
    """Raise when ``stage.run_dir`` holds a model trained from a recipe whose parts deciding this stage differ from
    ``recipe``'s (nothing to compare when it holds none). ``remedy``: what the message tells the user to do;
    default: a new ``--out`` or ``--rerun``."""
    old = _trained_with(stage.run_dir)
    if old is not None:
        default = f"use a new --out, or --rerun {stage.name} to train it again"
        _compare(old, _plain(to_dict(recipe)), stage, out, remedy or default)


def prepare_out(
    recipe: Recipe, out: Path, rerun: Sequence[str] = (), plans: Sequence[ControlPlan] | None = None
) -> None:
    """Check every stage already in ``out`` against ``recipe`` (raising on the first that differs), then move
    the stages named in ``rerun`` aside so that they train again. Rerunning the teacher reruns every student,
    which is distilled from it; rerunning the single network reruns the self_kd control. Nothing is moved unless
    every check passes. ``plans``: as :func:`stages_of`."""
    stages = stages_of(recipe, out, plans)
    by_name = {s.name: s for s in stages} | {s.student: s for s in stages if s.student}
    unknown = [r for r in rerun if r not in by_name]
    if unknown:
        raise UserError(
            f"--rerun {unknown[0]}: not a stage of this recipe; expected one of: {', '.join(s.name for s in stages)}"
        )
    chosen = {by_name[r].name for r in rerun}
    if "teacher" in chosen:
        chosen |= {s.name for s in stages if s.student}
    if "single" in chosen:
        chosen |= {s.name for s in stages if s.on_single}
    new = _plain(to_dict(recipe))
    teacher_trains = "teacher" in chosen or not (out / "teacher" / "summary.json").is_file()
    single_trains = "single" in chosen or not (out / "single" / "summary.json").is_file()
    for stage in stages:
        if stage.name in chosen or not stage.run_dir.exists():
            continue
        old = _trained_with(stage.run_dir)
        if old is None:
            continue
        if (stage.student and teacher_trains) or (stage.on_single and single_trains):
            source = "teacher" if stage.student else "single"
            raise UserError(
                f"--out {out}: {stage.run_dir} was distilled from an earlier {source} that is not finished "
                f"here; pass --rerun {stage.name} (or --rerun {source}) or use a new --out"
            )
        _compare(old, new, stage, out, f"use a new --out, or --rerun {stage.name} to train it again")
    for stage in stages:
        if stage.name in chosen and stage.run_dir.exists():
            print(f"[rerun] {stage.name}: the old run is kept as {_aside(stage.run_dir)}")
