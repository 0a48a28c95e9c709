"""Faults (issue 16): kill -9 in every pipeline stage and resume, a diverging loss, a full or read-only disk,
two commands on one --out, and `distill run --rerun`. docs/reliability.md says what each one shows."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distill.cli import main

ROOT = Path(__file__).resolve().parents[1]

TEACHER_ONLY = """\
seed: 0
data: {name: digits, limit_train: 150, augment: true, crop_padding: 1}
teacher: {arch: tiny_cnn, members: 2, objective: {name: de}, train: {epochs: 1, batch_size: 32, optim: {lr: 0.05}}}
run: {progress: false}
"""

# Digits at full size, every stage of the pipeline, three epochs each: long enough that a kill lands inside
# a stage, short enough for CI.
PIPELINE = """\
seed: 0
data: {name: digits, augment: true, crop_padding: 1}
x-train: &train {epochs: 3, batch_size: 32, optim: {lr: 0.05}}
teacher: {arch: tiny_cnn, members: 2, objective: {name: de}, train: *train}
single: {arch: tiny_cnn, members: 1, objective: {name: de}, train: *train}
students:
  - {name: kd, arch: tiny_cnn, perturb: {name: none}, train: *train}
evaluate: {corruptions: [], ood: [], diversity_images: 32, cam_images: 4, cost: {onnx: false}}
run: {progress: false}
"""


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe, teacher run directory) trained once for the module: one tiny epoch."""
    root = tmp_path_factory.mktemp("trained")
    recipe = root / "teacher.yaml"
    recipe.write_text(TEACHER_ONLY)
    assert main(["teacher", "--recipe", str(recipe), "--out", str(root / "run")]) == 0
    return recipe, root / "run"


@pytest.fixture
def run_copy(trained, tmp_path) -> tuple[Path, Path]:
    recipe, source = trained
    shutil.copytree(source, tmp_path / "run")
    return recipe, tmp_path / "run"


# --- kill -9 at points in each stage of `distill run`, then rerun: the same report ----------------------


def _env() -> dict[str, str]:
    # one thread in every process, so that the interrupted and the straight runs compute the same floats
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(recipe: Path, out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distill", "run", str(recipe), "--out", str(out)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def _stage_done(out: Path, name: str) -> bool:
    p = out / "stages.json"
    try:
        return name in json.loads(p.read_text())
    except (OSError, ValueError):
        return False


def _report(out: Path) -> dict:
    # the run directories' paths are the only thing allowed to differ between the two --out
    report = json.loads((out / "report" / "report.json").read_text().replace(str(out), "OUT"))
    report.pop("cost", None)  # latencies: measured, so never equal between two runs
    report.pop("seconds", None)  # the report's own wall times, likewise
    return report


def _check_files(out: Path) -> None:
    """Nothing half-written is left where it would be read: JSON parses, figures decode, TensorBoard event
    files read to their end, and no temporary file of an atomic write remains."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for p in out.rglob("*.json"):
        json.loads(p.read_text())
    for p in (out / "report").glob("*.png"):
        with Image.open(p) as im:
            im.load()
    md = (out / "report" / "report.md").read_text()
    assert md.strip() and md.endswith("\n")
    events = list(out.rglob("events.out.tfevents.*"))
    assert events
    for p in events:
        list(EventFileLoader(str(p)).Load())
    assert not [p for p in out.rglob("*.tmp*")], "a temporary file of an atomic write was left"
    assert not (out / ".distill.lock").exists()


@pytest.mark.parametrize(
    "kills",
    [
        # CI: three kills (teacher, student, report), about a minute of CPU; the single model trains unkilled
        ("teacher", "student/kd", "report"),
        # every stage, the single model too: one process start (and about 10 s) more
        pytest.param(("teacher", "single", "student/kd", "report"), marks=pytest.mark.slow),
    ],
    ids=["3-kills", "4-kills"],
)
def test_pipeline_killed_in_stages_ends_with_the_same_report(tmp_path, kills):
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(PIPELINE)
    log = tmp_path / "stderr.log"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run in this process (one process start less), on one thread as the others are.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(recipe), "--out", str(straight)]) == 0
    finally:
        torch.set_num_threads(threads)

    rng = random.Random(16)
    # each kill waits for its stage's first checkpoint (the report: for the last student's end), then
    # lands at a random moment after it, inside the stage
    ready = {
        "teacher": lambda: (killed / "teacher" / "state.safetensors").is_file(),
        "single": lambda: (killed / "single" / "state.safetensors").is_file(),
        "student/kd": lambda: (killed / "students" / "kd" / "state.safetensors").is_file(),
        "report": lambda: _stage_done(killed, "student/kd"),
    }
    landed = []
    for stage in kills:
        proc = _run(recipe, killed, log)
        deadline = time.monotonic() + 300
        while not ready[stage]() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))  # a random point after the stage has started writing
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended before the kill in {stage}: {log.read_text()}"
        landed.append((stage, _stage_done(killed, stage)))
    assert not any(done for _, done in landed), f"a kill landed after its stage finished: {landed}"
    assert _run(recipe, killed, log).wait(timeout=600) == 0, log.read_text()

    assert _report(killed) == _report(straight)
    for d in ("teacher", "single", "students/kd"):
        a, b = (json.loads((o / d / "summary.json").read_text()) for o in (straight, killed))
        assert a["test"] == b["test"] and len(b["history"]) == 3, d
    _check_files(killed)


# --- a diverging loss: one line naming epoch and step; the last good checkpoint is kept ------------------


class _NaNAfter:
    """Wraps an objective so that its loss turns NaN after ``n`` calls (a learning rate that diverges)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, model, batch):
        loss, terms = self.inner(model, batch)
        self.n -= 1
        return (loss * float("nan"), terms) if self.n < 0 else (loss, terms)


