"""One stage runner for every orchestrator: a finished stage is reused only when its recipe is the one given now."""

from __future__ import annotations

import pytest

from distill import UserError
from distill.analysis.population import train_population

POPULATION = (
    "data: {name: digits, limit_train: 96}\n"
    "teacher: {arch: tiny_cnn, members: 2, train: {epochs: 1, batch_size: 32, optim: {lr: LR}}}\n"
    "run: {progress: false}\n"
    "x-population:\n  seeds: [0]\n  variants:\n    de: {}\n"
)


def test_population_refuses_a_run_trained_from_another_recipe(tmp_path):
    recipe = tmp_path / "pop.yaml"
    recipe.write_text(POPULATION.replace("LR", "0.05"))
    (run,) = train_population(recipe, tmp_path / "out")
    before = (run / "model.safetensors").stat().st_mtime_ns
    recipe.write_text(POPULATION.replace("LR", "0.1"))  # what decides the weights changed: the old run is stale
    with pytest.raises(UserError, match=r"trained with another recipe: 'teacher\.train\.optim\.lr' is 0\.05"):
        train_population(recipe, tmp_path / "out")
    assert (run / "model.safetensors").stat().st_mtime_ns == before  # refused before anything trained


def test_run_info_writes_only_the_fields_a_run_has():
    from distill.loop import RunInfo

    info = RunInfo("teacher", {"kind": "ensemble"}, {"classes": 10}, 3, {"seed": 3}, objective={"name": "de"})
    assert info.to_json() == {
        "role": "teacher",
        "spec": {"kind": "ensemble"},
        "meta": {"classes": 10},
        "seed": 3,
        "recipe": {"seed": 3},
        "objective": {"name": "de"},
    }  # no name, teacher, transfer, ... keys: model.json as before the info was typed
    with pytest.raises(AttributeError):
        info.role = "student"  # frozen: the loop cannot change what the stage recorded
