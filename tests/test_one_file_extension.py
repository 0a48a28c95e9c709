"""A new architecture and a new student kind, each defined in one file (this one), without touching the package:
an architecture (``register_arch``), a model kind built on the model contract
(:class:`distill.models.contract.DistillModel`, ``register_kind``) and a student kind (``register_student``) train
through ``distill.api.run`` on digits and appear in the report. And the rest of the package names no concrete model
class: it goes through the contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tokenize
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from distill import UserError, api
from distill.data.base import DatasetMeta
from distill.models import MODEL_KINDS, build_arch, build_model, register_arch, register_kind
from distill.models.contract import DistillModel
from distill.models.registry import ARCHS
from distill.objectives.base import Objective
from distill.objectives.student import KD
from distill.parallel import share_members
from distill.perturb.base import Perturbation
from distill.recipe import StudentCfg
from distill.students import STUDENT_KINDS, StudentKind, register_student

ROOT = Path(__file__).resolve().parents[1]
TOY_ARCH = "test_toy_arch"
TOY_KIND = "test_toy_pair"  # the student kind and its model spec kind
FAST = {"epochs": 1, "batch_size": 64, "optim": {"name": "sgd", "lr": 0.05}}
EVAL = {"ood": [], "corruptions": [], "cost": {"enabled": False}, "diversity_images": 30, "cam_images": 2}
CLASS_NAMES = ("Ensemble", "BatchEnsemble", "Hydra", "DirichletNet", "BELinear", "MemberShare")


class ToyNet(nn.Module):
    """Logits only, ``x (B, C, H, W) -> (B, K)``: the contract's hook gives it Grad-CAM features."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class ToyPair(DistillModel):
    """One toy network per teacher member, run side by side: ``forward(x) -> (logits (M, B, K), features)``."""

    separable_cams = True  # each network computes its own feature map

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    @property
    def size(self) -> int:
        return len(self.nets)

    def member_modules(self) -> list[nn.Module]:
        return list(self.nets)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = [net(x[m] if x.dim() == 5 else x) for m, net in enumerate(self.nets)]
        return torch.stack([z for z, _ in outs]), [a for _, a in outs]