def test_nan_loss_on_resume_keeps_the_last_good_checkpoint(run_copy, capsys, monkeypatch):
    import distill.train

    recipe, run = run_copy
    real = distill.train.objective_from_recipe
    monkeypatch.setattr(
        distill.train, "objective_from_recipe", lambda *a, **k: (lambda o, p: (_NaNAfter(o, 2), p))(*real(*a, **k))
    )
    kept = {k: v for k, v in digests(run).items() if not k.startswith("tb/")}
    code = main(["teacher", "--recipe", str(recipe), "--out", str(run), "--resume", "--set", "teacher.train.epochs=2"])
    line = one_line(capsys)
    assert code == 2
    assert "epoch 2, step" in line and "train.optim.lr" in line and "checkpoint of epoch 1" in line, line
    assert {k: v for k, v in digests(run).items() if not k.startswith("tb/")} == kept
    monkeypatch.setattr(distill.train, "objective_from_recipe", real)
    # and the kept checkpoint resumes
    assert (
        main(["teacher", "--recipe", str(recipe), "--out", str(run), "--resume", "--set", "teacher.train.epochs=2"])
        == 0
    )
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


# --- a full disk and a read-only --out ------------------------------------------------------------------


def test_full_disk_is_one_line_and_keeps_the_checkpoint(run_copy, capsys, monkeypatch):
    """Simulated where no filesystem can be made full: every checkpoint write fails as a full disk does."""
    import distill.checkpoint

    recipe, run = run_copy

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")  # what a write cut short leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(distill.checkpoint, "save_file", full)
    kept = {k: v for k, v in digests(run).items() if not k.startswith("tb/")}
    code = main(["teacher", "--recipe", str(recipe), "--out", str(run), "--resume", "--set", "teacher.train.epochs=2"])
    line = one_line(capsys)
    assert code == 2 and "No space left on device" in line and ".safetensors" in line, line
    assert {k: v for k, v in digests(run).items() if not k.startswith("tb/")} == kept
    assert not list(run.rglob("*.tmp"))


def _mount(*args: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small tmpfs or a read-only bind mount")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode})")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_tmpfs_is_one_line_and_keeps_the_checkpoint(trained, tmp_path, capsys):
    """A real full filesystem: a tmpfs just large enough for the trained run, then resumed for an epoch."""
    recipe, source = trained
    mnt = tmp_path / "small"
    mnt.mkdir()
    _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt))
    try:
        run = mnt / "run"
        shutil.copytree(source, run)
        used = (os.statvfs(mnt).f_blocks - os.statvfs(mnt).f_bfree) * os.statvfs(mnt).f_frsize
        # room for the TensorBoard events and small JSON, not for another checkpoint (>= 35 kB)
        _mount("-o", f"remount,size={used + 16 * 1024}", str(mnt))
        kept = {k: v for k, v in digests(run).items() if not k.startswith("tb/")}
        argv = ["teacher", "--recipe", str(recipe), "--out", str(run), "--resume", "--set", "teacher.train.epochs=2"]
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and "Traceback" not in err, err
        # TensorBoard's writer thread may warn about the full disk too; distill's own error is the last line
        assert "No space left on device" in err.splitlines()[-1], err
        assert {k: v for k, v in digests(run).items() if not k.startswith("tb/")} == kept
        assert not list(run.rglob("*.tmp"))
    finally:
        _umount(mnt)


