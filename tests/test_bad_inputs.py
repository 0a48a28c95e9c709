"""The bad-input corpus (issue 16): every malformed input a hostile but fair user might give the CLI.

Each case runs ``distill.cli.main`` in-process on a fresh copy of one trained pipeline run (teacher, one
student, report) and asserts what docs/reliability.md promises: exit code 2, exactly one stderr line that
names the field, file or flag, no traceback, and every file of the run directory byte-for-byte unchanged
(no file added or removed either). Cases that would run pickled code also check it did not run.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main

PIPELINE = """\
seed: 0
data: {name: digits, limit_train: 150, augment: false}
x-train: &train {epochs: 1, batch_size: 32, optim: {lr: 0.05}}
teacher: {arch: tiny_cnn, members: 2, objective: {name: de}, train: *train}
students:
  - {name: kd, arch: tiny_cnn, perturb: {name: none}, train: *train}
evaluate: {corruptions: [], ood: [], diversity_images: 32, cam_images: 4, cost: {enabled: false}}
run: {progress: false}
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe, run directory) of one finished tiny pipeline, built once for the module."""
    root = tmp_path_factory.mktemp("prepared")
    recipe = root / "tiny.yaml"
    recipe.write_text(PIPELINE)
    run = root / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 0
    assert (run / "teacher" / "model.safetensors").is_file() and (run / "report" / "report.json").is_file()
    return recipe, run


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- helpers that prepare a case's inputs ------------------------------------------------------------


MARKER = "pickle-ran"  # a malicious pickle below would create this file in the scratch folder


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what an attacker's pickle does: call os.system when loaded
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"data": _Evil(marker), "labels": [0]}, protocol=2)


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write_mnist(root: Path, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> None:
    """A small valid t10k IDX pair (200 images of 10 classes), gzipped, optionally replacing a part."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = images if images is not None else rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    y = labels if labels is not None else (np.arange(200) % 10).astype(np.uint8)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))


def idx_truncated_gz(run: Path, s: Path) -> None:
    write_mnist(s / "idx")
    p = s / "idx" / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def idx_not_gzip(run: Path, s: Path) -> None:
    write_mnist(s / "idx")
    x = np.zeros((200, 28, 28), np.uint8)
    (s / "idx" / "t10k-images-idx3-ubyte.gz").write_bytes(idx_bytes(x))  # .gz name, plain content


def idx_label_out_of_range(run: Path, s: Path) -> None:
    y = (np.arange(200) % 10).astype(np.uint8)
    y[17] = 200
    write_mnist(s / "idx", labels=y)


