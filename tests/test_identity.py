"""One "same data" check (distill.data.identity) for students and reports: another split seed, another
dataset of the same shape or another training subset is refused; equal data passes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from distill import UserError
from distill.checks import check_teacher_matches
from distill.data import load_splits
from distill.data.identity import data_differences
from distill.recipe import DataCfg, to_dict

DATA = DataCfg(name="digits", limit_train=600)


@pytest.fixture(scope="module")
def teacher_info() -> dict:
    splits = load_splits(DATA)
    return {"meta": splits.meta.to_json(), "recipe": {"data": to_dict(DATA)}}


def test_the_same_data_has_no_differences(teacher_info):
    ref = {"meta": teacher_info["meta"], "data": teacher_info["recipe"]["data"]}
    assert data_differences(ref, copy.deepcopy(ref)) == []
    check_teacher_matches(teacher_info, load_splits(DATA), DATA, Path("t"))


def test_normalisation_within_round_off_is_the_same_data(teacher_info):
    ref = {"meta": teacher_info["meta"], "data": teacher_info["recipe"]["data"]}
    other = copy.deepcopy(ref)
    other["meta"]["mean"] = [m * (1 + 1e-7) for m in other["meta"]["mean"]]
    assert data_differences(ref, other) == []
    other["meta"]["std"] = [s * 1.01 for s in other["meta"]["std"]]
    assert [d.split()[0] for d in data_differences(ref, other)] == ["meta.std"]


def test_a_student_on_another_split_seed_is_refused_before_loading_data(teacher_info):
    moved = DataCfg(name="digits", limit_train=600, split_seed=1)
    # splits=None: the recipe's cut alone, the check train_student makes before any data is loaded
    expected = r"^--teacher t: trained on other data: data.split_seed 0 \(teacher\) vs 1 \(recipe's data\)$"
    with pytest.raises(UserError, match=expected):
        check_teacher_matches(teacher_info, None, moved, Path("t"))


def test_another_dataset_of_the_same_shape_is_refused(teacher_info):
    # an SVHN-style mix-up: same classes, channels and size, another dataset
    splits = load_splits(DATA)
    other = copy.deepcopy(teacher_info)
    other["meta"]["name"] = "svhn"
    with pytest.raises(UserError, match=r"meta.name svhn \(teacher\) vs digits \(recipe's data\)"):
        check_teacher_matches(other, splits, DATA, Path("t"))


def test_another_training_subset_is_refused(teacher_info):
    smaller = DataCfg(name="digits", limit_train=500)
    with pytest.raises(UserError, match=r"data.limit_train 600 \(teacher\) vs 500") as err:
        check_teacher_matches(teacher_info, load_splits(smaller), smaller, Path("t"))
    assert "meta.subset" in str(err.value) and "meta.mean" in str(err.value)