def test_read_only_out_is_refused_before_training(trained, tmp_path, capsys):
    recipe, source = trained
    shutil.copytree(source, tmp_path / "src")
    ro = tmp_path / "ro"
    ro.mkdir()
    _mount("--bind", str(tmp_path / "src"), str(ro))
    try:
        _mount("-o", "remount,ro,bind", str(ro))
        before = digests(ro)
        argv = ["teacher", "--recipe", str(recipe), "--out", str(ro), "--resume", "--set", "teacher.train.epochs=2"]
        assert main(argv) == 2
        line = one_line(capsys)
        assert f"--out {ro}" in line and "Read-only file system" in line, line
        assert main(["export", str(ro)]) == 2  # the default target lies inside the read-only run
        line = one_line(capsys)
        assert "Read-only file system" in line and str(ro) in line, line
        assert digests(ro) == before
    finally:
        _umount(ro)


# --- two commands on one --out ----------------------------------------------------------------------------


LONG = ["--set", "teacher.train.epochs=200", "--set", "data.limit_train=null"]  # runs until it is killed


def test_second_command_on_the_same_out_refuses_while_the_first_runs(trained, tmp_path, capsys):
    recipe, _ = trained
    out = tmp_path / "shared"
    first = subprocess.Popen(
        [sys.executable, "-m", "distill", "teacher", "--recipe", str(recipe), "--out", str(out), *LONG],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        lock = out / ".distill.lock"
        deadline = time.monotonic() + 120
        while not lock.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock.is_file(), "the first command never took the lock"
        assert main(["teacher", "--recipe", str(recipe), "--out", str(out)]) == 2
        line = one_line(capsys)
        assert f"PID {first.pid}" in line and str(lock) in line, line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # the killed command's lock is stale now: it is taken over, not a reason to refuse forever
    from distill.runlock import RunLock

    assert lock.is_file()
    with RunLock(out):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_lock_of_a_dead_process_is_taken_over_and_its_temporary_files_removed(run_copy, capsys):
    from distill.runlock import LOCK_NAME

    recipe, run = run_copy
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "started": "1", "host": os.uname().nodename}))
    # what a command killed in the middle of an atomic write leaves, and a user's own file that looks alike
    (run / ".state.safetensors.k1ll3d_x.tmp").write_bytes(b"half")
    (run / ".notes.tmp").write_text("mine")
    assert main(["teacher", "--recipe", str(recipe), "--out", str(run)]) == 2  # refused for --resume, not the lock
    assert "--resume" in one_line(capsys)
    assert not (run / LOCK_NAME).exists()
    assert not (run / ".state.safetensors.k1ll3d_x.tmp").exists() and (run / ".notes.tmp").read_text() == "mine"


# --- `distill run --rerun`, and an export written atomically ------------------------------------------------


def test_rerun_moves_the_old_stage_aside_and_trains_it_again(trained, tmp_path, capsys):
    recipe, source = trained
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        recipe.read_text()
        + "students:\n  - {name: kd, arch: tiny_cnn, perturb: {name: none}, train: {epochs: 1, batch_size: 32}}\n"
        + "evaluate: {corruptions: [], ood: [], diversity_images: 16, cam_images: 2, cost: {enabled: false}}\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(source, out / "teacher")
    teacher = digests(out / "teacher")
    assert main(["run", str(pipeline), "--out", str(out)]) == 0  # the teacher is reused: same recipe section
    printed = capsys.readouterr().out
    assert f"[reuse] {out / 'teacher'}" in printed and digests(out / "teacher") == teacher
    student = digests(out / "students" / "kd")
    change = ["--set", "students.0.alpha=0.5"]
    assert main(["run", str(pipeline), "--out", str(out), *change]) == 2
    assert "students.0.alpha" in one_line(capsys)
    assert main(["run", str(pipeline), "--out", str(out), *change, "--rerun", "kd"]) == 0
    printed = capsys.readouterr().out
    assert "[rerun] student/kd" in printed and f"[reuse] {out / 'teacher'}" in printed
    assert digests(out / "students" / "kd.old") == student  # kept, not deleted
    info = json.loads((out / "students" / "kd" / "model.json").read_text())
    assert info["recipe"]["students"][0]["alpha"] == 0.5


def test_export_replaces_an_earlier_export_atomically(run_copy, monkeypatch):
    from distill.export import export

    _, run = run_copy
    path, err = export(run, "torchscript")
    assert path == run / "model.torchscript.pt" and err < 1e-5
    first = path.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(torch.jit, "load", broken)  # the export is written, then fails its check
    with pytest.raises(RuntimeError):
        export(run, "torchscript")
    assert path.read_bytes() == first and not list(run.glob(".*.tmp*"))
