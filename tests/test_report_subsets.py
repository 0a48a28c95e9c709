"""Evaluation and analysis subsets are drawn class-stratified and seeded, never the first N of a split (issue 31).

The folder the tests write sorts class by class, as CIFAR-10's archive does: the first 20 of its 60 test images are
classes 0 and 1 only, so every check below fails on code that slices. Which images a path used is read back from
the tensors it was given (monkeypatched spies), matched to the split by their bytes, independently of the code
that drew them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill import UserError
from distill.data.subsets import eval_subset, subset_record
from distill.recipe import CostCfg, EvalCfg, recipe_from_dict

CLASSES = 5
TEST_PER_CLASS = 12  # 60 test images, 12 of each class
SEED = 3


def sorted_folder(root: Path) -> Path:
    """``{train,test}/c<k>/NNNN.png``: 8x8 noise images, every one distinct; loaded class by class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", TEST_PER_CLASS)):
        for c in range(CLASSES):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")
    return root


def labels_of(x: torch.Tensor, pool_x: torch.Tensor, pool_y: torch.Tensor) -> torch.Tensor:
    """The labels of images ``x`` looked up by their bytes among ``pool_x`` (every one must be there)."""
    index = {bytes(img.numpy().tobytes()): int(lab) for img, lab in zip(pool_x, pool_y)}
    return torch.tensor([index[bytes(img.numpy().tobytes())] for img in x])


def proportional(counts: list[int], n: int, sizes: list[int]) -> bool:
    total = sum(sizes)
    return sum(counts) == n and all(abs(c - n * s / total) <= 1 for c, s in zip(counts, sizes))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    from distill.train import train_ensemble

    root = tmp_path_factory.mktemp("subsets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_CACHE", str(root / "cache"))
        torch.manual_seed(0)
        recipe = recipe_from_dict(
            {
                "data": {"name": "imagefolder", "root": str(sorted_folder(root / "d")), "augment": False},
                "teacher": {
                    "arch": "tiny_cnn",
                    "members": 2,
                    "objective": {"name": "de"},
                    "train": {"epochs": 1, "batch_size": 32},
                },
                "run": {"progress": False},
            }
        )
        train_ensemble(recipe, root / "teacher")
        yield root / "teacher"


@pytest.fixture
def splits(teacher, monkeypatch):
    from distill.runs import load_run, run_splits

    monkeypatch.setenv("DISTILL_CACHE", str(teacher.parent / "cache"))
    return run_splits(load_run(teacher).data)


