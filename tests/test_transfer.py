"""``data.transfer``: a student also learns from unlabelled images, labelled by the teacher (the KD term only, no CE),
one transfer batch of the labelled batch's size per step; transfer images that are validation or test images are
refused; summary.json says what the student saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill import UserError
from distill.data.batches import Batch, DeviceLoader
from distill.objectives.student import KD
from distill.perturb.base import PerturbResult
from distill.recipe import recipe_from_dict
from distill.train import train_ensemble, train_student


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_loader_draws_a_transfer_batch_per_step():
    x = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    extra = torch.arange(100, 113, dtype=torch.uint8).view(13, 1, 1, 1)  # fewer than an epoch's batches need
    loader = DeviceLoader(x, torch.zeros(40, dtype=torch.long), 8, seed=3, transfer_x=extra)
    batches = list(loader.epoch(0))
    assert len(batches) == 5 and all(b.transfer.shape == (8, 1, 1, 1) for b in batches)
    drawn = torch.cat([b.transfer.flatten() for b in batches]) * 255
    assert set(drawn.round().long().tolist()) == set(range(100, 113))  # every transfer image, in 40 draws
    again = list(DeviceLoader(x, torch.zeros(40, dtype=torch.long), 8, seed=3, transfer_x=extra).epoch(0))
    assert all(torch.equal(a.transfer, b.transfer) for a, b in zip(batches, again))  # seeded
    assert all(b.transfer is None for b in DeviceLoader(x, torch.zeros(40, dtype=torch.long), 8).epoch(0))


class Linear(torch.nn.Module):
    """A model of the distill contract: ``x (B, 1, 2, 2) -> (logits (S, B, K), features)``, rows independent."""

    def __init__(self, members: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(members, 4, 3, generator=g))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.einsum("bf,mfk->mbk", x.flatten(1), self.w), x


class Shift:
    """A perturbation stub: x~ = x + 0.1, so the rows of x~ and of the transfer batch can be told apart."""

    name = "shift"

    def __call__(self, teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> PerturbResult:
        return PerturbResult(x + 0.1, {})


class NoPerturbation:
    name = "none"

    def __call__(self, teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> PerturbResult:
        return PerturbResult(x, {})


def _kl_rows(teacher: torch.nn.Module, student: torch.nn.Module, x: torch.Tensor, t: float) -> torch.Tensor:
    """KL(q_T || softmax(s / T)) per image, by hand: ``(B,)``."""
    with torch.no_grad():
        q = (teacher(x)[0].double() / t).softmax(-1).mean(0)  # (B, K)
        log_s = (student(x)[0][0].double() / t).log_softmax(-1)
    return (q * (q.log() - log_s)).sum(-1)


@pytest.mark.parametrize("perturb", ["none", "shift"])
def test_transfer_images_get_the_teacher_term_only(perturb):
    teacher, student = Linear(3, 0), Linear(1, 1)
    g = torch.Generator().manual_seed(2)
    x, xu = torch.rand(5, 1, 2, 2, generator=g), torch.rand(5, 1, 2, 2, generator=g)
    y = torch.tensor([0, 1, 2, 1, 0])
    alpha, t = 0.7, 2.0
    kd = KD(teacher, NoPerturbation() if perturb == "none" else Shift(), alpha, t)
    with_transfer, terms = kd(student, Batch(x=x[None], y=y[None], transfer=xu))
    plain, plain_terms = kd(student, Batch(x=x[None], y=y[None]))
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(student(x)[0][0].double(), y)  # labelled images only
    x_pert = x + 0.1 if perturb == "shift" else x
    kl = torch.cat([_kl_rows(teacher, student, x_pert, t), _kl_rows(teacher, student, xu, t)]).mean()  # 2B rows
    assert float(terms["ce"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(terms["kd"]) == pytest.approx(float(kl), rel=1e-5)
    assert float(with_transfer.detach()) == pytest.approx(float((1 - alpha) * ce + alpha * t * t * kl), rel=1e-5)
    assert float(plain_terms["ce"]) == pytest.approx(float(ce), rel=1e-5)  # the transfer images add no CE
    assert float(plain_terms["kd"]) == pytest.approx(float(_kl_rows(teacher, student, x_pert, t).mean()), rel=1e-5)


def _recipe(transfer: Path | None = None) -> dict:
    train = {"epochs": 1, "batch_size": 32, "optim": {"lr": 0.05}}
    return {
        "seed": 0,
        "data": {"name": "digits", "limit_train": 160, "transfer": str(transfer) if transfer else None},
        "teacher": {"arch": "tiny_cnn", "members": 2, "objective": {"name": "de"}, "train": train},
        "student": {"arch": "tiny_cnn", "perturb": {"name": "none"}, "train": train},
        "run": {"progress": False},
    }


def _write_pngs(folder: Path, images: torch.Tensor) -> Path:
    """uint8 ``(N, 1, H, W)`` as grey PNGs (exact), in nested folders that are not classes."""
    for i, im in enumerate(images):
        p = folder / f"part{i % 2}" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(im[0])).save(p)
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("t") / "teacher"
    train_ensemble(recipe_from_dict(_recipe()), out)
    return out


def test_student_learns_from_transfer_images_and_says_so(teacher_dir, tmp_path):
    from distill.data import load_splits

    splits = load_splits(recipe_from_dict(_recipe()).data)
    # digits images not in this recipe's splits at all would be ideal; the training images beyond limit_train
    # are not, so take training images: allowed (only validation / test / held-out images are refused)
    folder = _write_pngs(tmp_path / "unlabelled", splits.train_x[:40])
    with_transfer = train_student(recipe_from_dict(_recipe(folder)), teacher_dir, tmp_path / "s_t")
    plain = train_student(recipe_from_dict(_recipe()), teacher_dir, tmp_path / "s")
    seen = with_transfer["data_seen"]
    assert seen["labelled_train_images"] == len(splits.train_y) == 160
    assert seen["transfer"]["images"] == 40 and seen["transfer"]["path"] == str(folder.resolve())
    assert json.loads((tmp_path / "s_t" / "summary.json").read_text())["data_seen"] == seen
    assert json.loads((tmp_path / "s_t" / "model.json").read_text())["transfer"]["images"] == 40
    assert plain["data_seen"]["transfer"] is None
    # the same seed and labelled batches: the teacher's term differs only through the transfer images
    assert with_transfer["history"][0]["kd"] != pytest.approx(plain["history"][0]["kd"], rel=1e-6)


def test_transfer_images_from_the_test_split_are_refused(teacher_dir, tmp_path):
    from distill.data import load_splits

    splits = load_splits(recipe_from_dict(_recipe()).data)
    folder = _write_pngs(tmp_path / "leak", torch.cat([splits.train_x[:10], splits.test_x[:3]]))
    out = tmp_path / "s"
    with pytest.raises(UserError, match=r"data\.transfer .*: 3 of its images are also in the test split"):
        train_student(recipe_from_dict(_recipe(folder)), teacher_dir, out)
    assert not out.exists()  # before any training
    with pytest.raises(UserError, match=r"data\.transfer .*: not found"):
        train_student(recipe_from_dict(_recipe(tmp_path / "nowhere")), teacher_dir, out)


def test_objectives_without_transfer_refuse_it(digits, tmp_path):
    from distill.loop import FitSetup, RunInfo, fit
    from distill.models import build_model
    from distill.objectives import objective_from_recipe
    from distill.recipe import to_dict

    recipe = recipe_from_dict(_recipe())
    spec = {"kind": "ensemble", "archs": ["tiny_cnn"]}
    model = build_model(spec, digits.meta)
    objective, _ = objective_from_recipe({"name": "de"}, "teacher.objective")
    setup = FitSetup(
        out=tmp_path / "t",
        splits=digits,
        data=recipe.data,
        train=recipe.teacher.train,
        run=recipe.run,
        seed=0,
        info=RunInfo("teacher", spec, digits.meta.to_json(), 0, to_dict(recipe)),
        transfer_x=digits.train_x[:8],
    )
    with pytest.raises(UserError, match=r"data\.transfer: the teacher's objective does not learn from transfer"):
        fit(model, objective, setup)
