"""evaluate.cifar10c: the report sweeps the released CIFAR-10-C arrays instead of corrupting test images itself."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from distill import UserError
from distill.recipe import EvalCfg, recipe_from_dict
from distill.report import evaluate_runs
from distill.resolve import check_recipe
from distill.train import train_ensemble


def _write_cifar10(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py with 200 training and 20 test images, every class in both; returns the test images
    (N, 32, 32, 3) and labels."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, n in (("data_batch_1", 200), ("test_batch", 20)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        batch = {b"labels": [i % 10 for i in range(n)], b"data": data, b"filenames": [b"x.png"] * n}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return data.reshape(20, 3, 32, 32).transpose(0, 2, 3, 1), np.arange(20) % 10


def _recipe(root: Path, cifar10c: str | None = None) -> dict:
    train = {"epochs": 1, "batch_size": 32, "optim": {"lr": 0.05}}
    return {
        "data": {"name": "cifar10", "root": str(root), "val_fraction": 0.3, "augment": False},
        "teacher": {"arch": "tiny_cnn", "members": 2, "objective": {"name": "de"}, "train": train},
        "evaluate": {"corruptions": ["fog"], "cifar10c": cifar10c, "cost": {"enabled": False}},
        "run": {"progress": False},
    }


def test_report_sweeps_the_released_arrays(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    test_x, test_y = _write_cifar10(tmp_path / "cifar", rng)
    c = tmp_path / "CIFAR-10-C"
    c.mkdir()
    # fog severity 2 holds the test images themselves, so its numbers must equal severity 0's; the other
    # severities are noise
    fog = rng.integers(0, 256, (5 * 20, 32, 32, 3), dtype=np.uint8)
    fog[20:40] = test_x
    np.save(c / "fog.npy", fog)
    np.save(c / "labels.npy", np.tile(test_y, 5))
    recipe = check_recipe(recipe_from_dict(_recipe(tmp_path / "cifar", str(c))))
    train_ensemble(recipe, tmp_path / "teacher")
    cfg = EvalCfg(corruptions=["fog"], severities=[1, 2], cifar10c=str(c), cost=recipe.evaluate.cost)
    rep = evaluate_runs(tmp_path / "teacher", [], None, tmp_path / "report", cfg)
    assert "released CIFAR-10-C" in rep["corruptions"]["source"] and rep["corruptions"]["images"] == 20
    fog_t = rep["models"]["teacher"]["corruption"]["corruptions"]["fog"]
    clean = rep["models"]["teacher"]["corruption"]["severity"]["0"]
    assert fog_t["2"] == pytest.approx(clean, abs=1e-12)
    assert fog_t["1"]["nll"] != pytest.approx(clean["nll"], abs=1e-6)
    assert "released CIFAR-10-C" in (tmp_path / "report" / "report.md").read_text()


def test_evaluate_set_adds_cifar10c_to_a_finished_run(tmp_path, monkeypatch, capsys):
    """A run trained without evaluate.cifar10c is reported on the release by `distill evaluate --set`."""
    from distill.cli import main

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    test_x, test_y = _write_cifar10(tmp_path / "cifar", rng)
    c = tmp_path / "CIFAR-10-C"
    c.mkdir()
    np.save(c / "fog.npy", np.concatenate([test_x] * 5))
    np.save(c / "labels.npy", np.tile(test_y, 5))
    train_ensemble(recipe_from_dict(_recipe(tmp_path / "cifar")), tmp_path / "teacher")
    argv = ["evaluate", "--teacher", str(tmp_path / "teacher"), "--out", str(tmp_path / "rep")]
    assert main([*argv, "--set", "teacher.members=3"]) == 2
    assert "evaluate.* keys only" in capsys.readouterr().err
    assert main([*argv, "--set", f"evaluate.cifar10c={tmp_path / 'nowhere'}"]) == 2
    assert "evaluate.cifar10c" in capsys.readouterr().err and not (tmp_path / "rep").exists()
    assert main([*argv, "--set", f"evaluate.cifar10c={c}", "--set", "evaluate.severities=[3]"]) == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "released CIFAR-10-C" in rep["corruptions"]["source"] and rep["corruptions"]["severities"] == [3]
    sev = rep["models"]["teacher"]["corruption"]["severity"]
    assert sev["3"] == pytest.approx(sev["0"], abs=1e-12)  # the release's images are the test images here


def test_cifar10c_key_is_checked_before_training(tmp_path):
    with pytest.raises(UserError, match=r"evaluate.cifar10c.*fog\.npy not found"):
        check_recipe(recipe_from_dict(_recipe(tmp_path, str(tmp_path / "nowhere"))))
    r = _recipe(tmp_path, str(tmp_path))
    r["data"] = {"name": "digits"}
    with pytest.raises(UserError, match="evaluate.cifar10c.*CIFAR-10's; data.name is digits"):
        check_recipe(recipe_from_dict(r))
    r = _recipe(tmp_path, str(tmp_path))
    r["data"]["holdout_classes"] = [9]
    with pytest.raises(UserError, match="evaluate.cifar10c.*holdout_classes"):
        check_recipe(recipe_from_dict(r))