def idx_bad_magic(run: Path, s: Path) -> None:
    write_mnist(s / "idx")
    (s / "idx" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x1f\x8b not idx at all" * 4))


def idx_short_body(run: Path, s: Path) -> None:
    write_mnist(s / "idx")
    x = idx_bytes(np.zeros((200, 28, 28), np.uint8))
    (s / "idx" / "t10k-images-idx3-ubyte.gz").unlink()
    (s / "idx" / "t10k-images-idx3-ubyte").write_bytes(x[:-1000])  # uncompressed, cut short


def idx_count_mismatch(run: Path, s: Path) -> None:
    write_mnist(s / "idx", labels=(np.arange(150) % 10).astype(np.uint8))


def idx_float_images(run: Path, s: Path) -> None:
    write_mnist(s / "idx", images=np.zeros((200, 28, 28), ">f4"))


def cifar_evil(run: Path, s: Path) -> None:
    d = s / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in ("data_batch_1", "test_batch"):
        (d / name).write_bytes(evil_pickle(s / MARKER))


def garbage_archive(run: Path, s: Path) -> None:
    (s / "cifar10.tar.gz").write_bytes(np.random.default_rng(0).bytes(4096))


def recipe_file(text: str | bytes) -> Callable[[Path, Path], None]:
    def prep(run: Path, s: Path) -> None:
        p = s / "bad.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())

    return prep


def edit_json(rel: str, change: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def prep(run: Path, s: Path) -> None:
        p = run / rel
        p.write_text(json.dumps(change(json.loads(p.read_text()))))

    return prep


def _drop(d: dict, key: str) -> dict:
    d.pop(key)
    return d


def _with(d: dict, key: str, value: object) -> dict:
    d[key] = value
    return d


def _meta_without_channels(d: dict) -> dict:
    del d["meta"]["channels"]
    return d


def raw_write(rel: str, data: Callable[[Path, Path], bytes]) -> Callable[[Path, Path], None]:
    def prep(run: Path, s: Path) -> None:
        (run / rel).write_bytes(data(run, s))

    return prep


def truncated(rel: str) -> Callable[[Path, Path], None]:
    return raw_write(rel, lambda run, s: (run / rel).read_bytes()[:100])


def random_bytes(rel: str) -> Callable[[Path, Path], None]:
    return raw_write(rel, lambda run, s: np.random.default_rng(1).bytes(5000))


def pickled(rel: str) -> Callable[[Path, Path], None]:
    return raw_write(rel, lambda run, s: evil_pickle(s / MARKER))


def lock_held(run: Path, s: Path) -> None:
    from distill.runlock import LOCK_NAME, _start_time

    owner = os.getppid()  # a live process that is not this one (the shell or runner that started pytest)
    (run / "teacher" / LOCK_NAME).write_text(json.dumps({"pid": owner, "started": _start_time(owner), "host": _host()}))


def _host() -> str:
    import socket

    return socket.gethostname()


def a_file(rel: str) -> Callable[[Path, Path], None]:
    def prep(run: Path, s: Path) -> None:
        (s / rel).parent.mkdir(parents=True, exist_ok=True)
        (s / rel).write_text("not a directory\n")

    return prep


# --- the corpus -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # {recipe} {run} {teacher} {s} (a scratch folder outside the run) are filled in
    names: tuple[str, ...]  # each must appear in the one stderr line
    prepare: Callable[[Path, Path], None] | None = None


TEACHER = ("teacher", "--recipe", "{recipe}", "--out", "{teacher}", "--resume")  # aimed at the trained run
FRESH = ("teacher", "--recipe", "{recipe}", "--out", "{s}/new")
STUDENT = ("student", "--recipe", "{recipe}", "--teacher", "{teacher}", "--out", "{s}/student")
RUN = ("run", "{recipe}", "--out", "{run}")
EXPORT = ("export", "{teacher}")
IMPORT = ("import-teacher", "--recipe", "{recipe}")
MNIST = ("--set", "data.name=mnist", "--set", "data.root={s}/idx")


def sets(*overrides: str) -> tuple[str, ...]:
    return tuple(a for o in overrides for a in ("--set", o))


def ranged(key: str, value: str, named: str | None = None, kind: str = "range") -> Case:
    return Case(f"{kind}:{key}={value}", TEACHER + sets(f"{key}={value}"), (named or key,))


def typed(key: str, value: str, named: str | None = None) -> Case:
    return ranged(key, value, named, kind="type")


CASES = [
    # out-of-range values: named by their dotted key, refused before any data is read
    ranged("teacher.train.batch_size", "0"),
    ranged("teacher.train.batch_size", "-8"),
    ranged("teacher.train.optim.lr", "-0.1"),
    ranged("teacher.train.optim.lr", "0"),
    ranged("teacher.train.optim.lr", ".nan"),
    ranged("teacher.train.optim.lr", ".inf"),
    ranged("teacher.members", "0"),
    ranged("teacher.train.grad_accum", "0"),
    ranged("data.val_fraction", "1.5"),
    ranged("data.val_fraction", "-0.1"),
    ranged("data.test_fraction", "1.0"),
    ranged("data.limit_train", "0"),
    ranged("teacher.train.epochs", "0"),
    ranged("teacher.train.epochs", "-1"),
    ranged("teacher.train.optim.momentum", "1.5"),
    ranged("teacher.train.optim.weight_decay", "-1.0"),
    ranged("teacher.train.schedule.warmup_epochs", "-1.0"),
    ranged("teacher.train.schedule.milestones", "[0.5,2.0]", "teacher.train.schedule.milestones[1]"),
    ranged("data.crop_padding", "-1"),
    ranged("students.0.alpha", "1.5", "students[0].alpha"),
    ranged("students.0.temperature", "0.0", "students[0].temperature"),
    ranged("evaluate.severities", "[0,6]", "evaluate.severities[0]"),
    ranged("run.log_every", "0"),
    ranged("teacher.trajectory_images", "0"),
    ranged("data.holdout_classes", "[42]"),
    # wrong types, unknown keys and names (handled before issue 16; kept covered)
    typed("teacher.train.optim.lr", "1e-3"),  # YAML 1.1 reads it as text
    typed("teacher.train.epochs", "three"),
    Case("type:unknown-key", TEACHER + sets("teacher.membres=3"), ("teacher.membres",)),
    typed("data.name", "imagenet"),
    typed("teacher.arch", "resnet99", "arch"),
    typed("teacher.train.schedule.name", "exp"),
    typed("teacher.train.optim.name", "rmsprop"),
    typed("data.augment", "maybe"),
    typed("teacher.objective", "{name: nope}", "teacher.objective"),
    typed("teacher.arch", "[tiny_cnn,tiny_cnn,tiny_cnn]", "arch"),
    # --set syntax
    Case("set:no-equals", (*TEACHER, "--set", "nonsense"), ("KEY=VALUE",)),
    Case("set:bad-yaml", TEACHER + sets("teacher.train.epochs=[1"), ("--set teacher.train.epochs",)),
    Case("set:not-a-section", TEACHER + sets("teacher.train.epochs.x=1"), ("teacher.train.epochs",)),
    Case("set:bad-index", TEACHER + sets("students.9.arch=tiny_cnn"), ("students.9",)),
    # an anchor block is expanded when the YAML is read: setting it would silently change nothing
    Case("set:anchor-block", TEACHER + sets("x-train.epochs=1"), ("--set x-train.epochs", "anchor")),
    # names resolved by registries: refused by the up-front check (distill/resolve.py) before the teacher trains,
    # whatever stage the key belongs to (FRESH would train a new teacher if they got through)
    Case("late:objective-param", FRESH + sets("teacher.objective.lamm=1"), ("teacher.objective.lamm",)),
    Case(
        "late:perturb-param",
        FRESH + sets("students.0.perturb.name=ods", "students.0.perturb.params.stepz=1"),
        ("students.0.perturb.params.stepz",),
    ),
    Case("late:perturb-name", FRESH + sets("students.0.perturb.name=confodz"), ("students.0.perturb.name", "confodz")),
    Case("late:student-arch", FRESH + sets("students.0.arch=resnet_typo"), ("students.0.arch", "resnet_typo")),
    Case("late:student-kind-option", FRESH + sets("students.0.options={heads: 2}"), ("students[kd].options",)),
    Case("late:ood-score", FRESH + sets("evaluate.ood_scores=[msp, maxlogit]"), ("evaluate.ood_scores", "maxlogit")),
    Case("late:ood-dataset", FRESH + sets("evaluate.ood=[{name: nomnist}]"), ("evaluate.ood.0.name", "nomnist")),
    Case("late:corruption", FRESH + sets("evaluate.corruptions=[fogg]"), ("evaluate.corruptions", "fogg")),
    Case("late:severity", FRESH + sets("evaluate.severities=[9]"), ("evaluate.severities",)),
    Case(
        "late:diversity-term",
        FRESH + sets("teacher.objective={diversity: [{name: cam}, {name: nlc}]}"),
        ("teacher.objective.diversity.1.name", "'nlc'", "ncl"),
    ),
    Case(
        "late:diversity-param",
        FRESH + sets("teacher.objective={diversity: [{name: cam, lamm: 1}]}"),
        ("teacher.objective.diversity.0.lamm",),
    ),
    Case(
        "late:duplicate-student",
        FRESH + sets("students=[{name: kd, arch: tiny_cnn}, {name: kd, arch: tiny_cnn}]"),
        ("students.1.name", "'kd'"),
    ),
    Case("set:duplicate-key", TEACHER + sets("teacher.objective={name: de, name: sdde}"), ("--set", "'name'")),
    # recipe files
    Case("recipe:missing", ("teacher", "--recipe", "{s}/nope.yaml", "--out", "{teacher}"), ("nope.yaml",)),
    Case("recipe:is-a-directory", ("teacher", "--recipe", "{s}", "--out", "{teacher}"), ("--recipe",)),
    Case(
        "recipe:malformed",
        ("teacher", "--recipe", "{s}/bad.yaml", "--out", "{teacher}"),
        ("bad.yaml",),
        recipe_file("teacher: [1, 2\n"),
    ),
    Case(
        "recipe:top-level-list",
        ("teacher", "--recipe", "{s}/bad.yaml", "--out", "{teacher}"),
        ("bad.yaml", "mapping"),
        recipe_file("- teacher\n- single\n"),
    ),
    Case(
        "recipe:duplicate-nested-key",
        ("teacher", "--recipe", "{s}/bad.yaml", "--out", "{teacher}"),
        ("bad.yaml", "line 5", "'epochs'"),
        recipe_file("seed: 0\nteacher:\n  train:\n    epochs: 3\n    epochs: 30\n"),
    ),
    Case(
        "recipe:duplicate-top-key",
        ("teacher", "--recipe", "{s}/bad.yaml", "--out", "{teacher}"),
        ("bad.yaml", "line 3", "'seed'"),
        recipe_file("seed: 0\nteacher: {arch: tiny_cnn}\nseed: 1\n"),
    ),
    Case(
        "recipe:unknown-top-key",
        ("teacher", "--recipe", "{s}/bad.yaml", "--out", "{teacher}"),
        ("teachr",),
        recipe_file("teachr: {arch: tiny_cnn}\n"),
    ),
    Case(
        "recipe:binary",
        ("teacher", "--recipe", "{s}/bad.yaml", "--out", "{teacher}"),
        ("bad.yaml",),
        recipe_file(b"\xff\xfe\x00\x81garbage\x00" * 20),
    ),
    Case(
        "recipe:python-tag",
        ("teacher", "--recipe", "{s}/bad.yaml", "--out", "{teacher}"),
        ("bad.yaml",),
        lambda run, s: recipe_file(f"seed: !!python/object/apply:os.system ['touch {s / MARKER}']\n")(run, s),
    ),
    Case(
        "recipe:no-teacher-section",
        ("teacher", "--recipe", "{s}/bad.yaml", "--out", "{s}/new"),
        ("'teacher'",),
        recipe_file("seed: 0\n"),
    ),
    # data files
    Case("data:mnist-missing", TEACHER + MNIST, ("idx",)),
    Case("data:idx-truncated-gz", TEACHER + MNIST, ("t10k-images-idx3-ubyte.gz", "truncated"), idx_truncated_gz),
    Case("data:idx-not-gzip", TEACHER + MNIST, ("t10k-images-idx3-ubyte.gz", "gzip"), idx_not_gzip),
    Case("data:idx-label-200", TEACHER + MNIST, ("t10k-labels-idx1-ubyte.gz", "label 200"), idx_label_out_of_range),
    Case("data:idx-bad-magic", TEACHER + MNIST, ("t10k-labels-idx1-ubyte.gz",), idx_bad_magic),
    Case("data:idx-short-body", TEACHER + MNIST, ("t10k-images-idx3-ubyte", "shape"), idx_short_body),
    Case("data:idx-count-mismatch", TEACHER + MNIST, ("t10k-labels-idx1-ubyte.gz", "labels"), idx_count_mismatch),
    Case("data:idx-float-images", TEACHER + MNIST, ("t10k-images-idx3-ubyte.gz", "uint8"), idx_float_images),
    Case(
        "data:cifar-malicious-pickle",
        TEACHER + sets("data.name=cifar10", "data.root={s}/cifar"),
        ("data_batch_1",),
        cifar_evil,
    ),
    Case(
        "data:garbage-archive",
        TEACHER + sets("data.name=cifar10", "data.root={s}/cifar10.tar.gz"),
        ("cifar10.tar.gz",),
        garbage_archive,
    ),
    Case("data:imagefolder-missing", TEACHER + sets("data.name=imagefolder", "data.root={s}/nowhere"), ("nowhere",)),
    # --out
    Case("out:existing-file", ("teacher", "--recipe", "{recipe}", "--out", "{teacher}/summary.json"), ("--out",)),
    Case("out:below-a-file", ("teacher", "--recipe", "{recipe}", "--out", "{teacher}/model.json/x"), ("--out",)),
    Case("out:run-without-resume", ("teacher", "--recipe", "{recipe}", "--out", "{teacher}"), ("--out", "--resume")),
    Case("out:locked", TEACHER, ("--out", "PID", ".distill.lock"), lock_held),
    Case("out:evaluate-to-a-file", ("evaluate", "--teacher", "{teacher}", "--out", "{teacher}/model.json"), ("--out",)),
    Case("out:bench-to-a-file", ("bench", "--quick", "--out", "{s}/f.txt"), ("--out",), a_file("f.txt")),
    # `distill run` on an --out made by another recipe
    Case("run:other-epochs", RUN + sets("teacher.train.epochs=2"), ("teacher.train.epochs", "--rerun")),
    Case("run:other-student", RUN + sets("students.0.alpha=0.5"), ("students.0.alpha", "--rerun student/kd")),
    Case("run:other-split", RUN + sets("data.split_seed=1"), ("data.split_seed", "--out")),
    Case("run:other-seed", RUN + sets("seed=1"), ("'seed'",)),
    Case("run:other-arch", RUN + sets("teacher.arch=small_cnn"), ("teacher.arch",)),
    Case("run:rerun-unknown", (*RUN, "--rerun", "nope"), ("--rerun nope",)),
    Case("run:students-unknown", (*RUN, "--students", "nope"), ("--students nope", "expected one of")),
    Case("run:no-teacher", ("run", "{s}/bad.yaml", "--out", "{run}"), ("'teacher'",), recipe_file("seed: 0\n")),
    # model.json, model.safetensors and state.safetensors of the run
    Case(
        "ckpt:model-json-list",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.json",),
        edit_json("teacher/model.json", lambda d: [d]),
    ),
    Case(
        "ckpt:model-json-garbage",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.json",),
        raw_write("teacher/model.json", lambda r, s: b"{nope"),
    ),
    Case("ckpt:model-json-binary", (*EXPORT, "--out", "{s}/m.pt"), ("model.json",), random_bytes("teacher/model.json")),
    Case(
        "ckpt:no-spec",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.json", "spec"),
        edit_json("teacher/model.json", lambda d: _drop(d, "spec")),
    ),
    Case(
        "ckpt:spec-string",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.json", "spec"),
        edit_json("teacher/model.json", lambda d: _with(d, "spec", "x")),
    ),
    Case(
        "ckpt:spec-kind",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.json", "kind"),
        edit_json("teacher/model.json", lambda d: _with(d, "spec", {"kind": "nope"})),
    ),
    Case(
        "ckpt:spec-no-archs",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.json",),
        edit_json("teacher/model.json", lambda d: _with(d, "spec", {"kind": "ensemble"})),
    ),
    Case(
        "ckpt:meta-no-channels",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.json", "channels"),
        edit_json("teacher/model.json", _meta_without_channels),
    ),
    Case(
        "ckpt:meta-string",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.json", "meta"),
        edit_json("teacher/model.json", lambda d: _with(d, "meta", "x")),
    ),
    Case(
        "ckpt:model-truncated",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.safetensors",),
        truncated("teacher/model.safetensors"),
    ),
    Case(
        "ckpt:model-random",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.safetensors",),
        random_bytes("teacher/model.safetensors"),
    ),
    Case(
        "ckpt:model-pickle",
        (*EXPORT, "--out", "{s}/m.pt"),
        ("model.safetensors",),
        pickled("teacher/model.safetensors"),
    ),
    Case(
        "ckpt:state-truncated",
        TEACHER + sets("teacher.train.epochs=2"),
        ("state.safetensors",),
        truncated("teacher/state.safetensors"),
    ),
    Case(
        "ckpt:state-pickle",
        TEACHER + sets("teacher.train.epochs=2"),
        ("state.safetensors",),
        pickled("teacher/state.safetensors"),
    ),
    Case(
        "ckpt:resume-other-arch",
        TEACHER + sets("teacher.arch=small_cnn", "teacher.train.epochs=2"),
        ("state.safetensors", "architecture"),
    ),
    Case("ckpt:teacher-model-pickle", STUDENT, ("model.safetensors",), pickled("teacher/model.safetensors")),
    Case(
        "student:teacher-missing",
        ("student", "--recipe", "{recipe}", "--teacher", "{s}/none", "--out", "{s}/st"),
        ("none",),
    ),
    Case("student:other-data", STUDENT + sets("data.split_seed=1"), ("--teacher", "other data")),
    Case("student:unknown-name", (*STUDENT, "--name", "nope"), ("--name nope",)),
    Case("student:unknown-perturbation", STUDENT + sets("students.0.perturb.name=nope"), ("perturb",)),
    # export targets
    Case("export:missing-directory", (*EXPORT, "--out", "{s}/missing_dir/model.pt"), ("--out", "missing_dir")),
    Case("export:over-model", (*EXPORT, "--out", "{teacher}/model.safetensors"), ("--out", "model.safetensors")),
    Case("export:over-state", (*EXPORT, "--out", "{teacher}/state.safetensors"), ("--out", "state.safetensors")),
    Case("export:over-model-json", (*EXPORT, "--out", "{teacher}/model.json"), ("--out", "model.json")),
    Case(
        "export:over-summary",
        (*EXPORT, "--format", "exported", "--out", "{teacher}/summary.json"),
        ("--out", "summary.json"),
    ),
    Case("export:over-report", (*EXPORT, "--out", "{run}/report/report.md"), ("--out", "report.md")),
    Case("export:to-directory", (*EXPORT, "--out", "{teacher}"), ("--out",)),
    Case("export:bad-format", (*EXPORT, "--format", "tflite"), ("--format", "tflite")),
    Case("export:not-a-run", ("export", "{s}"), ("model.json",)),
    # flags
    Case("flag:missing-out", ("teacher", "--recipe", "{recipe}"), ("--out",)),
    Case("flag:unknown-command", ("trian", "--out", "{s}/x"), ("trian",)),
    Case("flag:unknown-flag", (*TEACHER, "--bogus"), ("--bogus",)),
    Case("flag:bench-device", ("bench", "--device", "tpu", "--out", "{s}/b"), ("--device",)),
    Case("flag:evaluate-missing-teacher", ("evaluate", "--teacher", "{s}/none", "--out", "{s}/ev"), ("none",)),
    Case("single:no-section", ("single", "--recipe", "{recipe}", "--out", "{s}/single"), ("'single'",)),
    Case("aggregate:not-a-run", ("aggregate", "{s}/none", "--out", "{s}/agg.md"), ("none",)),
    Case("analyze:landscape-no-run", ("analyze", "landscape", "--teacher", "{s}/none", "--out", "{s}/l"), ("none",)),
    Case("analyze:diversity-no-run", ("analyze", "diversity", "--teachers", "{s}/none", "--out", "{s}/d"), ("none",)),
    Case(
        "analyze:diversity-groups",
        ("analyze", "diversity", "--teachers", "{teacher}", "{s}/b", "--groups", "de", "--out", "{s}/d"),
        ("groups", "2"),
    ),
    Case(
        "import-teacher:missing-checkpoint",
        (*IMPORT, "--checkpoint", "{s}/none.safetensors", "--arch", "tiny_cnn", "--out", "{s}/imported"),
        ("none.safetensors",),
    ),
    # a learning rate that makes the loss NaN: one line naming epoch and step
    Case("nan:lr", FRESH + sets("teacher.train.optim.lr=1.0e+12"), ("epoch 1, step", "train.optim.lr")),
]


def expand(text: str, fill: dict[str, str]) -> str:
    for key, value in fill.items():  # not str.format: YAML values hold braces of their own
        text = text.replace("{" + key + "}", value)
    return text


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every leaf command of the CLI's parser, as argv prefixes: ("teacher",), ("analyze", "landscape"), ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix}
    return {c for name, p in subs[0].choices.items() for c in _commands(p, (*prefix, name))}


def test_every_cli_command_has_a_bad_input_case() -> None:
    """The corpus follows the product: a command added to the CLI without a refusal case here fails this test."""
    from distill.cli import build_parser

    commands = _commands(build_parser())
    assert ("teacher",) in commands and ("analyze", "landscape") in commands  # the walk reaches nested commands
    covered = {cmd for cmd in commands for c in CASES if tuple(c.argv[: len(cmd)]) == cmd}
    assert covered == commands, f"commands without a bad-input case: {sorted(commands - covered)}"
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, prepared, tmp_path, capsys, monkeypatch) -> None:
    recipe, source = prepared
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    shutil.copytree(source, run)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if case.prepare is not None:
        case.prepare(run, scratch)
    before = digests(run)
    fill = {"recipe": str(recipe), "run": str(run), "teacher": str(run / "teacher"), "s": str(scratch)}
    argv = [expand(a, fill) for a in case.argv]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    print(f"{case.id}: {err.strip()}")  # shown when the case fails, and with pytest -rP
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for name in case.names:
        assert expand(name, fill) in lines[0], lines[0]
    assert digests(run) == before, "the run directory changed"
    assert not (scratch / MARKER).exists(), "a pickle was executed"
