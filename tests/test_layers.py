"""The package's import direction: data -> models -> objectives -> loop -> evaluation -> report, and no
import circle between modules (imports inside functions included: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "distill"

# Each layer may import its own and lower layers only. Modules not named are the commands on top (cli,
# pipeline, resolve, reuse, train, bench, analysis), which may import anything but must not form a circle.
LAYERS: list[tuple[str, ...]] = [
    # the error type, the recipe's types, the one registry type
    ("distill", "distill.recipe", "distill.registry", "distill.runlock"),
    ("distill.data",),
    # models and what reads, writes, measures or times them
    (
        "distill.models",
        "distill.plugins",  # imports a user's file and records what it registered (archs, datasets)
        "distill.saliency",
        "distill.predict",
        "distill.checkpoint",
        "distill.jsonio",
        "distill.metrics",
        "distill.bench.timing",
        "distill.parallel",  # members spread over processes: who owns which, the gathers
        "distill.spread_teacher",  # a frozen teacher spread over processes, for a data-parallel student
    ),
    ("distill.objectives", "distill.perturb", "distill.students"),
    ("distill.loop",),
    ("distill.export", "distill.runs"),  # what the evaluation reads: exported files, trained run directories
    ("distill.report",),
]


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "distill":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "distill"}
    return found


def _graph() -> dict[str, set[str]]:
    graph = {_module(p): _imports(p) for p in PKG.rglob("*.py")}
    # `from distill.x import y` may name a module y of package x: resolve to the module when it is one
    return {m: {t for t in targets if t != m} for m, targets in graph.items()}


def _layer(module: str) -> int | None:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            inside = module == name or (name != "distill" and module.startswith(name + "."))
            if inside and (best is None or len(name) > best[1]):
                best = (i, len(name))
    return None if best is None else best[0]


def test_lower_layers_do_not_import_higher_ones():
    wrong = []
    for module, targets in _graph().items():
        mine = _layer(module)
        if mine is None:
            continue
        for t in targets:
            theirs = _layer(t)
            if theirs is None or theirs > mine:
                wrong.append(f"{module} -> {t}")
    assert not wrong, wrong


def test_no_module_imports_objectives_from_models():
    graph = _graph()
    assert not [(m, t) for m, ts in graph.items() if m.startswith("distill.models") for t in ts if "objectives" in t]


def test_no_import_circle():
    graph = _graph()
    modules = set(graph)

    def node(name: str) -> str | None:  # a package's __init__ stands for the package
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {n for t in ts if (n := node(t)) and n != m} for m, ts in graph.items()}
    # Packages import their own submodules from __init__ to register them; that is not a dependency of the
    # submodule on its package's other parts, so an edge into a package's own __init__ from inside it is dropped.
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return [*stack[stack.index(t) :], t]
            if t not in state and (cycle := visit(t)):
                return cycle
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            raise AssertionError(" -> ".join(cycle))
