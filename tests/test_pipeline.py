"""The whole `run` pipeline on digits with tiny epochs: teacher, single, students, report; a rerun reuses."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import main

ROOT = Path(__file__).resolve().parents[1]

# The OOD sets are named here, not taken from recipes/digits.yaml: that file names ../shared/data/notmnist, which
# the tests would load or skip (with a note) depending on the folder pytest runs in. sample_patches ships with
# scikit-learn.
OOD = "evaluate.ood=[{name: sample_patches, group: far}]"
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
    "evaluate.cost.enabled=false",  # timing and ONNX export are tested in test_student_kinds / test_export*
    OOD,
    "run.progress=false",
]
# What the tests below take as higher-is-better, written out here rather than read from distill's registry.
HIGHER = {"acc", "dee", "agreement", "acc_cov90", "acc_cov95"}


def _sets(overrides: list[str]) -> list[str]:
    return [a for s in overrides for a in ("--set", s)]


def _run_args(out: Path, overrides: list[str]) -> list[str]:
    return ["run", str(ROOT / "recipes/digits.yaml"), "--out", str(out), *_sets(overrides)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, str]:
    """One finished tiny pipeline (teacher, single, kd, confods, report) and what it printed, for the module."""
    out = tmp_path_factory.mktemp("pipeline") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(_run_args(out, TINY)) == 0
    return out, printed.getvalue()


def _higher(key: str) -> bool:
    base = key.split("/")[0].removeprefix("ood_").removeprefix("corruption_")
    return base in HIGHER or base == "auroc"


def _hand_share(student: float | None, single: float | None, teacher: float | None, key: str) -> float | None:
    """(student - single) / (teacher - single), None where a value is missing or the teacher does not improve."""
    if None in (student, single, teacher):
        return None
    gain = (teacher - single) * (1 if _higher(key) else -1)
    if gain <= 1e-6 * max(1.0, abs(teacher), abs(single)):
        return None
    return (student - single) / (teacher - single)


def check_numbers(out: Path, report: dict) -> None:
    """The report's numbers against what the runs recorded and against the gain formula by hand."""
    assert [(s["name"], s["group"]) for s in report["ood_sets"]] == [("sample_patches", "far")]
    assert not any("notmnist" in n for n in report["notes"])
    runs = {"teacher": out / "teacher", "single": out / "single"}
    runs.update({s: out / "students" / s for s in report["runs"]["students"]})
    for key, run in runs.items():  # the report's test metrics are the ones training wrote into summary.json
        trained = json.loads((run / "summary.json").read_text())["test"]
        assert report["models"][key]["metrics"]["acc"] == pytest.approx(trained["acc"], abs=1e-12), key
        assert report["summary"][key]["acc"] == report["models"][key]["metrics"]["acc"]
    rows, ref = report["summary"], report["reference"]
    assert ref == "single"
    numbers = 0
    for key, t in rows["teacher"].items():
        b = rows[ref].get(key)
        if t is None or b is None:
            assert report["teacher_gain"][key] is None, key
        else:
            assert report["teacher_gain"][key] == pytest.approx((t - b) * (1 if _higher(key) else -1), abs=1e-12)
        for s in report["runs"]["students"]:
            got, want = report["gain_share"][s][key], _hand_share(rows[s].get(key), b, t, key)
            if want is None:
                assert got is None, (s, key)
            elif got is not None:  # a share may also be withheld where the bootstrap finds the gain within noise
                assert got == pytest.approx(want, rel=1e-9), (s, key)
                numbers += 1
    assert numbers > 0  # some share was a number, and checked


def test_run_pipeline_on_digits_end_to_end(tiny_run, tmp_path, capsys):
    source, printed = tiny_run
    out = tmp_path / "demo"
    shutil.copytree(source, out)
    report = json.loads((out / "report" / "report.json").read_text())
    assert (out / "report" / "report.md").is_file()
    for name in ("kd", "confods"):
        assert (out / "students" / name / "model.safetensors").is_file()
        assert name in printed
    assert list((out / "report").glob("*.png"))
    assert list(report["runs"]["students"]) == ["kd", "confods"]
    assert report["corruptions"]["names"] == ["gaussian_noise", "contrast"] and report["cost"] is None
    check_numbers(out, report)
    # a rerun reuses every finished stage
    assert printed.count("[reuse]") == 0
    assert main(_run_args(out, TINY)) == 0 and capsys.readouterr().out.count("[reuse]") == len(_trained(out))


def _trained(out: Path, students: tuple[str, ...] | None = None) -> list[str]:
    """The training stages of a finished run (stages.json, the report left out), only these students' if given."""
    stages = [s for s in json.loads((out / "stages.json").read_text()) if s != "report"]
    return [s for s in stages if students is None or not s.startswith("student/") or s[len("student/") :] in students]


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
        OOD,
        "evaluate.corruptions=[]",
        "evaluate.diversity_images=64",
        "evaluate.cost.enabled=false",
        "run.progress=false",
    ]:
        args += ["--set", s]
    assert main(args) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    check_numbers(out, report)
    gain = report["teacher_gain"]
    assert gain["acc"] > 0 or gain["cnll"] > 0, gain
    for key in ("single", "teacher", "kd"):
        assert report["summary"][key]["ood_auroc/msp"] is not None
    assert report["figures"]["gap"] == "gap.png" and (out / "report" / "gap.png").stat().st_size > 10_000
    verdict = capsys.readouterr().out.split("verdict: ", 1)[1]
    teacher = report["intervals"]["versus"]["single"]["teacher"]
    won = [k for k in ("acc", "cnll") if teacher[k]["verdict"] == "better"]
    lo, hi = teacher["acc"]["ci"]
    assert f"{teacher['acc']['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]" in verdict, verdict  # the interval is printed
    if won:  # each student's share of each gain beyond noise, with its interval
        assert verdict.startswith("the teacher beats the single model beyond") and "kd keeps" in verdict, verdict
        share = report["intervals"]["shares"]["single"]["kd"][won[0]]
        assert f"{share['value']:.0%} [{share['ci'][0]:.0%}, {share['ci'][1]:.0%}]" in verdict
    else:  # no share of a gain the test set cannot show
        assert verdict.startswith("the teacher does not beat") and "within noise" in verdict, verdict
        assert all(report["gain_share"]["kd"][k] is None for k in ("acc", "cnll"))
    stages = json.loads((out / "stages.json").read_text())
    controls = {"control/label_smoothing", "control/self_kd"}  # the demo recipe's two
    assert set(stages) == {"teacher", "single", "student/kd", "report", *controls}
    assert all(v > 0 for v in stages.values())
    assert report["controls"]["keys"] == ["control:label_smoothing", "control:self_kd"]
    assert report["controls"]["strongest"] in report["controls"]["keys"]


