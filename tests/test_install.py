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


def _copy_source(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md", "Makefile"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "distill", dest / "distill", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_pip_install_editable_imports_from_the_checkout(tmp_path):
    """`pip install -e .` (what `make` runs) into a throwaway venv that sees this environment's packages."""
    pytest.importorskip("setuptools", reason="the build backend is setuptools; not installed in this environment")
    import site

    src = _copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    packages = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # this environment's torch, setuptools, ...: nothing is downloaded
    Path(packages, "zz_this_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "-e", str(src)], check=True, capture_output=True, timeout=300)
    # editable: a module added to the checkout afterwards imports, from another folder
    (src / "distill" / "added_later.py").write_text("VALUE = 41 + 1\n")
    code = "import distill, distill.added_later as a; print(distill.__file__, a.VALUE)"
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(src / "distill" / "__init__.py"), "42"]
    assert (venv / "bin" / "distill").is_file()


def _make_plan(src: Path, venv: Path) -> str:
    out = subprocess.run(
        ["make", "-n", "install", f"VENV={venv}"], cwd=src, capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def _stamp(plan: str) -> Path:
    (touch,) = [line for line in plan.splitlines() if "touch " in line]
    return Path(touch.split("touch ")[-1].strip())


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_installs_once_and_again_when_requirements_or_pyproject_change(tmp_path):
    src = _copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    plan = _make_plan(src, venv)
    assert "-r requirements.txt" in plan and "-e ." in plan  # the requirements, then this package, editable
    assert plan.index("-r requirements.txt") < plan.index("-e .")
    stamp = _stamp(plan)
    stamp.parent.mkdir(parents=True)
    stamp.touch()  # what a finished install leaves
    assert "pip" not in _make_plan(src, venv)  # a second make does nothing
    seen = {stamp.name}
    for name in ("pyproject.toml", "requirements.txt"):
        with open(src / name, "a") as f:
            f.write("\n# changed\n")
        plan = _make_plan(src, venv)
        assert "-e ." in plan, f"editing {name} must install again"
        seen.add(_stamp(plan).name)
    assert len(seen) == 3  # each content names its own stamp
