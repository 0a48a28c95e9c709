"""Plugins: a user's Python file that registers architectures (``@register_arch``), datasets (``@register_dataset``)
or other registry entries, imported on request (``--plugin FILE.py``), never because a recipe said so.

Every plugin imported in a process, and every model factory the Python API registered (:func:`register_factory`),
is recorded: :func:`records` is what :func:`distill.checkpoint.save_model` writes into ``model.json`` as
``plugins`` (path, sha256 and the names each registered). A later process that loads the run (``student``,
``evaluate``, ``export``, ``--resume``) imports them again from that record (:func:`load_recorded`), or says in one
line which file is missing and how to pass it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import nn

from distill import UserError
from distill.data.base import LOADERS
from distill.models.contract import DataMeta
from distill.models.registry import ARCHS
from distill.models.registry import cam_layer as arch_cam_layer
from distill.registry import Entry, Registry

Factory = Callable[[DataMeta], nn.Module]  # a model factory: told channels, num_classes and size

# resolved path -> record {"path", "sha256", "archs", "datasets", "factories"?}; in the order they were loaded
_LOADED: dict[str, dict[str, Any]] = {}
_MODULES: dict[str, Any] = {}  # resolved path -> the imported module
_FACTORIES: Registry[Factory] = Registry("model factory")  # arch name -> the factory registered under it by the API


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _registries() -> dict[str, Registry]:
    """The registries a plugin's additions are recorded for (and checked against overwriting)."""
    return {"archs": ARCHS, "datasets": LOADERS}