def test_run_students_trains_and_reports_only_those(tiny_run, tmp_path, capsys):
    """--students on a finished run: every stage reused, the report lists the students asked for in the recipe's
    order, and a later run with fewer students reports only those."""
    out = tmp_path / "some"
    shutil.copytree(tiny_run[0], out)
    args = _run_args(out, [*TINY, "evaluate.corruptions=[]"])
    capsys.readouterr()
    assert main([*args, "--students", "confods", "--students", "kd"]) == 0
    assert capsys.readouterr().out.count("[reuse]") == len(_trained(out))
    assert sorted(p.name for p in (out / "students").iterdir()) == ["confods", "kd"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert list(report["runs"]["students"]) == ["kd", "confods"]  # the recipe's order, not the flags'
    assert report["corruptions"]["names"] == []
    check_numbers(out, report)
    # a later run with fewer students reuses the trained stages and reports only those asked for
    assert main([*args, "--students", "kd"]) == 0
    assert capsys.readouterr().out.count("[reuse]") == len(_trained(out, ("kd",))) == len(_trained(out)) - 1
    report = json.loads((out / "report" / "report.json").read_text())
    assert list(report["runs"]["students"]) == ["kd"] and list(report["gain_share"]) == ["kd"]
    check_numbers(out, report)
    # the seeds' aggregate reads the run as a user's command does: one run's numbers are the report's own
    agg = tmp_path / "agg.md"
    cmd = [sys.executable, "-m", "distill", "aggregate", str(out), "--out", str(agg), "--json", str(tmp_path / "a.j")]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    assert "| single |" in agg.read_text() and "| kd |" in agg.read_text()
    data = json.loads((tmp_path / "a.j").read_text())
    for m in ("single", "teacher", "kd"):
        assert data["models"][m]["acc"]["mean"] == report["summary"][m]["acc"] and data["models"][m]["acc"]["n"] == 1
    assert list(data["cost"]) == [m for m in report["summary"] if m in ((report["cost"] or {}).get("models") or {})]


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


def test_sdde_vs_de_script_trains_each_arm_against_one_single_network(tmp_path):
    """tools/sdde_vs_de.sh on digits at tiny size: each arm's teacher has its objective (the eval- and train-mode
    SDDE diversity pass on separate batches, DE on the same batch handling), the single network is trained once and
    reused by the next arm, a misspelt arm is refused before anything trains, and the collect step's tables pair
    the arms of one seed."""
    import os
    import subprocess
    import sys

    out = tmp_path / "runs" / "s0"
    sets = [a for s in [*TINY, "evaluate.corruptions=[]", "students=[]", "controls=[]"] for a in ("--set", s)]
    env = {**os.environ, "PYTHON": sys.executable, "RECIPE": str(ROOT / "recipes/digits.yaml"), "OMP_NUM_THREADS": "1"}
    script = [str(ROOT / "tools/sdde_vs_de.sh"), "0", str(out), *sets]
    bad = subprocess.run(script, cwd=ROOT, env={**env, "ARMS": "de sdde_evl"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "sdde_evl" in bad.stderr and not out.exists(), bad.stderr
    done = subprocess.run(
        script, cwd=ROOT, env={**env, "ARMS": "de sdde_eval sdde_train"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    objectives = {
        a: json.loads((out / a / "teacher" / "model.json").read_text())["recipe"]["teacher"]["objective"]
        for a in ("de", "sdde_eval", "sdde_train")
    }
    assert objectives["de"]["name"] == "de" and objectives["de"]["same_batch"] is False
    for arm, bn in (("sdde_eval", "eval"), ("sdde_train", "train")):
        o = objectives[arm]
        assert (o["name"], o["same_batch"], o["diversity_bn"], o["lam"]) == ("sdde", False, bn, 0.02)
    assert done.stdout.count("[reuse]") == 2  # the single network, in the two SDDE arms
    first, linked = out / "de" / "single" / "model.safetensors", out / "sdde_train" / "single" / "model.safetensors"
    assert first.stat().st_ino == linked.stat().st_ino
    res = tmp_path / "res"
    cmd = [sys.executable, "experiments/collect.py", "sdde", "--runs", str(out.parent), "--out", str(res)]
    subprocess.run(cmd, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    gap = (res / "gap.md").read_text()
    assert "## sdde_eval - de" in gap and "## sdde_train - de" in gap and "## sdde_eval - sdde_train" in gap
    headline = (res / "headline.md").read_text()  # the compact tables docs/results.md quotes
    assert "| sdde_eval - de |" in headline and "OOD by neg_mi" in headline and "| cece |" in gap
    assert (res / "s0" / "sdde_eval" / "report.json").is_file() and str(tmp_path) not in gap
