"""The one registry: names a recipe, a flag or a plugin gives, mapped to what they build.

Every registry of the package (datasets, architectures, model kinds, objectives, diversity terms, perturbations,
student kinds, readouts, corruptions, OOD scores, API model factories) is a :class:`Registry`. An entry holds the
registered value (a builder, a function, a readout), an optional frozen params dataclass, and the metadata its
kind needs (a dataset's ``hint``, an architecture's ``cam_layer``, an objective's ``resolve``).

* A lookup of a name that is not there raises the one "unknown" message (:func:`distill.unknown`), naming the
  recipe key or flag and every registered name.
* A name's parameters are checked in one place, its params dataclass: :meth:`Registry.build_params` builds it with
  :func:`distill.recipe.build`, which checks every key, type and range (``distill.recipe.ranged`` fields).
* Registering a name that is already registered replaces its entry (as assigning to a dict did): a re-imported
  module re-registers its names, and a test may register a probe under a name for its duration. Refusing to
  overwrite another module's name is the caller's rule where it matters (plugins, :mod:`distill.plugins`).
* A registry reads like a ``Mapping`` of name -> value (``in``, ``[name]``, ``keys()``, ``items()``, ``len``,
  iteration in registration order), and writes like one (``reg[name] = value`` registers with no metadata,
  ``del reg[name]`` unregisters), so code and tests that treated the former dicts as dicts keep working.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distill import UserError, unknown
from distill.recipe import build

T = TypeVar("T")
_NO_VALUE: Any = object()


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: its value, its params dataclass (None: it takes no options) and its metadata."""

    name: str
    value: T
    params: type | None = None
    hint: str = ""  # a dataset's: how to get its files, said when they are missing
    cam_layer: str | None = None  # an architecture's: the layer a logits-only network's Grad-CAM reads
    # an objective's: (params, recipe key) -> params with nested specs checked and completed (DE's diversity terms)
    resolve: Callable[[Any, str], Any] | None = None


class Registry(MutableMapping[str, T], Generic[T]):
    """Names -> :class:`Entry`; ``what`` names the kind of thing in the "unknown" message ("architecture")."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        value: T = _NO_VALUE,
        *,
        params: type | None = None,
        hint: str = "",
        cam_layer: str | None = None,
        resolve: Callable[[Any, str], Any] | None = None,
    ) -> Any:
        """``reg.register(name, value, ...)`` registers ``value`` and returns it; ``@reg.register(name, ...)``
        registers the decorated function or class and returns it unchanged. A name registered before is
        replaced."""

        def add(v: T) -> T:
            self._entries[name] = Entry(name, v, params, hint, cam_layer, resolve)
            return v

        return add if value is _NO_VALUE else add(value)

    def unregister(self, name: str) -> Entry[T] | None:
        """Remove ``name``; returns its entry, or None when it was not registered."""
        return self._entries.pop(name, None)

    def entry(self, name: Any, where: str) -> Entry[T]:
        """The entry of ``name``; a UserError ``where: unknown <what> 'name'; expected one of: ...`` if none."""
        found = self._entries.get(name) if isinstance(name, str) else None
        if found is None:
            raise unknown(where, self.what, name, self._entries)
        return found

    def lookup(self, name: Any, where: str) -> T:
        """The value of ``name``, or the "unknown" UserError naming ``where`` (a recipe key or a flag)."""
        return self.entry(name, where).value

    def get_entry(self, name: str) -> Entry[T] | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def build_params(self, name: str, raw: dict[str, Any] | None, where: str) -> Any:
        """``raw`` (a recipe's plain options of ``name``) built into ``name``'s params dataclass, every key, type and
        range checked by :func:`distill.recipe.build` (errors name ``where.<field>``); None for an entry without
        params, which must then be given no options."""
        entry = self.entry(name, where)
        if entry.params is None:
            if raw:
                raise UserError(f"{where}: the '{name}' {self.what or 'entry'} takes no options, got {raw}")
            return None
        params = build(entry.params, raw or {}, where)
        return params if entry.resolve is None else entry.resolve(params, where)

    def snapshot(self) -> dict[str, Entry[T]]:
        """A copy of every entry, metadata included, for :meth:`restore`."""
        return dict(self._entries)

    def restore(self, snapshot: dict[str, Entry[T]]) -> None:
        self._entries = dict(snapshot)

    # the Mapping API: name -> value

    def __getitem__(self, name: str) -> T:
        return self._entries[name].value

    def __setitem__(self, name: str, value: T) -> None:
        self.register(name, value)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"


def discover(package: str, path: list[str], skip: tuple[str, ...] = ()) -> None:
    """Import every module of ``package`` (its ``__path__``), in name order, except private ones (``_x``) and
    ``skip``: the one way the package finds its registered things. A new architecture, model kind, student kind,
    perturbation, diversity term or dataset is one file in its folder, registering itself on import; no list of
    modules to extend anywhere."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