def _check_file(path: str | Path, flag: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{flag} {p}: {'not a file' if p.exists() else 'file not found'}; expected a Python file")
    if p.suffix != ".py":
        raise UserError(f"{flag} {p}: expected a Python file ending in .py")
    return p.resolve()


def load_plugin(path: str | Path, flag: str = "--plugin") -> dict[str, Any]:
    """Import the Python file ``path`` (once per process) and return its record: path, sha256 and the architectures
    and datasets it registered. Raises UserError naming the file when it fails to import or when it registers a
    name that is already taken (a built-in architecture, or another plugin's)."""
    p = _check_file(path, flag)
    digest = sha256_of(p)
    loaded = _LOADED.get(str(p))
    if loaded is not None:
        if loaded["sha256"] != digest:
            raise UserError(f"{flag} {p}: changed since this process imported it; start a new process")
        return loaded
    before = {kind: reg.snapshot() for kind, reg in _registries().items()}
    module_name = f"distill_plugin_{p.stem}_{digest[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, p)
    if spec is None or spec.loader is None:
        raise UserError(f"{flag} {p}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling-free reflection look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's code may raise anything: one line naming the file
        _restore(before)
        sys.modules.pop(module_name, None)
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{flag} {p}: importing it failed: {type(err).__name__}: {first}") from None
    record: dict[str, Any] = {"path": str(p), "sha256": digest}
    for kind, reg in _registries().items():
        taken = [n for n in reg if n in before[kind] and reg[n] is not before[kind][n].value]
        if taken:
            _restore(before)
            raise UserError(
                f"{flag} {p}: registers {kind[:-1]} {taken[0]!r}, which is already registered (built in or by another "
                "plugin); choose another name"
            )
        record[kind] = sorted(n for n in reg if n not in before[kind])
    _LOADED[str(p)] = record
    _MODULES[str(p)] = module
    return record


def _restore(before: dict[str, dict[str, Entry]]) -> None:
    for kind, reg in _registries().items():
        reg.restore(before[kind])


def load_plugins(paths: Iterable[str | Path], flag: str = "--plugin") -> list[dict[str, Any]]:
    return [load_plugin(p, flag) for p in paths]


def register_factory(factory: Factory, name: str | None = None, cam_layer: str | None = None) -> str:
    """Register a model factory ``factory(meta) -> nn.Module`` as an architecture; returns its name (``name``, or
    the factory's ``__name__``). ``meta`` has ``channels``, ``num_classes`` and ``size``. The factory's source
    file is recorded with the runs it builds, so a later process can import it again, provided the factory is
    defined at the top level of that file and the file runs nothing else on import (an
    ``if __name__ == "__main__":`` guard)."""
    if not callable(factory):
        raise UserError(f"model factory: expected a callable meta -> nn.Module, got {type(factory).__name__}")
    name = name or getattr(factory, "__name__", None)
    if not name or name == "<lambda>":
        raise UserError("model factory: a lambda has no name to record in model.json; use a def or pass a name")
    known = _FACTORIES.get(name)
    if known is not None and known is not factory and _qualified(known) != _qualified(factory):
        raise UserError(f"model factory {name!r}: another factory, {_qualified(known)}, is registered under that name")
    if known is None and name in ARCHS:
        raise UserError(f"model factory {name!r}: already an architecture's name; pass another name")

    def builder(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
        return factory(DataMeta(channels, num_classes, tuple(size)))

    ARCHS.register(name, builder, cam_layer=cam_layer)
    _FACTORIES.register(name, factory)
    return name


def _qualified(factory: Factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', '?')}"


def _factory_record(name: str, factory: Factory) -> dict[str, Any]:
    qualname = getattr(factory, "__qualname__", name)
    try:
        source = inspect.getsourcefile(factory)
    except TypeError:
        source = None
    record: dict[str, Any] = {"factory": qualname, "cam_layer": arch_cam_layer(name)}
    if source is None or "<" in qualname or not Path(source).is_file():
        record["path"] = None  # defined inside a function or interactively: it cannot be imported again
        return {"archs": [name], "factories": {name: record}, "path": source, "sha256": None}
    p = Path(source).resolve()
    return {"path": str(p), "sha256": sha256_of(p), "archs": [name], "factories": {name: record}}


def used_archs(spec: Any) -> set[str]:
    """Every architecture name a model spec names (``arch`` / ``archs`` at any depth)."""
    found: set[str] = set()
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "arch" and isinstance(value, str):
                found.add(value)
            elif key == "archs" and isinstance(value, list):
                found |= {a for a in value if isinstance(a, str)}
            else:
                found |= used_archs(value)
    elif isinstance(spec, list):
        for value in spec:
            found |= used_archs(value)
    return found


def records(spec: dict | None = None) -> list[dict[str, Any]]:
    """What built the models of this process beyond the built-ins, as written into ``model.json``'s ``plugins``:
    every imported plugin, and every factory registered through the API (with its source file) that ``spec``
    names (all of them without a spec)."""
    out = [dict(r) for r in _LOADED.values()]
    wanted = used_archs(spec) if spec is not None else set(_FACTORIES)
    for name, factory in _FACTORIES.items():
        if name in wanted:
            out.append(_factory_record(name, factory))
    return out


def _used(info: dict[str, Any]) -> set[str]:
    """The names a run uses: ``arch 'x'`` for its spec's architectures, ``dataset 'y'`` for its data."""
    data = (info.get("recipe") or {}).get("data") or {}
    datasets = {data.get("name"), data.get("outlier")} - {None}
    return {f"arch {a!r}" for a in used_archs(info.get("spec"))} | {f"dataset {d!r}" for d in datasets}


def _needed(record: dict[str, Any], used: set[str]) -> list[str]:
    """The names ``record`` registered that the run uses and this process does not have (yet)."""
    missing = [f"arch {a!r}" for a in record.get("archs", []) if a not in ARCHS]
    missing += [f"dataset {d!r}" for d in record.get("datasets", []) if d not in LOADERS]
    return [m for m in missing if m in used]


def load_recorded(info: dict[str, Any], run_dir: str | Path) -> None:
    """Import the plugins ``model.json`` (``info``) of ``run_dir`` records, where the run uses what they registered
    and it is not here yet. A name already registered (``--plugin``, or the API in this process) is taken as it is.
    A needed file that is missing, or whose contents changed since the run was built, is a UserError naming it and
    what it registered. A recorded plugin whose names the run does not use (one that registers diversity terms,
    say) is imported when it is there unchanged, and passed over otherwise."""
    used = _used(info)
    for rec in info.get("plugins") or []:
        if not isinstance(rec, dict):
            raise UserError(f"{Path(run_dir) / 'model.json'}: field 'plugins' is malformed (expected objects)")
        path, digest = rec.get("path"), rec.get("sha256")
        needed = _needed(rec, used)
        present = bool(path) and digest is not None and Path(path).is_file()
        if not needed:
            loaded = _LOADED.get(str(path))
            if loaded is not None and digest and loaded["sha256"] != digest:
                warnings.warn(f"run {run_dir}: plugin {path} has changed since the run was built", stacklevel=2)
            elif loaded is None and present and not rec.get("factories") and sha256_of(Path(path)) == digest:
                load_plugin(path, flag=f"run {run_dir}: plugin")
            continue
        what = ", ".join(needed)
        if not present:
            where = f"plugin {path}" if path else "a model factory defined interactively"
            if rec.get("factories") and path and digest is None:
                where = f"a model factory defined inside a function of {path}"
            raise UserError(
                f"run {run_dir} was built with {where} ({what}), which is missing: pass --plugin PATH (a file "
                "that registers it)"
            )
        now = sha256_of(Path(path))
        if now != digest:
            raise UserError(
                f"run {run_dir} was built with plugin {path} ({what}), which has changed since (sha256 "
                f"{digest[:12]}... then, {now[:12]}... now): pass --plugin {path} to use it as it is now"
            )
        if rec.get("factories"):
            _load_factories(Path(path), rec["factories"], run_dir)
        else:
            load_plugin(path, flag=f"run {run_dir}: plugin")


def _load_factories(path: Path, factories: dict[str, dict], run_dir: str | Path) -> None:
    """Import the file that defined API factories and register them under their recorded names."""
    load_plugin(path, flag=f"run {run_dir}: factory file")
    module = _MODULES[str(path.resolve())]
    for name, rec in factories.items():
        if name in ARCHS:
            continue
        factory: Any = module
        for part in str(rec.get("factory", name)).split("."):
            factory = getattr(factory, part, None)
        if factory is None:
            raise UserError(f"run {run_dir}: {path} no longer defines the model factory {rec.get('factory')!r}")
        register_factory(factory, name, rec.get("cam_layer"))


def load_for_runs(run_dirs: Iterable[str | Path | None]) -> None:
    """:func:`load_recorded` for each run directory that has a ``model.json`` (others are left to the command's
    own checks)."""
    import json

    for d in run_dirs:
        if d is None:
            continue
        f = Path(d) / "model.json"
        if not f.is_file():
            continue
        try:
            info = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # the command's own read of model.json says what is wrong with it
        if isinstance(info, dict):
            load_recorded(info, d)
