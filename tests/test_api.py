"""The Python API (distill/api.py): the CLI's stages as functions on the same run directories, with model factories
where a recipe names an architecture, so a logits-only nn.Module trains as members and as a student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from distill import UserError, api
from distill.cli import main
from distill.models import register_arch
from distill.models.contract import DataMeta

FAST = {"epochs": 1, "batch_size": 64, "optim": {"name": "sgd", "lr": 0.05}}
EVAL = {"ood": [], "corruptions": [], "cost": {"enabled": False}, "diversity_images": 30, "cam_images": 2}


def recipe(**sections: object) -> dict:
    return {"seed": 0, "data": {"name": "digits", "limit_train": 300, "augment": False}, "evaluate": EVAL, **sections}


class UserNet(nn.Module):
    """Logits only: no (logits, features) tuple, no registry-specific attribute."""

    def __init__(self, meta: DataMeta, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(meta.channels, width, 3, padding=1)
        self.fc = nn.Linear(width, meta.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def user_net(meta: DataMeta) -> nn.Module:
    return UserNet(meta)


def narrow_net(meta: DataMeta) -> nn.Module:
    return UserNet(meta, width=4)


def user_mlp(meta: DataMeta) -> nn.Module:
    h, w = meta.size
    return nn.Sequential(nn.Flatten(), nn.Linear(meta.channels * h * w, meta.num_classes))


register_arch("test_api_usernet")(lambda c, k, s: UserNet(DataMeta(c, k, s)))


def _own_member_acc(run: Path) -> list[float]:
    """Each member's test accuracy from the loaded run, by a loop written here."""
    model, info = api.load(run)
    data = api.splits(info["recipe"])
    with torch.no_grad():
        logits, _ = model(data.test_x.float() / 255)  # (M, N, K); normalisation is inside the model
    return [(z.argmax(-1) == data.test_y).double().mean().item() for z in logits]


def test_logits_only_module_trains_as_members_and_student_through_run(tmp_path):
    r = recipe(
        teacher={"arch": "test_api_usernet", "members": 2, "objective": {"name": "sdde"}, "train": FAST},
        students=[{"name": "kd", "arch": "test_api_usernet", "train": FAST}],
    )
    report = api.run(r, tmp_path)
    assert set(report["models"]) >= {"teacher", "kd"}
    summary = json.loads((tmp_path / "teacher" / "summary.json").read_text())["test"]
    assert summary["member_acc"] == pytest.approx(_own_member_acc(tmp_path / "teacher"), abs=1e-12)
    assert report["models"]["teacher"]["metrics"]["acc"] == pytest.approx(summary["acc"], abs=1e-12)
    assert "cam_similarity" in summary  # the hooked conv gives SDDE and the measure their feature maps
    student = json.loads((tmp_path / "students" / "kd" / "summary.json").read_text())["test"]
    assert student["member_acc"] == pytest.approx(_own_member_acc(tmp_path / "students" / "kd"), abs=1e-12)


def test_factories_as_members_and_student(tmp_path):
    r = recipe(teacher={"members": 2, "train": FAST}, student={"train": FAST})
    summary = api.train_teacher(r, tmp_path / "t", members=[user_net, narrow_net])
    info = json.loads((tmp_path / "t" / "model.json").read_text())
    assert info["spec"]["archs"] == ["user_net", "narrow_net"]
    weights = load_file(str(tmp_path / "t" / "model.safetensors"))
    assert weights["members.1.net.module.conv.weight"].shape == (4, 1, 3, 3)  # the second factory's own network
    assert summary["test"]["member_acc"] == pytest.approx(_own_member_acc(tmp_path / "t"), abs=1e-12)
    student = api.distill_student(tmp_path / "t", tmp_path / "s", recipe=r, student=narrow_net)
    assert student["test"]["member_acc"] == pytest.approx(_own_member_acc(tmp_path / "s"), abs=1e-12)
    assert json.loads((tmp_path / "s" / "model.json").read_text())["spec"]["archs"] == ["narrow_net"]
    [rec] = [p for p in info["plugins"] if "user_net" in p.get("factories", {})]
    assert rec["path"] == str(Path(__file__).resolve()) and rec["factories"]["user_net"]["factory"] == "user_net"


def test_the_cli_and_the_api_train_the_same_weights(tmp_path):
    r = recipe(teacher={"arch": "test_api_usernet", "members": 2, "train": FAST})
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(r))
    assert main(["teacher", "--recipe", str(path), "--out", str(tmp_path / "cli")]) == 0
    api.train_teacher(path, tmp_path / "api")
    a = load_file(str(tmp_path / "cli" / "model.safetensors"))
    b = load_file(str(tmp_path / "api" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cam_term_with_a_featureless_member_fails_at_build_time(tmp_path):
    r = recipe(teacher={"members": 2, "objective": {"name": "sdde"}, "train": FAST})
    with pytest.raises(UserError) as err:
        api.train_teacher(r, tmp_path / "t", members=user_mlp)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("teacher.objective: the diversity term 'cam' needs Grad-CAM feature maps")
    assert "Sequential" in msg and "no nn.Conv2d" in msg
    assert not (tmp_path / "t" / "model.json").exists()


def test_load_recipe_checks_like_the_cli():
    rec = api.load_recipe(recipe(teacher={"members": 2}), ["teacher.train.epochs=3"])
    assert rec.teacher.train.epochs == 3 and rec.teacher.members == 2
    assert api.load_recipe(rec) is rec
    with pytest.raises(UserError, match="recipe key 'teacher.memberz' is unknown"):
        api.load_recipe({"teacher": {"memberz": 2}})
    with pytest.raises(UserError, match="recipe key 'teacher.arch': unknown architecture 'nope'"):
        api.load_recipe({"teacher": {"arch": "nope"}})


def test_factory_names_must_be_recordable():
    with pytest.raises(UserError, match="a lambda has no name"):
        api.train_teacher(recipe(teacher={}), "unused", members=lambda meta: UserNet(meta))

    def small_cnn(meta: DataMeta) -> nn.Module:  # the name of a built-in architecture
        return UserNet(meta)

    with pytest.raises(UserError, match="'small_cnn': already an architecture's name"):
        api.train_teacher(recipe(teacher={}), "unused", members=small_cnn)


def test_missing_section_is_named():
    with pytest.raises(UserError, match="no 'teacher' section"):
        api.train_teacher(recipe(), "unused", members=user_net)
