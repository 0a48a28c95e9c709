"""The examples in examples/ run (their quick settings, in temporary folders): CI's proof that a user's own model,
an existing ensemble and a plugin work end to end. Each example asserts its own numbers (an imported teacher's
metrics equal the script's own evaluation; the ONNX file alone gives the run's accuracy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(cmd: list[str], tmp_path: Path, **env: str) -> str:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "PYTHON": sys.executable, **env}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_own_model(tmp_path):
    out = _run([sys.executable, str(EXAMPLES / "own_model.py"), str(tmp_path / "out"), "--quick"], tmp_path)
    assert "ONNX alone: test acc" in out
    assert (tmp_path / "out" / "report" / "report.md").is_file()


def test_existing_teacher(tmp_path):
    out = _run([sys.executable, str(EXAMPLES / "existing_teacher.py"), str(tmp_path / "out"), "--quick"], tmp_path)
    assert "imported teacher: acc" in out  # the script asserts equality with its own evaluation
    assert (tmp_path / "out" / "report" / "report.md").is_file()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_plugin_cli(tmp_path):
    out = _run(["bash", str(EXAMPLES / "plugin_cli.sh"), str(tmp_path / "out")], tmp_path, QUICK="1")
    assert "trained teacher acc" in out and out.rstrip().endswith(f"done: {tmp_path / 'out'}")
    assert (tmp_path / "out" / "student.onnx").is_file()
