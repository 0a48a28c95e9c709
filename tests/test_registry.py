"""The one generic registry (distill/registry.py) and the one place parameters are checked (the params dataclass,
its fields' ranges checked by distill.recipe.build)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from distill import UserError
from distill.recipe import POSITIVE, ints, ranged
from distill.registry import Registry

PACKAGE = Path(__file__).resolve().parent.parent / "distill"


@dataclass(frozen=True)
class ToyParams:
    lam: float = ranged(POSITIVE, 0.5)
    steps: int = ranged(ints(1, 9), 3)


def _toy() -> Registry:
    reg: Registry = Registry("toy")

    @reg.register("b", params=ToyParams, hint="get b from the shop")
    def b(params: ToyParams) -> float:
        return params.lam * params.steps

    reg.register("a", len)  # the direct form
    return reg


def test_unknown_name_lists_every_name_sorted():
    reg = _toy()
    with pytest.raises(UserError, match=r"^recipe key 'x\.name': unknown toy 'c'; expected one of: a, b$"):
        reg.lookup("c", "recipe key 'x.name'")
    with pytest.raises(UserError, match="unknown toy None"):
        reg.entry(None, "k")  # a missing name (spec.get) is the same message, not a TypeError


def test_mapping_api_and_metadata():
    reg = _toy()
    assert "b" in reg and "c" not in reg and ["x"] not in reg  # an unhashable name is just absent
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"] and len(reg) == 2  # registration order
    assert reg["a"] is len and reg.get("c") is None and dict(reg.items())["a"] is len
    assert reg.get_entry("b").hint == "get b from the shop" and reg.get_entry("a").params is None
    assert reg.lookup("b", "k")(ToyParams()) == pytest.approx(1.5)
    with pytest.raises(KeyError):
        reg["c"]  # the Mapping contract: .get and `in` rely on it


def test_register_again_replaces_and_unregister_removes():
    reg = _toy()
    reg.register("a", abs, hint="new")
    assert reg["a"] is abs and reg.get_entry("a").hint == "new" and reg.names() == ["b", "a"]
    assert reg.unregister("a").value is abs and "a" not in reg
    assert reg.unregister("a") is None  # removing what is not there is harmless (test teardowns)
    reg["z"] = min  # assignment registers without metadata
    del reg["z"]
    assert reg.names() == ["b"]


def test_snapshot_restore_keeps_metadata():
    reg = _toy()
    before = reg.snapshot()
    reg.unregister("b")
    reg.register("c", max)
    reg.restore(before)
    assert reg.names() == ["b", "a"] and reg.get_entry("b").hint == "get b from the shop"


def test_build_params_checks_keys_types_and_ranges_in_one_place():
    reg = _toy()
    assert reg.build_params("b", {"lam": 2, "steps": 9}, "x.params") == ToyParams(2.0, 9)
    assert reg.build_params("b", None, "x.params") == ToyParams()
    cases = [
        ({"lamb": 1.0}, r"recipe key 'x\.params\.lamb' is unknown; expected one of: lam, steps"),
        ({"lam": "big"}, r"recipe key 'x\.params\.lam': expected float, got 'big'"),
        ({"lam": 0.0}, r"recipe key 'x\.params\.lam': expected a finite number > 0\.0, got 0\.0"),
        ({"steps": 10}, r"recipe key 'x\.params\.steps': expected an integer in 1\.\.9, got 10"),
    ]
    for raw, message in cases:
        with pytest.raises(UserError, match=message):
            reg.build_params("b", raw, "x.params")
    assert reg.build_params("a", {}, "x.params") is None
    with pytest.raises(UserError, match=r"^x\.params: the 'a' toy takes no options, got \{'n': 1\}$"):
        reg.build_params("a", {"n": 1}, "x.params")


def test_build_params_runs_the_entrys_resolve():
    reg: Registry = Registry("toy")
    reg.register("r", object, params=ToyParams, resolve=lambda p, key: (p, key))
    assert reg.build_params("r", {"steps": 2}, "k") == (ToyParams(steps=2), "k")


def test_the_package_registries_are_registries():
    from distill.data.base import LOADERS
    from distill.data.corruptions import CORRUPTIONS
    from distill.data.corruptions.registry import PHOTO_VARIANTS
    from distill.metrics import OOD_SCORES
    from distill.metrics.registry import OOD_METRICS, REPORT_METRICS
    from distill.models import ARCHS, MODEL_KINDS
    from distill.objectives import TEACHER_OBJECTIVES
    from distill.objectives.diversity import DIVERSITY_TERMS
    from distill.perturb import DISAGREEMENT, PERTURBATIONS
    from distill.plugins import _FACTORIES
    from distill.students import READOUTS, STUDENT_KINDS

    registries = [
        LOADERS, CORRUPTIONS, PHOTO_VARIANTS, OOD_SCORES, OOD_METRICS, REPORT_METRICS, ARCHS, MODEL_KINDS,
        TEACHER_OBJECTIVES, DIVERSITY_TERMS, DISAGREEMENT, PERTURBATIONS, _FACTORIES, READOUTS, STUDENT_KINDS,
    ]  # fmt: skip
    assert all(isinstance(r, Registry) for r in registries)
    assert "small_cnn" in ARCHS and "frost" in PHOTO_VARIANTS and "sdde" in TEACHER_OBJECTIVES


def test_a_params_dataclass_checks_a_registered_names_options():
    """The perturbations' ranges (once ParamError) and the objectives' are their dataclasses' fields."""
    from distill.objectives import objective_from_recipe
    from distill.perturb import make_perturbation

    with pytest.raises(UserError, match=r"^recipe key 's\.params\.steps': expected an integer >= 1, got 0$"):
        make_perturbation("disagree", {"steps": 0}, "s")
    with pytest.raises(UserError, match=r"^recipe key 'o\.smoothing': expected a number in \[0\.0, 1\.0\), got 1\.0$"):
        objective_from_recipe({"name": "label_smoothing", "smoothing": 1.0}, "o")