def spy(monkeypatch, module, name: str, seen: list) -> None:
    """Wrap ``module.name`` so that every call's positional arguments are appended to ``seen``."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        seen.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_the_folder_is_class_sorted_so_slicing_would_fail(splits):
    # the premise of every test here: the first 20 test images hold two classes of five
    assert torch.bincount(splits.test_y[:20], minlength=CLASSES).tolist() == [12, 8, 0, 0, 0]


def test_subsets_do_not_depend_on_the_order_of_the_split(splits):
    """The draw's class counts are the same whether the split comes class-sorted or shuffled; only which image of
    a class is drawn may change. Replaces the former test that the test split comes out in class order."""
    y = splits.test_y
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(7))]
    for n in (7, 20, 33):
        a = torch.bincount(y[eval_subset(y, n, SEED)], minlength=CLASSES)
        b = torch.bincount(shuffled[eval_subset(shuffled, n, SEED)], minlength=CLASSES)
        assert torch.equal(a, b) and proportional(a.tolist(), n, [TEST_PER_CLASS] * CLASSES), n
    assert torch.equal(eval_subset(y, 20, SEED), eval_subset(y, 20, SEED))  # seeded
    assert not torch.equal(eval_subset(y, 20, SEED), eval_subset(y, 20, SEED + 1))
    assert len(eval_subset(y, 0, SEED)) == 0 and torch.equal(eval_subset(y, 999, SEED), torch.arange(len(y)))
    assert subset_record(y[eval_subset(y, 20, SEED)], SEED, CLASSES) == {
        "size": 20,
        "seed": SEED,
        "class_counts": [4, 4, 4, 4, 4],
    }


def test_report_subsets_hold_every_class_and_are_recorded(teacher, splits, monkeypatch, tmp_path):
    import distill.report.corruption as corruption_mod
    import distill.report.diversity as diversity_mod
    import distill.report.plots as plots_mod
    from distill.checkpoint import load_model
    from distill.metrics import accuracy, nll
    from distill.predict import predict_logits
    from distill.report import evaluate_runs

    corrupted, grads, cams = [], [], []
    spy(monkeypatch, corruption_mod, "corrupted", corrupted)
    spy(monkeypatch, diversity_mod, "true_class_input_gradients", grads)
    spy(monkeypatch, plots_mod, "member_cams", cams)
    cfg = EvalCfg(
        corruptions=["gaussian_noise"],
        severities=[1],
        corruption_limit=20,
        diversity_images=15,
        cam_images=10,
        subset_seed=SEED,
        cost=CostCfg(enabled=False),
    )
    rep = evaluate_runs(teacher, [], None, tmp_path / "rep", cfg)
    tx, ty = splits.test_x, splits.test_y
    quarter = [TEST_PER_CLASS] * CLASSES

    (args,) = corrupted  # one corruption, one severity
    corr_y = labels_of(args[0], tx, ty)
    counts = torch.bincount(corr_y, minlength=CLASSES).tolist()
    assert counts == [4, 4, 4, 4, 4]  # the first 20 were [12, 8, 0, 0, 0]
    assert rep["subsets"]["corruption"] == {"size": 20, "seed": SEED, "class_counts": counts}
    assert rep["corruptions"]["images"] == 20 and "drawn class-stratified (seed 3)" in rep["corruptions"]["source"]
    # severity 0 is the same images, clean: its numbers by hand from the teacher on the spied images
    model, _ = load_model(teacher)
    probs = predict_logits(model, args[0]).double().softmax(-1).mean(0)  # (20, K)
    clean = rep["models"]["teacher"]["corruption"]["severity"]["0"]
    assert clean["acc"] == pytest.approx(accuracy(probs, corr_y), abs=1e-9)
    assert clean["nll"] == pytest.approx(nll(probs, corr_y), rel=1e-5)

    for _, x, y, *_ in grads:  # the teacher's diversity images (attribution; CAM and CKA take the same xs)
        assert torch.equal(labels_of(x, tx, ty), y.cpu())
        counts = torch.bincount(y.cpu(), minlength=CLASSES).tolist()
        assert proportional(counts, 15, quarter)
        assert rep["subsets"]["diversity"] == {"size": 15, "seed": SEED, "class_counts": counts}
    assert len(grads) == 1 and rep["models"]["teacher"]["diversity"]["images"] == 15

    ((_, x, y),) = cams
    assert torch.equal(labels_of(x, tx, ty), y)
    counts = torch.bincount(y, minlength=CLASSES).tolist()
    assert counts == [2, 2, 2, 2, 2]
    assert rep["subsets"]["cam_grid"] == {"size": 10, "seed": SEED, "class_counts": counts}

    md = (tmp_path / "rep" / "report.md").read_text()
    assert "severity 0 = 20 test images drawn class-stratified (seed 3)" in md
    assert "similarities on 15 test images drawn class-stratified (seed 3)" in md
    assert "the first" not in rep["conventions"]["corruption"]


def test_released_cifar10c_draws_the_same_indices_for_every_corruption_and_severity(tmp_path):
    from distill.report.corruption import released_cifar10c

    c = tmp_path / "CIFAR-10-C"
    c.mkdir()
    n, per = 50, 10  # 50 images per severity, 10 of each class, sorted by class
    labels = np.repeat(np.arange(CLASSES), per)
    for name in ("fog", "snow"):
        x = np.zeros((5 * n, 4, 4, 3), np.uint8)
        x[:, 0, 0, 0] = np.tile(np.arange(n), 5)  # pixel (0, 0) tells the image's index in its severity
        x[:, 0, 0, 1] = np.repeat(np.arange(5), n)  # and pixel (0, 1) its severity - 1
        np.save(c / f"{name}.npy", x)
    np.save(c / "labels.npy", np.tile(labels, 5))
    clean = torch.arange(7)  # passed through: the test split's draw of severity 0
    src = released_cifar10c(str(c), ["fog", "snow"], 20, (3, 4, 4), SEED, clean)
    counts = torch.bincount(src.y, minlength=CLASSES).tolist()
    assert counts == [4, 4, 4, 4, 4] and torch.equal(src.clean, clean)  # the first 20 would be classes 0 and 1
    drawn = None
    for name in ("fog", "snow"):
        for sev in range(1, 6):
            xs = src.images(name, sev)
            idx = xs[:, 0, 0, 0].long()
            assert (xs[:, 1, 0, 0] == sev - 1).all()
            assert torch.equal(torch.from_numpy(labels)[idx], src.y)  # the images carry the drawn labels
            drawn = idx if drawn is None else drawn
            assert torch.equal(idx, drawn), (name, sev)
    other = released_cifar10c(str(c), ["fog"], 20, (3, 4, 4), SEED + 1, clean)
    assert not torch.equal(other.images("fog", 1)[:, 0, 0, 0], drawn)  # the seed is used
    bad = np.tile(labels, 5)
    bad[2 * n : 3 * n] = labels[::-1]  # severity 3's labels disagree with severity 1's
    np.save(c / "labels.npy", bad)
    src = released_cifar10c(str(c), ["fog"], 20, (3, 4, 4), SEED, clean)
    with pytest.raises(UserError, match="labels.npy differs between fog/1 and fog/3"):
        src.images("fog", 3)


def test_training_summary_cam_similarity_is_on_a_drawn_subset(teacher, splits, monkeypatch):
    import distill.train as train_mod
    from distill.checkpoint import load_model
    from distill.saliency import mean_cam_similarity

    seen = []
    spy(monkeypatch, train_mod, "mean_cam_similarity", seen)
    model, _ = load_model(teacher)
    out = train_mod.test_metrics(model, splits, cam_images=10, seed=SEED)
    ((_, x, y),) = seen
    counts = torch.bincount(y, minlength=CLASSES).tolist()
    assert counts == [2, 2, 2, 2, 2] and torch.equal(labels_of(x, splits.test_x, splits.test_y), y)
    assert out["cam_subset"] == {"size": 10, "seed": SEED, "class_counts": counts}
    assert out["cam_similarity"] == pytest.approx(mean_cam_similarity(model, x, y), abs=1e-7)


def test_trajectory_points_are_drawn_from_the_validation_split(splits):
    from distill.analysis.trajectory import TrajectoryRecorder

    rec = TrajectoryRecorder.from_splits(splits, images=10, seed=SEED)
    sizes = torch.bincount(splits.val_y, minlength=CLASSES).tolist()
    assert proportional(torch.bincount(rec.y, minlength=CLASSES).tolist(), 10, sizes)
    assert torch.equal(labels_of(rec.x, splits.val_x, splits.val_y), rec.y)


def test_design_analysis_subsets(teacher, splits, monkeypatch):
    import distill.analysis.design as design

    att, corr = [], []
    spy(monkeypatch, design, "attribution_and_activation", att)
    spy(monkeypatch, design, "corruption_set", corr)
    o = design._options(
        {"diversity_images": 15, "corruption_limit": 20, "corruptions": ["gaussian_noise"], "severities": [1]}
    )
    row = design.evaluate_run(teacher, {**o, "subset_seed": SEED})
    tx, ty = splits.test_x, splits.test_y
    ((_, x, y, *_),) = att
    assert torch.equal(labels_of(x, tx, ty), y) and proportional(y.bincount(minlength=CLASSES).tolist(), 15, [12] * 5)
    assert row["subsets"]["diversity"] == {"size": 15, "seed": SEED, "class_counts": y.bincount(minlength=5).tolist()}
    ((xc, *_),) = corr
    counts = labels_of(xc, tx, ty).bincount(minlength=CLASSES).tolist()
    assert counts == [4, 4, 4, 4, 4] and row["subsets"]["corruption"]["class_counts"] == counts
    with pytest.raises(UserError, match="analyze_diversity: option 'subset_seed' must be an integer >= 0"):
        design._options({"subset_seed": -1})


def test_landscape_evaluator_and_similarity_points(teacher, splits, monkeypatch, tmp_path):
    import distill.analysis.similarity as similarity
    import distill.analysis.subspace as subspace
    from distill.analysis.common import FigureList
    from distill.analysis.landscape import _options
    from distill.analysis.subspace import Evaluator
    from distill.analysis.trajectory import members_of
    from distill.checkpoint import load_model

    corr = []
    spy(monkeypatch, subspace, "corruption_set", corr)
    o = _options({"corruption_limit": 20, "bn_images": 50, "corruptions": ["gaussian_noise"], "subset_seed": SEED})
    ev = Evaluator(splits, torch.device("cpu"), o)
    assert torch.bincount(ev.corr_y, minlength=CLASSES).tolist() == [4, 4, 4, 4, 4]
    ((xc, *_),) = corr  # the clean images corrupted: the ones ev.corr_y labels, in the same order
    assert torch.equal(labels_of(xc, splits.test_x, splits.test_y), ev.corr_y)
    train_sizes = torch.bincount(splits.train_y, minlength=CLASSES).tolist()
    bn_counts = torch.bincount(ev.bn_y, minlength=CLASSES).tolist()
    assert proportional(bn_counts, 50, train_sizes)
    assert torch.equal(labels_of(ev.bn_x, splits.train_x, splits.train_y), ev.bn_y)
    # BatchNorm's batches must mix the classes: the drawn images come shuffled, not class by class
    assert (ev.bn_y[1:] != ev.bn_y[:-1]).sum() > CLASSES
    assert ev.subsets["corruption"]["class_counts"] == [4] * 5 and ev.subsets["bn"]["class_counts"] == bn_counts

    seen = []
    spy(monkeypatch, similarity, "member_probs", seen)
    model, _ = load_model(teacher)
    res = similarity.similarity_analysis(members_of(model), None, 0, ev, {**o, "points": 10}, FigureList(tmp_path, []))
    y = labels_of(seen[0][1], splits.val_x, splits.val_y)
    assert proportional(y.bincount(minlength=CLASSES).tolist(), 10, torch.bincount(splits.val_y).tolist())
    assert res["points"] == "10 validation images drawn class-stratified (seed 3)"


def test_subset_seed_is_checked_in_the_recipe():
    assert recipe_from_dict({"evaluate": {"subset_seed": 5}}).evaluate.subset_seed == 5
    with pytest.raises(UserError, match=r"recipe key 'evaluate.subset_seed': expected"):
        recipe_from_dict({"evaluate": {"subset_seed": -1}})
