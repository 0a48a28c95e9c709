"""The whole `run` pipeline on digits with tiny epochs: teacher, single, students, report; a rerun reuses."""

from __future__ import annotations

import json
import subprocess
import sys
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
    for name in ("kd", "confods"):
        assert (out / "students" / name / "model.safetensors").is_file()
        assert name in printed
    assert list((out / "report").glob("*.png"))
    assert report
    # a rerun reuses every finished stage
    assert main(args) == 0
    assert printed.count("[reuse]") == 0 and capsys.readouterr().out.count("[reuse]") == 4


def test_demo_recipe_shows_a_teacher_gain_a_student_share_and_ood(tmp_path, capsys):
    """The demo's recipe, shortened (8 epochs, one student, no corruption sweep): the teacher beats the single
    network on acc or cNLL, the OOD columns come from the set that ships with scikit-learn, the gap figure is
    drawn and the last printed line names a student and its share."""
    out = tmp_path / "demo"
    args = ["run", str(ROOT / "recipes/digits.yaml"), "--out", str(out)]
    for s in [
        "teacher.train.epochs=8",
        "single.train.epochs=8",
        "students=[{name: kd, arch: small_cnn, alpha: 0.9, temperature: 4.0, perturb: {name: none}, "
        "train: {epochs: 8, batch_size: 64, optim: {lr: 0.05}}}]",
        "evaluate.ood=[{name: sample_patches, group: far}]",
        "evaluate.corruptions=[]",
        "evaluate.diversity_images=64",
        "run.progress=false",
    ]:
        args += ["--set", s]
    assert main(args) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    gain = report["teacher_gain"]
    assert gain["acc"] > 0 or gain["cnll"] > 0, gain
    assert [s["name"] for s in report["ood_sets"]] == ["sample_patches"]
    for key in ("single", "teacher", "kd"):
        assert report["summary"][key]["ood_auroc/msp"] is not None
    assert report["figures"]["gap"] == "gap.png" and (out / "report" / "gap.png").stat().st_size > 10_000
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("verdict: the teacher beats the single model") and "'kd' keeps" in last, last
    assert any((v or 0) > 0 for k, v in report["gain_share"]["kd"].items() if k in ("acc", "cnll"))
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == {"teacher", "single", "student/kd", "report"} and all(v > 0 for v in stages.values())


def test_run_students_trains_and_reports_only_those(tmp_path, capsys):
    out = tmp_path / "some"
    args = ["run", str(ROOT / "recipes/digits.yaml"), "--out", str(out)]
    for s in [*TINY, "evaluate.corruptions=[]"]:
        args += ["--set", s]
    assert main([*args, "--students", "confods", "--students", "kd"]) == 0
    assert sorted(p.name for p in (out / "students").iterdir()) == ["confods", "kd"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert list(report["runs"]["students"]) == ["kd", "confods"]  # the recipe's order, not the flags'
    # a later run with fewer students reuses the trained stages and reports only those asked for
    capsys.readouterr()
    assert main([*args, "--students", "kd"]) == 0
    assert capsys.readouterr().out.count("[reuse]") == 3
    assert list(json.loads((out / "report" / "report.json").read_text())["runs"]["students"]) == ["kd"]
    # the seeds' aggregate reads the run as a user's command does; --cost times every model of the report
    agg = tmp_path / "agg.md"
    cmd = [sys.executable, str(ROOT / "tools/aggregate_reports.py"), str(out), "--out", str(agg), "--cost"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    text = agg.read_text()
    assert "| single |" in text and "| kd |" in text and "Parameters and CPU latency" in text
    rows = [line.split(" | ") for line in text.split("Parameters and CPU latency", 1)[1].splitlines()]
    cost = {r[0][2:]: r[1:] for r in rows if r[0].startswith("| ") and r[0] != "| model"}
    assert list(cost) == ["single", "teacher", "kd"]  # every model of the report, each with its numbers
    assert all(float(c[1]) > 0 and float(c[2].rstrip(" |")) > 0 for c in cost.values())


def test_cifar10_cpu_script_runs_named_students_and_the_sdde_teacher(tmp_path):
    """tools/cifar10_cpu.sh on digits at tiny size: only $STUDENTS train, SDDE=1 adds an SDDE teacher that
    is reported against the same single network, and a changed recipe is refused rather than reused."""
    import os
    import subprocess
    import sys

    out = tmp_path / "c"
    sets = [a for s in [*TINY, "evaluate.corruptions=[]"] for a in ("--set", s)]
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "RECIPE": str(ROOT / "recipes/digits.yaml"),
        "STUDENTS": "kd",
        "SDDE": "1",
        "OMP_NUM_THREADS": "1",
    }
    script = [str(ROOT / "tools/cifar10_cpu.sh"), "0", str(out), *sets]
    done = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "students").iterdir()) == ["kd"]
    sdde = json.loads((out / "sdde" / "teacher" / "model.json").read_text())
    assert sdde["recipe"]["teacher"]["objective"]["name"] == "sdde"
    report = json.loads((out / "sdde" / "report" / "report.json").read_text())
    assert list(report["runs"]["students"]) == ["kd"] and report["runs"]["single"].endswith("sdde/single")
    alone = subprocess.run(script, cwd=ROOT, env={**env, "SDDE_STUDENTS": ""}, capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr  # set and empty: the SDDE teacher (reused) and its report only
    report = json.loads((out / "sdde" / "report" / "report.json").read_text())
    assert report["runs"]["students"] == {} and report["runs"]["teacher"].endswith("sdde/teacher")
    stale = subprocess.run(
        [*script, "--set", "students.0.alpha=0.5"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert stale.returncode == 2 and "students.0.alpha" in stale.stderr, stale.stderr


def _aggregate_tool():
    """tools/aggregate_reports.py as a module (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("aggregate_reports", ROOT / "tools/aggregate_reports.py")
    agg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agg)
    return agg


def test_aggregate_marks_values_that_not_every_run_has():
    """A student trained in one seed of three must not read as a mean over seeds."""
    agg = _aggregate_tool()
    assert agg.cell([0.5, 0.7]) == "0.6000 ± 0.1414"
    assert agg.cell([0.5, None, None]) == "0.5000 (1 of 3 runs)"
    assert agg.cell([0.5, 0.7, None], 2) == "0.60 ± 0.14 (2 of 3 runs)"
    assert agg.cell([None, None]) == "-"
    assert agg.union([["kd", "be4"], ["kd", "ods"]]) == ["kd", "be4", "ods"]


def test_aggregate_cost_table_with_a_student_missing_from_a_later_run():
    agg = _aggregate_tool()

    def report(students: list[str]) -> dict:
        models = ["single", "teacher", *students]
        return {
            "config": {"ood_scores": ["msp"]},
            "summary": {m: {"aurc": 0.1} for m in models},
            "gain_share": {s: {"acc": 0.5} for s in students},
            "cost": {"models": {m: {"relative": {"flops_per_image": 1.0}} for m in models}},
        }

    lines = agg._issue14_tables([report(["kd", "mixup"]), report(["kd"])], ["single", "teacher", "kd", "mixup"])
    mixup = [line for line in lines if line.startswith("| mixup |") and "1.00" in line]
    assert mixup and "(1 of 2 runs)" in mixup[0]
