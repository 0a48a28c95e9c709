"""`pip install .` gives a `distill` console command, the same entry point as `python -m distill`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pip_install_gives_a_distill_command(tmp_path):
    # --no-build-isolation (no network) builds with this environment's setuptools
    pytest.importorskip("setuptools", reason="the build backend is setuptools; not installed in this environment")
    src, target = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    # a copy, so the build leaves nothing (build/, *.egg-info) in the working tree
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "distill", src / "distill", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
    subprocess.run([*pip, str(src)], check=True, capture_output=True, timeout=300)
    script = target / "bin" / "distill"
    assert script.is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, str(script), "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "teacher" in out.stdout and "student" in out.stdout
    # the installed package, not this checkout, answered
    where = subprocess.run(
        [sys.executable, "-c", "import distill; print(distill.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.stdout.strip().startswith(str(target))
