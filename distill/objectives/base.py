"""The objective seam: ``objective(model, batch) -> (loss, terms)``.

The loop calls an objective and logs its ``terms`` (detached scalar tensors); it knows nothing of SDDE or
KD. Objectives are registered by name with a typed parameter dataclass, so a recipe's
``objective: {name: sdde, lam: 0.005}`` is checked key by key like the rest of the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from distill import UserError
from distill.data.batches import Batch
from distill.recipe import build

Terms = dict[str, torch.Tensor]


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]: ...


@dataclass(frozen=True)
class ObjectiveEntry:
    params: type  # a frozen dataclass of the objective's options
    make: Callable[[Any], Objective]  # params -> objective
    same_batch_default: bool = True  # whether members share one batch unless the recipe says otherwise


TEACHER_OBJECTIVES: dict[str, ObjectiveEntry] = {}


def register_objective(name: str, params: type, same_batch_default: bool = True) -> Callable:
    def deco(make: Callable[[Any], Objective]) -> Callable[[Any], Objective]:
        TEACHER_OBJECTIVES[name] = ObjectiveEntry(params, make, same_batch_default)
        return make

    return deco


def objective_from_recipe(spec: dict, key: str) -> tuple[Objective, Any]:
    """``{name: ..., **params}`` -> (objective, params); ``key`` is the recipe key, for errors."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in TEACHER_OBJECTIVES:
        choices = ", ".join(sorted(TEACHER_OBJECTIVES))
        raise UserError(f"recipe key '{key}.name': unknown objective {name!r}; expected one of: {choices}")
    entry = TEACHER_OBJECTIVES[name]
    params = build(entry.params, spec, key)
    return entry.make(params), params
