"""Shared fixtures: small seeded data and models, and where the shared real data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("DISTILL_TEST_THREADS", "2")))

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
