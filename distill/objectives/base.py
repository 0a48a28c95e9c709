"""The objective seam: ``objective(model, batch) -> (loss, terms)``.

The loop calls an objective and logs its ``terms`` (detached scalar tensors); it knows nothing of SDDE or
KD. Objectives are registered by name with a typed parameter dataclass, so a recipe's
``objective: {name: sdde, lam: 0.005}`` is checked key by key like the rest of the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from distill.data.batches import Batch
from distill.models.ensemble import CompileWhen
from distill.registry import Registry

Terms = dict[str, torch.Tensor]


class Objective(Protocol):
    """What the loop may rely on. The declarations are the whole of what the loop reads from an
    objective besides calling it; :class:`ObjectiveBase` gives the common defaults."""

    per_member_batches: bool  # each member gets its own batch (independent data orders), views = members
    needs_outliers: bool  # every batch must carry an outlier batch (outlier exposure); the data must have one
    uses_transfer: bool  # it learns from batches' transfer images (data.transfer: students); the loop refuses them else
    compile_when: CompileWhen  # which torch.compile setting its backward allows (see compile_ensemble)
    member_parallel: bool  # run.parallel: members: it reads other members only through a gather (DE)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]: ...

    # move the modules it holds (a student's frozen teacher) to the loop's device and the model's memory format
    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> Objective: ...

    def set_progress(self, fraction: float) -> None: ...  # training progress in [0, 1], for schedules inside it

    # run.parallel: members: spread the frozen teacher it holds over the processes; False: it holds none, or one
    # network, which stays whole on every process
    def share_teacher(self, rank: int, world: int, device: torch.device, what: str) -> bool: ...


class ObjectiveBase:
    """The defaults of :class:`Objective`: one batch for all members, no outliers, compiled freely, nothing
    to move and no schedule. An objective that differs overrides the attribute; an objective that needs
    double backprop through the members must say so in ``compile_when`` (a wrong "always" would compile a
    graph whose second backward is then unsupported or silently different)."""

    per_member_batches: bool = False
    needs_outliers: bool = False
    uses_transfer: bool = False
    compile_when: CompileWhen = "always"
    member_parallel: bool = False  # run.parallel: members: it reads other members only through a gather (DE)

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> ObjectiveBase:
        return self

    def set_progress(self, fraction: float) -> None:
        return None

    def share_teacher(self, rank: int, world: int, device: torch.device, what: str) -> bool:
        return False


# name -> make(params) -> objective; each with its params dataclass, and optionally its resolve(params, recipe key)
# -> params with nested specs checked and completed (DE's diversity terms)
TEACHER_OBJECTIVES: Registry[Callable[[Any], Objective]] = Registry("objective")


def register_objective(name: str, params: type, resolve: Callable[[Any, str], Any] | None = None) -> Callable:
    return TEACHER_OBJECTIVES.register(name, params=params, resolve=resolve)


def objective_from_recipe(spec: dict, key: str) -> tuple[Objective, Any]:
    """``{name: ..., **params}`` -> (objective, resolved params); ``key`` is the recipe key, for errors.

    ``name`` defaults to ``de``, so ``{diversity: [{name: cam, lam: 0.005}, {name: ncl, lam: 0.1}]}`` is a
    deep ensemble with those two terms."""
    spec = dict(spec)
    name = spec.pop("name", "de")
    make = TEACHER_OBJECTIVES.lookup(name, f"recipe key '{key}.name'")
    params = TEACHER_OBJECTIVES.build_params(name, spec, key)
    return make(params), params