@pytest.mark.parametrize(
    ("kind", "options", "key"),
    [("dirichlet", {"t_start": 0.5}, "t_start"), ("hydra", {"hinton_phase": 1.0}, "hinton_phase")],
)
def test_student_options_ranges_are_the_options_dataclass(kind, options, key):
    from distill.recipe import StudentCfg
    from distill.students import student_kind

    with pytest.raises(UserError, match=rf"^recipe key 'students\[s\]\.options\.{key}': expected "):
        student_kind(StudentCfg(name="s", kind=kind, options=options))


# names that are module-level dicts filled at run time but are no registry of names: caches and records
NOT_REGISTRIES = {
    ("runs.py", "_SPLITS"),  # a cache of loaded splits
    ("plugins.py", "_LOADED"),  # the plugins imported in this process, by path
    ("plugins.py", "_MODULES"),
}


def _hand_written_registries(path: Path) -> list[str]:
    """Module-level empty dicts filled later (``X: dict[...] = {}``) and ``def register_*`` that do not call a
    Registry's ``register``; and classes that implement a mapping themselves."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PACKAGE).as_posix()
    found = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Dict) and not node.value.keys:
            name = ast.unparse(node.target)
            if (rel, name) not in NOT_REGISTRIES:
                found.append(f"{rel}: {name} = {{}}")
        if isinstance(node, ast.FunctionDef) and node.name.startswith("register_"):
            calls = [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
            if not any(c.func.attr == "register" for c in calls):
                found.append(f"{rel}: def {node.name} without a Registry")
        if isinstance(node, ast.ClassDef) and rel != "registry.py":
            bases = {ast.unparse(b).split("[")[0].split(".")[-1] for b in node.bases}
            if bases & {"dict", "Mapping", "MutableMapping", "UserDict"}:
                found.append(f"{rel}: class {node.name} implements a mapping")
    return found


def test_there_is_one_registry_implementation():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _hand_written_registries(path)]
    assert found == []
