"""A known-answer test of the report: models whose logits are fixed per image, on a small class-sorted test set,
give report.json's metrics and gain shares as a hand computation here says (numpy and scipy, not distill.metrics).

The set: 3 classes of 8x8 grey images, each image one constant grey value, so the value identifies the image. A
lookup network returns the logits of a table for that value (its weights are the table), so every model's logits
on val and test are exactly the numbers this file wrote. The official test split lists its images class by class,
as CIFAR-10's archive does, so a metric computed on its first N images would miss two classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from distill.checkpoint import save_model
from distill.data.base import LOADERS, RawData, load_splits, register_dataset
from distill.models import build_model, ensemble_spec
from distill.models.registry import ARCHS, register_arch
from distill.recipe import CostCfg, EvalCfg, recipe_from_dict, to_dict
from distill.report import evaluate_runs

DATASET, ARCH = "test_known_sorted", "test_lookup"
K = 3
TRAIN_VALUES = np.arange(0, 60)  # image v is all pixels = v; its class is v % 3
TEST_VALUES = np.arange(100, 124)  # 8 per class, class-sorted: 100..107 class 0, 108..115 class 1, ...
TEST_LABELS = np.repeat(np.arange(K), 8)
DATA = {"name": DATASET, "val_fraction": 0.3}  # 18 of the 60 training images validate (every class among them)
# The fitted models: (member tables' seed, the probability that an image's table row favours its true class).
TEACHER = [(1, 0.9), (2, 0.9)]
SINGLE = (3, 0.5)
STUDENT = (5, 0.75)
N_BINS = 15


class Lookup(nn.Module):
    """Logits ``table[v]`` for an image of grey value v, found by its first (normalised) pixel; the CAM features are
    the image, through a zero-valued term, so Grad-CAM and input gradients exist and the logits stay exact."""

    def __init__(self, channels: int, num_classes: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(256))  # normalised value of each grey level
        self.table = nn.Parameter(torch.zeros(256, num_classes))
        self.gain = nn.Parameter(torch.ones(()))  # features = gain * x: a map with a gradient path, as Grad-CAM needs
        # a zero linear head: the report's CKA reads the input of the last linear layer; it adds exactly 0
        self.head = nn.Linear(channels * size[0] * size[1], num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = (x[:, 0, 0, 0, None] - self.keys[None]).abs().argmin(dim=1)
        feats = self.gain * x  # (B, C, H, W), equal to x
        zero = (feats - feats.detach()).mean(dim=(1, 2, 3))[:, None]  # (B, 1): 0 in value, 1/D in gradient
        return self.table[idx] + self.head(feats.flatten(1)) + zero, feats


def _dataset(root: Path | None) -> RawData:
    def images(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.broadcast_to(values[:, None, None, None], (len(values), 1, 8, 8)).astype(np.uint8))

    return RawData(
        x=images(TRAIN_VALUES),
        y=torch.from_numpy(TRAIN_VALUES % K),
        test_x=images(TEST_VALUES),
        test_y=torch.from_numpy(TEST_LABELS),
    )


def _table(seed: int, p_true: float) -> np.ndarray:
    """(256, K) float32 logits: each row favours the class v % 3 (or, for test values, its test label) with
    probability p_true, else another class, with seeded noise and margins."""
    rng = np.random.default_rng(seed)
    labels = np.arange(256) % K
    labels[TEST_VALUES] = TEST_LABELS
    favoured = np.where(rng.random(256) < p_true, labels, (labels + rng.integers(1, K, 256)) % K)
    z = rng.normal(0.0, 1.0, (256, K))
    z[np.arange(256), favoured] += rng.uniform(0.5, 3.0, 256)
    return z.astype(np.float32)


@pytest.fixture(scope="module")
def registered():
    """The dataset and the architecture, registered for this module only."""
    register_arch(ARCH)(Lookup)
    register_dataset(DATASET)(_dataset)
    yield
    ARCHS.unregister(ARCH)
    LOADERS.unregister(DATASET)  # its hint with it


def _write_run(out: Path, role: str, tables: list[np.ndarray], meta, recipe: dict, extra: dict | None = None) -> None:
    model = build_model(ensemble_spec(ARCH, len(tables)), meta)
    keys = ((torch.arange(256, dtype=torch.float32) / 255 - meta.mean[0]) / meta.std[0]).float()
    for member, table in zip(model.members, tables):
        member.net.keys.copy_(keys)
        member.net.table.data.copy_(torch.from_numpy(table))
    out.mkdir(parents=True)
    spec = ensemble_spec(ARCH, len(tables))
    save_model(out, model, {"role": role, "spec": spec, "meta": meta.to_json(), "recipe": recipe, **(extra or {})})


@pytest.fixture(scope="module")
def known(registered, tmp_path_factory):
    """(report, the tables, the splits): the runs written from the tables, then reported."""
    from distill.checkpoint import weights_sha256

    root = tmp_path_factory.mktemp("known")
    splits = load_splits(recipe_from_dict({"data": DATA, "teacher": {"arch": ARCH}}).data)
    assert splits.test_y.tolist() == TEST_LABELS.tolist()  # the class-sorted test split, as written
    section = {"arch": ARCH, "members": 2, "objective": {"name": "de"}}
    recipe = to_dict(recipe_from_dict({"data": DATA, "teacher": section, "run": {"progress": False}}))
    tables = {
        "teacher": [_table(*t) for t in TEACHER],
        "single": [_table(*SINGLE)],
        "kd": [_table(*STUDENT)],
    }
    _write_run(root / "teacher", "teacher", tables["teacher"], splits.meta, recipe)
    _write_run(root / "single", "single", tables["single"], splits.meta, recipe)
    provenance = {"name": "kd", "teacher": str(root / "teacher"), "teacher_sha256": weights_sha256(root / "teacher")}
    _write_run(root / "kd", "student", tables["kd"], splits.meta, recipe, provenance)
    cfg = EvalCfg(
        ood=[], ood_scores=["msp"], corruptions=[], cam_images=2, diversity_images=8, cost=CostCfg(enabled=False)
    )
    if "bootstrap" in EvalCfg.__dataclass_fields__:  # point values only: intervals are tested elsewhere
        cfg = EvalCfg(**{**cfg.__dict__, "bootstrap": 0})
    report = evaluate_runs(root / "teacher", [root / "kd"], root / "single", root / "report", cfg)
    assert json.loads((root / "report" / "report.json").read_text()) == report
    return report, tables, splits


# --- the hand computation -------------------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _probs(tables: list[np.ndarray], values: np.ndarray) -> np.ndarray:
    """The mean of the members' softmax over the images of these grey values: (N, K), float64."""
    return np.mean([_softmax(t[values].astype(np.float64)) for t in tables], axis=0)


