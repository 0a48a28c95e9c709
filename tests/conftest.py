"""Shared fixtures: small seeded data and models, and where the shared real data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# DISTILL_TEST_THREADS, else the OMP_NUM_THREADS the caller set (`make test` exports 2), else 2: a run asked for
# one thread keeps to one, so processes sharing the 2 cores do not oversubscribe them.
torch.set_num_threads(int(os.environ.get("DISTILL_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or "2"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(path: str) -> Path:
    """A file or folder under ../shared/data, or skip the test saying what was looked for."""
    p = SHARED_DATA / path
    if not p.exists():
        pytest.skip(f"real data not present at {p} (see ../shared/data/README.md)")
    return p


@pytest.fixture(scope="session")
def digits():
    from distill.data import load_dataset

    return load_dataset("digits")


# The tiny digits runs that tests needing *a* trained teacher, single network or student share (one session-wide
# training instead of one per file): 8 classes (8 and 9 held out: an OOD set), 160 training images, one epoch.
DIGITS_TRAIN = {"epochs": 1, "batch_size": 32, "optim": {"lr": 0.05}}


def digits_recipe(students: list[dict] | None = None, student: dict | None = None) -> dict:
    """The recipe of the shared runs (``digits_runs``), with a file's own students (or ``student``) added: a student
    trained from it distils the shared teacher on the same data."""
    ens = {"arch": "tiny_cnn", "members": 2, "objective": {"name": "de"}, "train": DIGITS_TRAIN}
    recipe = {
        "seed": 0,
        "data": {"name": "digits", "limit_train": 160, "holdout_classes": [8, 9]},
        "teacher": ens,
        "single": {**ens, "members": 1},
        "run": {"progress": False},
    }
    if students is not None:
        recipe["students"] = students
    if student is not None:
        recipe["student"] = student
    return recipe


@pytest.fixture(scope="session")
def digits_runs(tmp_path_factory) -> Path:
    """``teacher`` (2 tiny CNNs) and ``single`` run directories trained once per session from ``digits_recipe()``.
    Shared by every file that asks: read them, or copy them (shutil.copytree) before changing anything."""
    from distill.recipe import recipe_from_dict
    from distill.train import train_ensemble

    root = tmp_path_factory.mktemp("digits_runs")
    recipe = recipe_from_dict(digits_recipe())
    train_ensemble(recipe, root / "teacher")
    train_ensemble(recipe, root / "single", section="single")
    return root


@pytest.fixture
def tiny_ensemble(digits):
    from distill.models import build_model

    torch.manual_seed(0)
    return build_model({"kind": "ensemble", "archs": ["tiny_cnn"] * 3}, digits.meta)


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Accelerate keeps one process-wide state (mixed precision, device); tests that change the precision
    need a fresh one, as a new `python -m distill` process would have."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
