"""The whole `run` pipeline on digits with tiny epochs: teacher, single, students, report; a rerun reuses."""

from __future__ import annotations

import json
from pathlib import Path

from distill.cli import main

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "data.limit_train=256",
    "teacher.arch=tiny_cnn",
    "teacher.members=2",
    "teacher.train.epochs=1",
    "single.arch=tiny_cnn",
    "single.train.epochs=1",
    "students.*.arch=tiny_cnn",
    "students.*.train.epochs=1",
    "evaluate.corruptions=[gaussian_noise,contrast]",
    "evaluate.severities=[1,5]",
    "evaluate.corruption_limit=100",
    "evaluate.diversity_images=64",
    "run.progress=false",
]


def test_run_pipeline_on_digits_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["run", str(ROOT / "recipes/digits.yaml"), "--out", str(out)]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report" / "report.json").read_text())
    assert (out / "report" / "report.md").is_file()
    for name in ("kd", "confods", "disagree"):
        assert (out / "students" / name / "model.safetensors").is_file()
        assert name in printed
    assert list((out / "report").glob("*.png"))
    assert report
    # a rerun reuses every finished stage
    assert main(args) == 0
    assert printed.count("[reuse]") == 0 and capsys.readouterr().out.count("[reuse]") == 5