def _ece(p: np.ndarray, y: np.ndarray) -> float:
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    total = 0.0
    for k in range(N_BINS):
        lo, hi = k / N_BINS, (k + 1) / N_BINS
        inside = (conf > lo) & (conf <= hi) if k else (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def _nll_at(log_p: np.ndarray, y: np.ndarray, t: float) -> float:
    z = log_p / t
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def _by_hand(p: np.ndarray, y: np.ndarray, p_val: np.ndarray, y_val: np.ndarray, teacher: np.ndarray) -> dict:
    onehot = np.eye(K)[y]
    fit = minimize_scalar(
        lambda log_t: _nll_at(np.log(p_val), y_val, np.exp(log_t)),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    t = float(np.exp(fit.x))
    calibrated = _softmax(np.log(p) / t)
    return {
        "acc": float(np.mean(p.argmax(1) == y)),
        "nll": float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)))),
        "brier": float(np.mean(((p - onehot) ** 2).sum(1))),
        "ece": _ece(p, y),
        "temperature": t,
        "cnll": _nll_at(np.log(p), y, t),
        "cbrier": float(np.mean(((calibrated - onehot) ** 2).sum(1))),
        "cece": _ece(calibrated, y),
        "agreement": float(np.mean(p.argmax(1) == teacher.argmax(1))),
        "kl_teacher": float(np.mean((teacher * (np.log(teacher) - np.log(p))).sum(1))),
    }


