"""The house rules the code keeps, checked so that they stay kept: no function in the package over 60 lines (a
comment ``# long: <why>`` on its ``def`` line exempts one, saying why), and no function over McCabe complexity 12
(``pyproject.toml``'s ruff setting, run here so that ``make test`` enforces it, not only ``make lint``)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def _long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES and "# long:" not in lines[node.lineno - 1]:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_the_package_is_over_60_lines():
    assert _long_functions(ROOT / "distill") == []


def test_the_length_check_catches_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n\n\ndef g():  # long: a table\n{body}\n")
    assert [r.split(" ")[1] for r in _long_functions(tmp_path)] == ["f"]


def test_no_function_is_over_complexity_12():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed beside this python")
    config = (ROOT / "pyproject.toml").read_text()
    assert "max-complexity = 12" in config and '"C901"' in config
    proc = subprocess.run(
        [ruff, "check", "--select", "C901", "distill", "tools"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
