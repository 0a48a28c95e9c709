"""Plugins (distill/plugins.py, ``--plugin FILE.py``): a user's file registers architectures; the run directory
records it (path, sha256), later commands import it again from the record, and a missing or changed file is named
in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill import UserError, api, plugins
from distill.cli import main
from distill.models.registry import ARCHS

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = """
import torch
from torch import nn
from distill.models import register_arch


class PluginNet(nn.Module):
    def __init__(self, channels, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@register_arch("test_plugin_net")
def test_plugin_net(channels, num_classes, size):
    return PluginNet(channels, num_classes)
"""
FACTORIES = """
from torch import nn


def flat_net(meta):
    h, w = meta.size
    return nn.Sequential(nn.Flatten(), nn.Linear(meta.channels * h * w, meta.num_classes))


if __name__ == "__main__":
    raise SystemExit("a script's main part must not run when a later command imports its factories")
"""
TRAIN = {"epochs": 1, "batch_size": 64}
RECIPE = {
    "seed": 0,
    "data": {"name": "digits", "limit_train": 200, "augment": False},
    "teacher": {"arch": "test_plugin_net", "members": 2, "train": TRAIN},
    "student": {"arch": "test_plugin_net", "train": TRAIN},
    "evaluate": {"ood": [], "corruptions": [], "cost": {"enabled": False}, "diversity_images": 20, "cam_images": 2},
}


@pytest.fixture
def fresh_registry():
    """What a new process would have: the plugin state and registries as they were before the test."""
    loaded, modules, factories = dict(plugins._LOADED), dict(plugins._MODULES), dict(plugins._FACTORIES)
    archs = dict(ARCHS)

    def forget() -> None:  # as if the command ran in a new process
        plugins._LOADED.clear()
        plugins._LOADED.update(loaded)
        plugins._MODULES.clear()
        plugins._MODULES.update(modules)
        plugins._FACTORIES.clear()
        plugins._FACTORIES.update(factories)
        ARCHS.clear()
        ARCHS.update(archs)

    yield forget
    forget()


@pytest.fixture
def trained(tmp_path, fresh_registry) -> tuple[Path, Path, Path]:
    """A plugin file, the recipe, and a teacher trained through the CLI with ``--plugin``."""
    plugin = tmp_path / "my_models.py"
    plugin.write_text(PLUGIN)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(RECIPE))
    teacher = tmp_path / "t"
    assert main(["teacher", "--plugin", str(plugin), "--recipe", str(recipe), "--out", str(teacher)]) == 0
    return plugin, recipe, teacher


def test_the_run_records_the_plugin(trained):
    plugin, _, teacher = trained
    info = json.loads((teacher / "model.json").read_text())
    [rec] = [p for p in info["plugins"] if p["path"] == str(plugin.resolve())]
    assert rec["sha256"] == plugins.sha256_of(plugin) and rec["archs"] == ["test_plugin_net"]


def test_a_fresh_process_imports_the_recorded_plugin(trained):
    _, _, teacher = trained
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "distill", "export", str(teacher), "--format", "torchscript"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=teacher.parent)
    assert proc.returncode == 0, proc.stderr
    assert (teacher / "model.torchscript.pt").is_file()


def test_student_loads_the_teachers_plugin_without_the_flag(trained, fresh_registry, capsys):
    _, recipe, teacher = trained
    fresh_registry()
    assert "test_plugin_net" not in ARCHS
    assert (
        main(["student", "--teacher", str(teacher), "--recipe", str(recipe), "--out", str(teacher.parent / "s")]) == 0
    )
    assert "test_plugin_net" in ARCHS


def test_a_missing_plugin_is_named(trained, fresh_registry, capsys):
    plugin, _, teacher = trained
    moved = plugin.with_name("elsewhere.py")
    shutil.move(plugin, moved)
    fresh_registry()
    assert main(["evaluate", "--teacher", str(teacher), "--out", str(teacher.parent / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"distill: error: run {teacher} was built with plugin {plugin.resolve()} (arch 'test_plugin_net'), which is "
        "missing: pass --plugin PATH (a file that registers it)"
    )
    fresh_registry()
    argv = ["export", str(teacher), "--format", "torchscript", "--plugin", str(moved)]
    assert main(argv) == 0  # the same architecture from another path


def test_a_changed_plugin_is_refused_unless_passed(trained, fresh_registry, capsys):
    plugin, _, teacher = trained
    plugin.write_text(PLUGIN + "\n# edited\n")
    fresh_registry()
    with pytest.raises(UserError, match=r"has changed since \(sha256 .* then, .* now\): pass --plugin"):
        api.load(teacher)
    fresh_registry()
    api.plugin(plugin)  # the user says: use it as it is now
    with pytest.warns(UserWarning, match="has changed since the run was built"):
        api.load(teacher)


def test_plugin_errors_are_one_line(tmp_path, fresh_registry):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise ValueError('bad\\nthing')\n")
    with pytest.raises(UserError, match=r"^--plugin .*broken.py: importing it failed: ValueError: bad$"):
        plugins.load_plugin(broken)
    with pytest.raises(UserError, match="file not found"):
        plugins.load_plugin(tmp_path / "absent.py")
    clash = tmp_path / "clash.py"
    clash.write_text("from distill.models import register_arch\nregister_arch('small_cnn')(lambda c, k, s: None)\n")
    builtin = ARCHS["small_cnn"]
    with pytest.raises(UserError, match="registers arch 'small_cnn', which is already registered"):
        plugins.load_plugin(clash)
    assert ARCHS["small_cnn"] is builtin  # the built-in is put back


def _import_as_user_script(path: Path):
    spec = importlib.util.spec_from_file_location("user_script_for_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_factories_are_imported_again_from_their_file(tmp_path, fresh_registry):
    script = tmp_path / "my_script.py"
    script.write_text(FACTORIES)
    module = _import_as_user_script(script)
    recipe = {**RECIPE, "teacher": {"members": 2, "train": TRAIN}, "student": None}
    api.train_teacher(recipe, tmp_path / "t", members=module.flat_net)
    fresh_registry()
    assert "flat_net" not in ARCHS
    model, info = api.load(tmp_path / "t")  # imports my_script.py (its main part guarded) for flat_net
    assert model.size == 2 and "flat_net" in ARCHS
    [rec] = [p for p in info["plugins"] if p.get("factories")]
    assert rec["path"] == str(script.resolve()) and rec["factories"]["flat_net"]["factory"] == "flat_net"


def test_a_factory_defined_in_a_function_cannot_be_imported_again(tmp_path, fresh_registry):
    def local_net(meta):
        import torch.nn as nn

        return nn.Sequential(nn.Flatten(), nn.Linear(64, meta.num_classes))

    recipe = {**RECIPE, "teacher": {"members": 1, "train": TRAIN}, "student": None}
    api.train_teacher(recipe, tmp_path / "t", members=local_net)
    fresh_registry()
    with pytest.raises(UserError, match=r"built with a model factory defined inside a function of .*test_plugins.py"):
        api.load(tmp_path / "t")


def test_every_subcommand_takes_plugin():
    from distill.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if a.dest == "analysis"]
        for q in nested[0].choices.values() if nested else [p]:
            assert any(a.dest == "plugins" for a in q._actions), name
