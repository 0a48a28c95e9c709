"""The teacher under `accelerate launch` with 2 CPU processes (gloo): SDDE's double backprop under
DistributedDataParallel, synchronised replicas, and exactly one process writing checkpoints and logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_sdde_teacher(tmp_path):
    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.exists() and shutil.which("accelerate") is None:
        pytest.skip("the accelerate launcher is not installed")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        str(launcher if launcher.exists() else "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "distill",
        "teacher",
        "--recipe",
        str(ROOT / "recipes/digits_sdde.yaml"),
        "--out",
        str(out),
        "--set",
        "teacher.arch=tiny_cnn",
        "--set",
        "teacher.members=2",
        "--set",
        "teacher.train.epochs=2",
        "--set",
        "data.limit_train=512",
        "--set",
        "run.progress=false",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["replicas_in_sync"] is True
    history = summary["history"]
    assert all(h["div"] == h["div"] for h in history)  # the CAM term was computed (not NaN) every epoch
    assert history[-1]["loss"] < history[0]["loss"]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # one process logs
    assert sorted(p.name for p in out.iterdir()) == [
        "model.json",
        "model.safetensors",
        "state.safetensors",
        "summary.json",
        "tb",
    ]
    assert proc.stdout.count("summary:") == 1  # one process prints the summary