HIGHER = {"acc", "agreement"}
# Tolerances: the logits are the same float32 numbers on both sides and both compute in float64, so the metrics
# agree to round-off (1e-9 relative), except the temperature, which two different 1-D searches (golden section to
# 1e-8 in log T; scipy's bounded Brent) find to ~6e-8 relative, and the test-set metrics taken at it (cNLL,
# cBrier, cECE: the validation optimum is not the test one, so they move with T to first order; measured 3e-8).
TOL = {"temperature": 1e-6, "cnll": 1e-6, "cbrier": 1e-6, "cece": 1e-6}


def test_report_metrics_equal_the_hand_computation(known):
    report, tables, splits = known
    y, y_val = TEST_LABELS, splits.val_y.numpy()
    val_values = splits.val_x[:, 0, 0, 0].numpy().astype(int)
    teacher = _probs(tables["teacher"], TEST_VALUES)
    models = {"teacher": tables["teacher"], "single": tables["single"], "kd": tables["kd"]}
    models.update({f"member{m}": [t] for m, t in enumerate(tables["teacher"])})
    want = {
        key: _by_hand(_probs(t, TEST_VALUES), y, _probs(t, val_values), y_val, teacher) for key, t in models.items()
    }
    # the design holds: a teacher better than the single network, the student between them
    assert want["single"]["acc"] < want["kd"]["acc"] < want["teacher"]["acc"]
    assert 0 < want["single"]["acc"] < 1 and want["teacher"]["ece"] > 0
    for key in ("teacher", "single", "kd"):
        got = report["models"][key]["metrics"]
        for metric, value in want[key].items():
            assert got[metric] == pytest.approx(value, rel=TOL.get(metric, 1e-9), abs=1e-12), (key, metric)
    members = report["models"]["members"]
    for metric in want["teacher"]:
        per = [want[f"member{m}"][metric] for m in range(2)]
        assert members["metrics"][metric] == pytest.approx(np.mean(per), rel=TOL.get(metric, 1e-9)), metric
        assert members["std"]["metrics"][metric] == pytest.approx(np.std(per, ddof=1), rel=1e-6, abs=1e-9), metric
    assert report["models"]["teacher"]["metrics"]["agreement"] == 1.0


def test_gain_shares_equal_the_hand_formula(known):
    report, _, _ = known
    rows = {k: report["models"][k]["metrics"] for k in ("teacher", "single", "kd")}
    assert report["reference"] == "single"
    checked = 0
    for metric in ("acc", "nll", "cnll", "brier", "ece", "agreement"):
        t, b, s = rows["teacher"][metric], rows["single"][metric], rows["kd"][metric]
        sign = 1 if metric in HIGHER else -1
        assert report["teacher_gain"][metric] == pytest.approx(sign * (t - b), abs=1e-12), metric
        share = report["gain_share"]["kd"][metric]
        if sign * (t - b) > 1e-6:
            assert share == pytest.approx((s - b) / (t - b), rel=1e-9), metric
            checked += 1
        else:  # the teacher does not improve on the single network here: no share
            assert share is None, metric
    assert checked >= 4


def test_the_first_images_of_the_sorted_split_would_give_other_numbers(known):
    """The check above can tell a full-split metric from one on a prefix of the class-sorted split."""
    report, tables, splits = known
    p = _probs(tables["teacher"], TEST_VALUES)
    first = _probs(tables["teacher"], TEST_VALUES[:8])  # class 0 only
    full_acc = report["models"]["teacher"]["metrics"]["acc"]
    assert full_acc == pytest.approx(float(np.mean(p.argmax(1) == TEST_LABELS)))
    assert float(np.mean(first.argmax(1) == 0)) != pytest.approx(full_acc)
