"""Existing ensembles as teachers (distill import-teacher): N state dicts become a teacher run directory whose test
metrics, in summary.json and in the report, equal a plain PyTorch evaluation of the same networks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from distill import UserError, api
from distill.cli import main
from distill.models import register_arch

MEAN, STD = 0.5, 0.25  # the users' own normalisation, not the data's (0.30 / 0.37 on digits)
RECIPE = {
    "seed": 0,
    "data": {"name": "digits", "augment": False},
    "student": {"arch": "test_import_cnn", "train": {"epochs": 1, "batch_size": 128}},
    "evaluate": {"ood": [], "corruptions": [], "cost": {"enabled": False}, "diversity_images": 40, "cam_images": 2},
}


class PlainCNN(nn.Module):
    """A user's network: logits only, keys of its own (conv.*, fc.*)."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class PlainMLP(nn.Module):
    def __init__(self, channels: int = 1, num_classes: int = 10, pixels: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(channels * pixels, 32), nn.ReLU())
        self.out = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


register_arch("test_import_cnn")(lambda c, k, s: PlainCNN(c, k))
register_arch("test_import_mlp")(lambda c, k, s: PlainMLP(c, k, s[0] * s[1]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[nn.Module], list[Path]]:
    """Three networks trained with plain PyTorch on the recipe's training split (150 steps each), saved as .pt and
    .safetensors state dicts."""
    tmp = tmp_path_factory.mktemp("import")
    data = api.splits(RECIPE)
    x = (data.train_x.float() / 255 - MEAN) / STD
    nets, files = [], []
    for i, net in enumerate([PlainCNN(), PlainCNN(width=6), PlainMLP()]):
        torch.manual_seed(i)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(150):
            idx = torch.randint(0, len(x), (64,))
            loss = nn.functional.cross_entropy(net(x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        f = tmp / (f"m{i}.pt" if i != 1 else f"m{i}.safetensors")
        if f.suffix == ".pt":
            torch.save(net.state_dict(), f)
        else:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(f))
        nets.append(net)
        files.append(f)
    return tmp, nets, files


def _own_evaluation(nets: list[nn.Module]) -> tuple[float, float]:
    """Accuracy and NLL of the mean member softmax on the recipe's test split, in plain PyTorch."""
    data = api.splits(RECIPE)
    x = (data.test_x.float() / 255 - MEAN) / STD
    with torch.no_grad():
        probs = torch.stack([net(x).softmax(-1) for net in nets]).mean(0).double()
    acc = (probs.argmax(-1) == data.test_y).double().mean().item()
    nll = -probs.gather(1, data.test_y[:, None]).log().mean().item()
    return acc, nll


def _width6(c: int, k: int, s: tuple[int, int]) -> nn.Module:
    return PlainCNN(c, k, width=6)


register_arch("test_import_cnn6")(_width6)
ARCHS = ["test_import_cnn", "test_import_cnn6", "test_import_mlp"]


def test_imported_teacher_metrics_equal_a_plain_pytorch_evaluation(trained, tmp_path):
    _, nets, files = trained
    out = tmp_path / "teacher"
    summary = api.import_teacher(files, out, arch=ARCHS, recipe=RECIPE, mean=MEAN, std=STD)
    acc, nll = _own_evaluation(nets)
    assert acc > 0.5  # the networks learned something, so equal numbers mean something
    assert summary["test"]["acc"] == pytest.approx(acc, abs=1e-12)
    assert summary["test"]["nll"] == pytest.approx(nll, rel=1e-5)
    on_disk = json.loads((out / "summary.json").read_text())["test"]
    assert on_disk["acc"] == summary["test"]["acc"] and on_disk["nll"] == summary["test"]["nll"]
    assert "cam_similarity" not in on_disk  # the MLP has no feature map: no CAM measure, rather than a wrong one

    info = json.loads((out / "model.json").read_text())
    assert info["role"] == "teacher" and info["spec"]["archs"] == ARCHS
    assert info["spec"]["normalization"] == {"mean": [MEAN], "std": [STD]}
    assert info["recipe"]["teacher"] is None
    rec = info["imported_from"]
    assert [r["arch"] for r in rec] == ARCHS and all(len(r["sha256"]) == 64 for r in rec)
    assert rec[0]["read"] == "torch.load(weights_only=True)" and rec[1]["read"] == "safetensors"

    report = api.evaluate(out, tmp_path / "report")
    metrics = report["models"]["teacher"]["metrics"]
    assert metrics["acc"] == pytest.approx(acc, abs=1e-12)
    assert metrics["nll"] == pytest.approx(nll, rel=1e-5)
    notes = " ".join(report["notes"])
    assert "PlainMLP" in notes  # the report says why it has no Grad-CAM measure


def test_imported_teacher_trains_a_student_from_the_cli(trained, tmp_path, capsys):
    tmp, _, files = trained
    recipe = tmp_path / "r.json"  # JSON is YAML
    recipe.write_text(json.dumps(RECIPE))
    teacher, student = tmp_path / "t", tmp_path / "s"
    argv = ["import-teacher", "--recipe", str(recipe), "--out", str(teacher), "--mean", "0.5", "--std", "0.25"]
    for f, a in zip(files, ARCHS):
        argv += ["--checkpoint", str(f), "--arch", a]
    assert main(argv) == 0
    assert main(["student", "--teacher", str(teacher), "--recipe", str(recipe), "--out", str(student)]) == 0
    info = json.loads((student / "model.json").read_text())
    assert info["teacher"] == str(teacher) and math.isfinite(
        json.loads((student / "summary.json").read_text())["test"]["nll"]
    )


def test_mismatching_keys_name_the_first_key_and_the_file(trained, tmp_path):
    _, nets, _ = trained
    state = dict(nets[0].state_dict())
    state["classifier.weight"] = state.pop("fc.weight")  # renamed: 'fc.weight' missing, 'classifier.weight' extra
    f = tmp_path / "renamed.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(f))
    with pytest.raises(UserError) as err:
        api.import_teacher([f], tmp_path / "t", arch="test_import_cnn", recipe=RECIPE, mean=MEAN, std=STD)
    msg = str(err.value)
    assert "\n" not in msg and str(f) in msg
    assert "unexpected key 'classifier.weight'" in msg  # sorted: 'classifier.weight' < 'fc.weight'
    assert not (tmp_path / "t").exists()  # nothing written

    del state["classifier.weight"]
    torch.save(state, tmp_path / "short.pt")
    with pytest.raises(UserError, match=r"short.pt: key 'fc.weight' of arch 'test_import_cnn' is missing"):
        api.import_teacher(
            [tmp_path / "short.pt"], tmp_path / "t", arch="test_import_cnn", recipe=RECIPE, mean=0, std=1
        )

    torch.save(nets[1].state_dict(), tmp_path / "narrow.pt")  # width 6 into the width-8 architecture
    with pytest.raises(UserError, match=r"key 'conv.bias' has shape \(6,\) in the file, \(8,\) in arch"):
        api.import_teacher(
            [tmp_path / "narrow.pt"], tmp_path / "t", arch="test_import_cnn", recipe=RECIPE, mean=0, std=1
        )


def test_checkpoints_never_run_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    f = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(1), "x": Payload()}, f)
    with pytest.raises(UserError, match=r"evil.pt: not loadable with weights_only=True"):
        api.import_teacher([f], tmp_path / "t", arch="test_import_cnn", recipe=RECIPE, mean=0, std=1)


