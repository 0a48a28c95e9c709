"""A trained run directory as the evaluation layer reads it, for the report and the analyses alike: its selected
model, ``model.json``, ``summary.json`` and the data it was trained on, and that data's splits, loaded once per
data section (a population of runs shares one dataset)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill import UserError
from distill.checkpoint import load_model
from distill.data import Splits, load_splits
from distill.recipe import DataCfg, build


@dataclass
class RunDir:
    """One trained run directory, loaded (:func:`load_run`); a report's set of them is
    :class:`distill.report.runs.Runs`."""

    key: str  # the model's name in a report: "teacher", "single", the student's name; else the folder's name
    role: str  # "teacher" | "single" | "student" (model.json's role unless the caller says)
    path: Path
    model: nn.Module  # eval mode, on the device it was loaded to
    info: dict[str, Any]  # model.json
    summary: dict[str, Any] | None  # summary.json (training history), when present

    @property
    def size(self) -> int:
        return int(self.model.size)

    @property
    def kind(self) -> str:
        return str(self.info.get("spec", {}).get("kind", "ensemble"))

    @property
    def data(self) -> DataCfg:
        """The ``data`` section of the run's recipe: what its splits are rebuilt from."""
        return data_section(self.info, self.path)


def recipe_data(info: dict[str, Any], path: Path) -> dict[str, Any]:
    """The raw ``recipe.data`` of a run's ``model.json``; a UserError when the file has none."""
    try:
        return dict(info["recipe"]["data"])
    except (KeyError, TypeError):
        raise UserError(f"{path / 'model.json'}: no recipe.data; expected a run directory written by distill") from None


def data_section(info: dict[str, Any], path: Path) -> DataCfg:
    """The run's ``recipe.data`` as a checked :class:`~distill.recipe.DataCfg`."""
    return build(DataCfg, recipe_data(info, path), "data")


def read_summary(path: Path) -> dict[str, Any] | None:
    f = Path(path) / "summary.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{f}: not valid JSON ({err.msg} at line {err.lineno})") from None


def load_run(
    path: str | Path, device: torch.device | str = "cpu", key: str | None = None, role: str | None = None
) -> RunDir:
    """The run at ``path``: its selected weights (safetensors, no pickled code), ``model.json`` and summary."""
    path = Path(path)
    model, info = load_model(path)
    role = role or str(info.get("role", "run"))
    return RunDir(key or path.name, role, path, model.to(device), info, read_summary(path))


_SPLITS: dict[str, Splits] = {}


def run_splits(data: DataCfg) -> Splits:
    """:func:`distill.data.load_splits`, kept per data section for the life of the process."""
    k = json.dumps(data.__dict__, sort_keys=True, default=str)
    if k not in _SPLITS:
        _SPLITS[k] = load_splits(data)
    return _SPLITS[k]