def _toy_arch(channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    return ToyNet(channels, num_classes)


def _toy_model(spec: dict, meta: DatasetMeta) -> DistillModel:
    """``{"kind": TOY_KIND, "arch": ..., "members": M}``."""
    members = range(int(spec["members"]))
    return ToyPair(
        [build_arch(spec["arch"], meta.channels, meta.num_classes, meta.size, meta.mean, meta.std) for _ in members]
    )


def _toy_spec(cfg: StudentCfg, options: Any, teacher_size: int) -> dict:
    return {"kind": TOY_KIND, "arch": cfg.arch, "members": teacher_size}


def _toy_objective(teacher: nn.Module, perturb: Perturbation, cfg: StudentCfg, options: Any) -> Objective:
    return KD(teacher, perturb, cfg.alpha, cfg.temperature)  # one-to-one: as many networks as teacher members


@contextmanager
def toy_registered() -> Iterator[None]:
    """The toy architecture, model kind and student kind registered for the block, then unregistered, so other
    tests see the registries as they were."""
    register_arch(TOY_ARCH)(_toy_arch)
    register_kind(TOY_KIND)(_toy_model)
    register_student(StudentKind(TOY_KIND, _toy_spec, _toy_objective))
    try:
        yield
    finally:
        for registry, name in ((ARCHS, TOY_ARCH), (MODEL_KINDS, TOY_KIND), (STUDENT_KINDS, TOY_KIND)):
            registry.pop(name, None)


@pytest.fixture
def toy() -> Iterator[None]:
    with toy_registered():
        yield


def recipe(**sections: object) -> dict:
    return {"seed": 0, "data": {"name": "digits", "limit_train": 300, "augment": False}, "evaluate": EVAL, **sections}


def test_a_toy_arch_and_student_kind_train_and_report_through_run(tmp_path, toy):
    r = recipe(
        teacher={"arch": TOY_ARCH, "members": 2, "objective": {"name": "de"}, "train": FAST},
        students=[{"name": "pair", "kind": TOY_KIND, "arch": TOY_ARCH, "train": FAST}],
    )
    report = api.run(r, tmp_path)
    model, info = api.load(tmp_path / "students" / "pair")
    assert isinstance(model, ToyPair) and model.size == 2
    assert info["spec"] == {"kind": TOY_KIND, "arch": TOY_ARCH, "members": 2}
    summary = json.loads((tmp_path / "students" / "pair" / "summary.json").read_text())
    assert summary["member_mode"] is None  # the contract's default: the kind has one way to run
    entry = report["models"]["pair"]
    assert entry["kind"] == TOY_KIND and entry["size"] == 2
    assert entry["metrics"]["acc"] == pytest.approx(summary["test"]["acc"], abs=1e-12)
    # the report reads the kind through the contract: separable CAMs, and each member network's last linear layer
    assert entry["diversity"]["cam_similarity"] is not None and entry["diversity"]["cka"] is not None
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["models"]["pair"]["metrics"]["acc"] == entry["metrics"]["acc"]
    assert "pair" in (tmp_path / "report" / "report.md").read_text()


def test_student_kind_is_checked_against_the_registered_kinds(toy):
    r = recipe(students=[{"name": "s", "kind": "test_toy_nope", "arch": TOY_ARCH}])
    with pytest.raises(UserError, match=rf"unknown .*'test_toy_nope'; expected one of: .*{TOY_KIND}"):
        api.load_recipe(r)
    api.load_recipe(recipe(students=[{"name": "s", "kind": TOY_KIND, "arch": TOY_ARCH}]))  # registered: accepted


def test_the_registrations_end_with_the_block():
    with toy_registered():
        assert TOY_ARCH in ARCHS and TOY_KIND in MODEL_KINDS and TOY_KIND in STUDENT_KINDS
    assert TOY_ARCH not in ARCHS and TOY_KIND not in MODEL_KINDS and TOY_KIND not in STUDENT_KINDS
    with pytest.raises(UserError, match="unknown"):
        api.load_recipe(recipe(students=[{"name": "s", "kind": TOY_KIND}]))


KIND_SPECS = {
    "ensemble": {"kind": "ensemble", "archs": ["tiny_cnn"] * 2},
    "dirichlet": {"kind": "dirichlet", "arch": "tiny_cnn"},
    "batchensemble": {"kind": "batchensemble", "arch": "tiny_cnn", "members": 2},
    "hydra": {"kind": "hydra", "arch": "tiny_cnn", "heads": 2},
}


@pytest.mark.parametrize("kind", list(KIND_SPECS))
def test_every_built_kind_keeps_the_contract(digits, kind):
    torch.manual_seed(0)
    model = build_model(KIND_SPECS[kind], digits.meta)
    assert isinstance(model, DistillModel)
    logits, feats = model(digits.train_x[:3].float() / 255)
    assert logits.shape == (model.size, 3, digits.meta.num_classes) and len(feats) == model.size
    assert model.tiles_input == (kind == "batchensemble")
    assert model.separable_cams == (kind in ("ensemble", "dirichlet", "hydra"))
    assert model.separate_members == (kind in ("ensemble", "dirichlet"))
    linears = model.last_linears()
    assert len(linears) == (1 if model.tiles_input else model.size)
    # the default group is what passing model.parameters() gave: the optimizer's state is laid out as before
    if kind in ("ensemble", "dirichlet"):
        groups = torch.optim.SGD(model.param_groups(0.1, 1e-4), lr=0.1, weight_decay=1e-4).state_dict()
        plain = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4).state_dict()
        assert json.dumps(groups["param_groups"]) == json.dumps(plain["param_groups"])
        with pytest.raises(ValueError, match="Ensemble mode 'warp'"):
            model.set_member_mode("warp")
        model.set_member_mode("loop")
        assert model.member_mode_used("cpu") == "loop"
        assert model.compile_members("never") == "eager (compile not used)"
    else:
        model.set_member_mode("vmap")  # one way to run: ignored
        assert model.member_mode_used("cpu") is None
        assert "not applicable" in model.compile_members("always")
        with pytest.raises(UserError, match="not an ensemble of separate members"):
            share_members(model, 0, 2, torch.device("cpu"), "the student")


def _code_names(path: Path) -> set[str]:
    """The concrete model class names that ``path`` uses as Python names (not in strings or comments)."""
    with tokenize.open(path) as f:
        return {t.string for t in tokenize.generate_tokens(f.readline) if t.type == tokenize.NAME} & set(CLASS_NAMES)


def test_no_concrete_model_class_is_named_outside_models_and_students():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("git or the repository is not here")
    pattern = "|".join(CLASS_NAMES)
    cmd = ["git", "grep", "--untracked", "-nwE", pattern, "--", "distill", ":!distill/models", ":!distill/students"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr  # 1: nothing mentions them at all
    hits = proc.stdout.splitlines()
    assert _code_names(ROOT / "distill" / "models" / "ensemble.py") >= {"Ensemble"}  # the check sees code
    files = sorted({h.split(":", 1)[0] for h in hits})
    used = {f: names for f in files if (names := _code_names(ROOT / f))}
    assert used == {}, f"concrete model classes named in code (go through distill.models.contract): {used}"
    # prose may name the methods (a BatchEnsemble student); docstrings cross-reference the contract, not a class
    role = re.compile(rf":(class|meth|attr|func):`[^`]*\b({pattern})\b")
    assert [h for h in hits if role.search(h)] == []