def test_nested_and_dataparallel_state_dicts_are_read(trained, tmp_path):
    _, nets, _ = trained
    f = tmp_path / "nested.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in nets[0].state_dict().items()}}, f)
    summary = api.import_teacher([f], tmp_path / "t", arch="test_import_cnn", recipe=RECIPE, mean=MEAN, std=STD)
    assert summary["test"]["acc"] == pytest.approx(_own_evaluation(nets[:1])[0], abs=1e-12)
    (rec,) = json.loads((tmp_path / "t" / "model.json").read_text())["imported_from"]
    assert rec["read"] == "torch.load(weights_only=True)['state_dict'], 'module.' prefix dropped"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "--mean/--std: give the input normalisation"),
        ({"mean": 0.5, "std": 0.0}, r"--std 0.0: expected numbers > 0"),
        ({"mean": [0.1, 0.2], "std": 1}, r"--mean \[0.1, 0.2\]: expected 1 or 1 finite numbers"),
        ({"mean": 0.5, "std": 0.2, "normalization_from_data": True}, "not both"),
        ({"arch": ["test_import_cnn"] * 2, "mean": 0, "std": 1}, "2 architectures for 1 checkpoints"),
        ({"arch": "nope", "mean": 0, "std": 1}, "--arch: unknown architecture 'nope'"),
    ],
)
def test_bad_import_arguments(trained, tmp_path, kwargs, match):
    _, _, files = trained
    kwargs = {"arch": "test_import_cnn", **kwargs}
    with pytest.raises(UserError, match=match):
        api.import_teacher(files[:1], tmp_path / "t", recipe=RECIPE, **kwargs)


def test_an_existing_run_is_not_overwritten(trained, tmp_path):
    _, _, files = trained
    out = tmp_path / "t"
    api.import_teacher(files[:1], out, arch="test_import_cnn", recipe=RECIPE, normalization_from_data=True)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="holds a run already"):
        api.import_teacher(files[:1], out, arch="test_import_cnn", recipe=RECIPE, mean=0, std=1)
    assert (out / "model.safetensors").read_bytes() == before
    info = json.loads((out / "model.json").read_text())
    data_mean = api.splits(RECIPE).meta.mean
    assert info["spec"]["normalization"]["mean"] == list(data_mean)  # --normalization-from-data: the split's own
