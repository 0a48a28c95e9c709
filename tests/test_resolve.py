"""The up-front recipe check: every shipped recipe passes it, and it reads no data."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill import UserError
from distill.resolve import check_recipe, load_checked

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_resolves(path: Path) -> None:
    # the CIFAR recipes point at data this machine may not have: the check must not need it
    recipe = load_checked(str(path), ["data.root=/nonexistent", "data.cache_dir=/nonexistent"])
    assert check_recipe(recipe) is recipe


def test_a_heterogeneous_teacher_needs_one_arch_per_member() -> None:
    with pytest.raises(UserError, match=r"teacher\.arch.*3 names for 4 members"):
        load_checked(None, ["teacher={arch: [tiny_cnn, tiny_cnn, tiny_cnn], members: 4}"])


def test_an_unknown_member_arch_names_its_index() -> None:
    with pytest.raises(UserError, match=r"teacher\.arch\.1.*'nope'"):
        load_checked(None, ["teacher={arch: [tiny_cnn, nope], members: 2}"])
