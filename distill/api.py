"""The Python API: the command line's stages as typed functions, on the same recipes, checks and run directories.

Each function is what the matching ``distill`` subcommand runs (the CLI calls these, or the same functions in
:mod:`distill.train`, :mod:`distill.report` and :mod:`distill.export` that these call), so a run directory written
from Python is read by the CLI and the other way round. What the API adds is Python objects where the CLI takes
names: a recipe as a dict, and a model factory ``Callable[[DataMeta], nn.Module]`` where a recipe names an
architecture, so any ``nn.Module`` returning ``logits (B, K)`` can be a teacher member or a student
(:mod:`distill.models.contract`).

Every input is checked before any data loads where it can be: a bad recipe key, an unknown name or a missing file
is a one-line :class:`~distill.UserError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from distill import _API, UserError, unknown
from distill.checkpoint import (
    atomic_write_text,
    load_model,
    load_state_strict,
    read_state_dict,
    save_model,
)
from distill.data import Splits, load_splits
from distill.models import ensemble_of
from distill.models.contract import DataMeta, DistillModel  # DataMeta re-exported: what a model factory is given
from distill.models.registry import ARCHS, wrap_arch
from distill.plugins import Factory, load_for_runs, load_plugin, register_factory, sha256_of
from distill.recipe import Recipe, apply_overrides, to_dict
from distill.recipe import load_recipe as _load_recipe_file
from distill.resolve import check_recipe

RecipeLike = str | Path | dict | Recipe | None  # a YAML file, a recipe mapping, a built Recipe, or the defaults
Members = Factory | str | Sequence[Factory | str]  # one factory / architecture name for all members, or one each


# --- recipes -------------------------------------------------------------------------------------------------


def _recipe(recipe: RecipeLike, overrides: Sequence[str] = ()) -> Recipe:
    """The recipe with ``--set``-style overrides applied; types, keys and ranges checked, names not yet."""
    if isinstance(recipe, Recipe):
        return apply_overrides(to_dict(recipe), list(overrides)) if overrides else recipe
    if isinstance(recipe, dict):
        return apply_overrides(recipe, list(overrides))
    if recipe is None or isinstance(recipe, (str, Path)):
        return _load_recipe_file(recipe, list(overrides))
    raise UserError(f"recipe: expected a YAML path, a mapping or a Recipe, got {type(recipe).__name__}")


def load_recipe(recipe: RecipeLike = None, overrides: Sequence[str] = ()) -> Recipe:
    """A checked :class:`~distill.recipe.Recipe` from a YAML path, a mapping (the YAML's structure) or a Recipe,
    with ``overrides`` such as ``"teacher.train.epochs=3"`` (values read as YAML). Every registered name is looked
    up, as the CLI does before it trains (:func:`distill.resolve.check_recipe`)."""
    return check_recipe(_recipe(recipe, overrides))


def splits(recipe: RecipeLike, overrides: Sequence[str] = ()) -> Splits:
    """The train / val / test splits the recipe's ``data`` section describes, as every stage and the report cut
    them: ``train_x (N, C, H, W)`` uint8, ``train_y (N,)`` int64, likewise ``val_*`` and ``test_*``, and ``meta``
    (classes, channels, size, mean, std). Train your own models on ``train_x`` only: the test split is the
    report's."""
    return load_splits(_recipe(recipe, overrides).data)


def _arch_names(members: Members, cam_layer: str | None, what: str) -> list[str]:
    """Architecture names for ``members`` (factories are registered, names must be registered already)."""
    items = [members] if callable(members) or isinstance(members, str) else list(members)
    if not items:
        raise UserError(f"{what}: expected a model factory or an architecture name, got an empty list")
    names = []
    for item in items:
        if isinstance(item, str):
            if item not in ARCHS:
                raise unknown(what, "architecture", item, ARCHS)
            names.append(item)
        else:
            names.append(register_factory(item, cam_layer=cam_layer))
    return names


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """The CLI's one-writer lock on ``out`` (:class:`~distill.runlock.RunLock`), unless this process holds it
    already (the CLI took it before calling here)."""
    from distill.runlock import LOCK_NAME, RunLock

    try:
        mine = json.loads((Path(out) / LOCK_NAME).read_text()).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        mine = False
    if mine or os.environ.get("RANK", "0") != "0":
        yield
        return
    with RunLock(Path(out)):
        yield


# --- stages ----------------------------------------------------------------------------------------------------


def train_teacher(
    recipe: RecipeLike,
    out: str | Path,
    *,
    members: Members | None = None,
    cam_layer: str | None = None,
    overrides: Sequence[str] = (),
    section: str = "teacher",
    resume: bool = False,
) -> dict[str, Any]:
    """Train the recipe's ``teacher`` (or ``single``) section into the run directory ``out``, as ``distill teacher``
    does; returns its summary (``summary["test"]``: test ``acc``, ``nll``, ``member_acc``, ...).

    ``members``: a model factory ``meta -> nn.Module`` (``meta.channels``, ``meta.num_classes``, ``meta.size``)
    or a registered architecture name, for every member (the recipe's ``members`` says how many), or a list of
    them, one per member. The module maps ``x (B, C, H, W)``, standardised with the training split's mean and std,
    to ``logits (B, K)`` (or ``(logits, features (B, D, h, w))``). ``cam_layer``: the layer whose output is the
    Grad-CAM feature map of a factory's module (default: its last ``nn.Conv2d``)."""
    rec = _recipe(recipe, overrides)
    if members is not None:
        cfg = getattr(rec, section, None)
        if cfg is None:
            raise UserError(f"recipe: no '{section}' section; give one (at least {{{section}: {{members: 3}}}})")
        names = _arch_names(members, cam_layer, "members")
        one = callable(members) or isinstance(members, str)
        arch = names[0] if one else names
        cfg = dataclasses.replace(cfg, arch=arch, members=cfg.members if one else len(names))
        rec = dataclasses.replace(rec, **{section: cfg})
    check_recipe(rec)
    from distill.train import train_ensemble

    with _locked(Path(out)):
        return train_ensemble(rec, Path(out), section=section, resume=resume)


def distill_student(
    teacher: str | Path,
    out: str | Path,
    *,
    recipe: RecipeLike,
    student: Factory | str | None = None,
    name: str | None = None,
    cam_layer: str | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
) -> dict[str, Any]:
    """Distil the teacher run ``teacher`` (trained or imported) into the recipe's ``student`` section (or the
    ``students`` entry called ``name``), written to ``out``, as ``distill student`` does; returns its summary.

    ``student``: a model factory or a registered architecture name replacing the section's ``arch`` (its
    ``kind`` stays; a factory's module fits the ``single`` kind, one network)."""
    load_for_runs([teacher])  # a student may reuse the architecture a teacher's plugin registered
    rec = _recipe(recipe, overrides)
    if student is not None:
        from distill.sections import student_config

        cfg = student_config(rec, name)
        (arch,) = _arch_names(student, cam_layer, "student")
        new = dataclasses.replace(cfg, arch=arch)
        if rec.student is cfg:
            rec = dataclasses.replace(rec, student=new)
        else:
            rec = dataclasses.replace(rec, students=[new if s is cfg else s for s in rec.students])
    check_recipe(rec)
    from distill.train import train_student

    with _locked(Path(out)):
        return train_student(rec, Path(teacher), Path(out), name=name, resume=resume)


def run(
    recipe: RecipeLike,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    rerun: Sequence[str] = (),
    students: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The whole pipeline (``distill run``): teacher, single network, students, then the report in ``out/report``;
    finished stages in ``out`` from the same recipe are reused. Returns the report."""
    from distill.pipeline import run_pipeline

    load_for_runs([Path(out) / "teacher"])
    rec = check_recipe(load_recipe(recipe, overrides))
    with _locked(Path(out)):
        return run_pipeline(rec, Path(out), rerun=list(rerun), only_students=students)


def evaluate(
    teacher: str | Path,
    out: str | Path,
    *,
    students: Sequence[str | Path] = (),
    single: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """The gap report of finished runs (``distill evaluate``): ``out/report.json``, ``report.md`` and figures;
    returns the report. ``overrides``: ``evaluate.*`` keys only (the runs fix the rest)."""
    from distill.report import evaluate_runs
    from distill.resolve import evaluate_section

    load_for_runs([teacher, single, *students])
    cfg = evaluate_section(Path(teacher), list(overrides)) if overrides else None
    with _locked(Path(out)):
        return evaluate_runs(
            Path(teacher), [Path(s) for s in students], Path(single) if single else None, Path(out), cfg
        )


def export_run(run: str | Path, format: str = "onnx", out: str | Path | None = None) -> tuple[Path, float]:
    """Write the run's model as ``format`` (``onnx``, ``torchscript`` or ``exported``) and check it against the
    checkpoint, as ``distill export`` does; returns the file and the max abs difference found."""
    from distill.export import export as _export

    load_for_runs([run])
    return _export(run, format, out)


def load(run: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A run's selected model and its ``model.json``: ``model(x (B, C, H, W) in [0, 1])`` returns ``(logits (M, B,
    K), features)``, M = 1 for one network; the prediction is the mean of the members' softmax."""
    return load_model(run)


def summary(run: str | Path) -> dict[str, Any]:
    """A finished run's ``summary.json``: ``summary["test"]`` holds its test ``acc``, ``nll``, ``member_acc``, ..."""
    from distill.runs import read_summary

    found = read_summary(Path(run))
    if found is None:
        raise UserError(f"{run}: no summary.json here; expected a finished run directory")
    return found


def plugin(path: str | Path) -> dict[str, Any]:
    """Import a plugin file (``--plugin``): what it registers can then be named in recipes. Returns its record."""
    return load_plugin(path)


# --- existing ensembles as teachers -------------------------------------------------------------------------


def _normalisation(
    meta_mean: tuple[float, ...], meta_std: tuple[float, ...], channels: int, mean: Any, std: Any, from_data: bool
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The members' input standardisation: the user's (one value, or one per channel) or the data's own."""
    if from_data:
        if mean is not None or std is not None:
            raise UserError("--normalization-from-data: give it or --mean/--std, not both")
        return tuple(meta_mean), tuple(meta_std)
    if mean is None or std is None:
        raise UserError(
            "--mean/--std: give the input normalisation the checkpoints were trained with (x' = (x - mean) / std on "
            "[0, 1] pixels; --mean 0 --std 1 for none), or --normalization-from-data for the training split's own"
        )
    out = []
    for flag, values in (("--mean", mean), ("--std", std)):
        vals = [float(v) for v in ([values] if isinstance(values, (int, float)) else values)]
        if len(vals) == 1:
            vals = vals * channels
        if len(vals) != channels or not all(math.isfinite(v) for v in vals):
            raise UserError(f"{flag} {values}: expected 1 or {channels} finite numbers (one per channel)")
        if flag == "--std" and min(vals) <= 0:
            raise UserError(f"--std {values}: expected numbers > 0")
        out.append(tuple(vals))
    return out[0], out[1]


def import_teacher(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    *,
    arch: Members,
    recipe: RecipeLike,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    normalization_from_data: bool = False,
    cam_layer: str | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Make a teacher run directory ``out`` from N trained networks' state dicts, without training
    (``distill import-teacher``); returns its summary, with the test metrics computed as training computes them.

    ``checkpoints``: ``.safetensors``, or ``.pt`` / ``.pth`` state dicts read with ``torch.load(weights_only=True)``.
    ``arch``: the architecture of every member (a registered name or a model factory), or one per checkpoint.
    ``mean`` / ``std``: the standardisation the networks were trained with, on [0, 1] pixels (one value, or one per
    channel); or ``normalization_from_data=True`` for the training split's own. ``recipe``: its ``data`` section
    says which data the teacher belongs to (students and the report check it), its ``evaluate`` section the
    report's settings.

    ``out/model.json`` records the spec (``normalization`` included), the data's meta, the recipe without a
    ``teacher`` section (nothing was trained from one) and ``imported_from``: each file's path, sha256, architecture
    and how it was read. Keys that do not match the architecture: a UserError naming the file and the first
    mismatching key."""
    files = [Path(c) for c in checkpoints]
    if not files:
        raise UserError("--checkpoint: give at least one checkpoint file")
    names = _names_per_checkpoint(arch, cam_layer, len(files))
    states = [read_state_dict(f) for f in files]  # every file readable before any data loads
    rec = dataclasses.replace(_recipe(recipe, overrides), teacher=None)
    check_recipe(rec)
    out = Path(out)
    if (out / "model.json").exists():
        raise UserError(f"--out {out}: holds a run already (model.json); choose a new directory")
    data = load_splits(rec.data)
    meta = data.meta
    norm_mean, norm_std = _normalisation(meta.mean, meta.std, meta.channels, mean, std, normalization_from_data)
    model = _imported_ensemble(files, names, [state for state, _ in states], meta, norm_mean, norm_std)
    spec = {"kind": "ensemble", "archs": names, "normalization": {"mean": list(norm_mean), "std": list(norm_std)}}
    info = {
        "role": "teacher",
        "spec": spec,
        "meta": meta.to_json(),
        "seed": rec.seed,
        "recipe": to_dict(rec),
        "imported_from": [
            {"path": str(f.resolve()), "sha256": sha256_of(f), "arch": a, "read": how}
            for f, a, (_, how) in zip(files, names, states)
        ],
    }
    with _locked(out):
        save_model(out, model, info)
        return _imported_summary(out, data)


def _names_per_checkpoint(arch: Members, cam_layer: str | None, n_files: int) -> list[str]:
    """``--arch``: one architecture for every checkpoint, or one per checkpoint in order."""
    names = _arch_names(arch, cam_layer, "--arch")
    if len(names) == 1:
        names = names * n_files
    if len(names) != n_files:
        raise UserError(f"--arch: {len(names)} architectures for {n_files} checkpoints; give one or {n_files}")
    return names


def _imported_ensemble(
    files: list[Path],
    names: list[str],
    states: list[dict[str, Tensor]],
    meta: DataMeta,
    norm_mean: tuple[float, ...],
    norm_std: tuple[float, ...],
) -> DistillModel:
    """The members built from their architectures, each state dict loaded strictly (a mismatch names the file)."""
    members = []
    for f, a, state in zip(files, names, states):
        net = ARCHS[a](meta.channels, meta.num_classes, tuple(meta.size))
        load_state_strict(net, state, f, f"arch '{a}'")
        members.append(wrap_arch(a, net, meta.channels, meta.num_classes, meta.size, norm_mean, norm_std))
    return ensemble_of(members).eval()


def _imported_summary(out: Path, data: Splits) -> dict[str, Any]:
    """summary.json of an imported teacher: the test metrics of the model as reloaded from ``out`` (what every
    later command will load), computed by the function that computes a trained teacher's."""
    from distill.train import test_metrics

    model, _ = load_model(out)
    summary = {"imported": True, "test": test_metrics(model, data, cam=True)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


__all__ = ["Factory", *_API]  # the names `distill` re-exports, listed once in distill/__init__.py
