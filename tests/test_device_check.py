"""tools/device_check.sh, the one command prepared for a lent GPU, runs end to end on the CPU at tiny sizes, so it
cannot rot while no GPU is available."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_tiny_runs_every_step_and_prints_the_table(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env["DISTILL_CACHE"] = str(tmp_path / "cache")
    r = subprocess.run(
        ["bash", "tools/device_check.sh", "--tiny"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    steps = (tmp_path / "out" / "steps.txt").read_text()
    assert "bench: rc 0" in steps and "cifar10_fast: rc 0" in steps, steps
    assert "spread (2 processes): rc 0" in steps, steps  # members spread over 2 CPU processes (issue 35)
    table = r.stdout[r.stdout.index("== device check") :]
    for needle in ("plain fp32 loop / best DE", "SDDE / DE, best setting", "student step / plain KD",
                   "cifar10_fast stage wall s: teacher", "teacher ", "disagree ", "members' acc",
                   "members spread over 2 processes: teacher epoch"):  # fmt: skip
        assert needle in table, (needle, table)
    stages = json.loads((tmp_path / "out" / "fast" / "stages.json").read_text())
    assert set(stages) == {"teacher", "single", "student/kd", "student/confods", "student/disagree", "report"}
    env_json = json.loads((tmp_path / "out" / "env.json").read_text())
    assert env_json["torch"] and "gpu" in env_json
