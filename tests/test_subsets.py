"""Training subsets keep every class, and a split that lacks a class is refused (issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill import UserError
from distill.data import load_dataset
from distill.data.base import stratified_subset


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def sorted_folder(root: Path, per_class: dict[str, int], test_per_class: int = 0) -> Path:
    """An image folder whose files sort class by class, as CIFAR-10's archive does: cutting the first N images
    of it keeps the first classes only."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", per_class), ("test", dict.fromkeys(per_class, test_per_class))):
        for c, n in counts.items():
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")
    return root


def test_stratified_subset_counts_and_seed():
    y = torch.arange(10).repeat_interleave(torch.tensor([50, 50, 50, 50, 50, 50, 50, 50, 50, 5]))  # sorted by class
    idx = stratified_subset(y, 100, seed=3)
    counts = torch.bincount(y[idx], minlength=10).tolist()
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert all(c >= 1 for c in counts)  # the small class is kept
    assert abs(counts[0] - 100 * 50 / 455) <= 1
    assert torch.equal(idx, stratified_subset(y, 100, seed=3))  # seeded
    assert not torch.equal(idx, stratified_subset(y, 100, seed=4))
    assert torch.equal(stratified_subset(y, 1000, seed=0), torch.arange(len(y)))  # more than there is: all


def test_stratified_subset_keeps_a_class_rounding_would_drop():
    y = torch.tensor([0] * 98 + [1, 2])
    counts = torch.bincount(y[stratified_subset(y, 5, seed=0)], minlength=3).tolist()
    assert counts == [3, 1, 1]


def test_limit_train_on_a_class_sorted_folder_keeps_every_class(tmp_path):
    root = sorted_folder(tmp_path / "d", {c: 40 for c in "abcde"}, test_per_class=4)
    full = load_dataset("imagefolder", root, val_fraction=0.25)
    splits = load_dataset("imagefolder", root, limit_train=50, val_fraction=0.25)
    counts = torch.bincount(splits.train_y, minlength=5)
    share = torch.bincount(full.train_y, minlength=5) * 50 / len(full.train_y)
    assert len(splits.train_y) == 50 and ((counts - share).abs() < 1).all()  # the first 50 would all be 'a'
    sub = splits.meta.subset
    assert sub["limit_train"] == 50 and sub["per_class"] == counts.tolist() and len(sub["indices_sha256"]) == 16
    assert splits.meta.to_json()["subset"] == sub  # recorded in model.json's meta and the summary
    again = load_dataset("imagefolder", root, limit_train=50, val_fraction=0.25)
    assert torch.equal(again.train_x, splits.train_x)  # same draw every run of the recipe
    other = load_dataset("imagefolder", root, limit_train=50, val_fraction=0.25, split_seed=1)
    assert other.meta.subset["indices_sha256"] != sub["indices_sha256"]
    assert full.meta.subset is None  # no subset asked for


def test_a_split_without_a_class_is_an_error_naming_split_and_classes(tmp_path):
    root = sorted_folder(tmp_path / "d", {"a": 20, "b": 20, "c": 1}, test_per_class=2)
    # class c has one image: whichever side of the val cut it lands on, the other split lacks it
    lacks = r"the (training|validation) split of 'imagefolder' has no images of class\(es\) 2 "
    with pytest.raises(UserError, match=lacks):
        load_dataset("imagefolder", root, val_fraction=0.5)
    root = sorted_folder(tmp_path / "e", {"a": 20, "b": 20}, test_per_class=0)
    (root / "test" / "a").rmdir()
    d = root / "test" / "b"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "0.png")
    with pytest.raises(UserError, match=r"the test split of 'imagefolder' has no images of class\(es\) 0 "):
        load_dataset("imagefolder", root)


def test_cli_names_the_missing_class_and_exits_2(tmp_path):
    import subprocess
    import sys

    root = sorted_folder(tmp_path / "d", {"a": 20, "b": 20, "c": 1}, test_per_class=2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"data: {{name: imagefolder, root: {root}, val_fraction: 0.5, split_seed: 1, augment: false}}\n"
        "single: {arch: tiny_cnn, members: 1, objective: {name: de}, train: {epochs: 1}}\n"
    )
    env = {"DISTILL_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "distill", "single", "--recipe", str(recipe), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and " split of 'imagefolder'" in lines[0] and "class(es) 2" in lines[0]
    assert not (tmp_path / "run").exists()


def test_fewer_items_than_classes_draws_the_classes_by_seed():
    """8 of 10 balanced classes: which classes get an item depends on the seed, not on the class index."""
    y = torch.arange(10).repeat_interleave(50)
    kept = [set(y[stratified_subset(y, 8, seed=s, seeded_ties=True)].tolist()) for s in range(6)]
    assert all(len(k) == 8 for k in kept)
    assert any(k != set(range(8)) for k in kept)  # ship (8) or truck (9) appear for some seed
    assert len({frozenset(k) for k in kept}) > 1
    # training subsets keep the draw of earlier versions (every trained run's data depends on it)
    assert set(y[stratified_subset(y, 8, seed=0)].tolist()) == set(range(2, 10))
