"""Students against a spread teacher (distill/spread_teacher.py): under run.parallel: members the student stage keeps
each process's share of the frozen teacher's members and trains the student data-parallel.

The 2-process tests run on the CPU (gloo) under torchrun as tests/test_member_parallel.py's do: the collective's
logits and input gradient against the whole teacher's (this file run as a script: ``--spread-check``), and kd and
ConfODS students trained against a spread teacher against the same students trained against the whole teacher
under run.parallel: data (the student's data parallelism the same, only the teacher's placement differs).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from test_member_parallel import _launch  # tests/ is on sys.path: pytest's rootdir insertion, or the script's folder

from distill import UserError
from distill.checkpoint import load_tensors
from distill.recipe import recipe_from_dict
from distill.train import train_ensemble, train_student

# --- the collective against the whole teacher (2 processes) ----------------------------------------------------

# (members, each rank's rows): 4 members 2 + 2 on equal shards; 5 members 2 + 3 on shards of 5 and 3 rows
SPREAD_CASES = {"4_members_equal_shards": (4, (8, 8)), "5_members_uneven_shards": (5, (5, 3))}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def _input_gradient(teacher: torch.nn.Module, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(M, B, K)`` on ``x`` with grad, and ``d(sum w * logits)/dx``."""
    from distill.perturb.base import frozen_teacher, teacher_logits

    with frozen_teacher(teacher), torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        logits = teacher_logits(teacher, xg)
        (g,) = torch.autograd.grad((w * logits).sum(), xg)
    return logits.detach(), g


def _one_case(members: int, rows: tuple[int, ...], rank: int, world: int) -> dict:
    from distill.data import load_dataset
    from distill.models import build_model
    from distill.perturb.base import forward_no_grad
    from distill.perturb.ods import ODSParams, ods_step
    from distill.spread_teacher import parameter_bytes, spread_teacher

    splits = load_dataset("digits")
    torch.manual_seed(0)
    whole = build_model({"kind": "ensemble", "archs": ["small_cnn"] * members}, splits.meta)
    reference = copy.deepcopy(whole)
    whole_bytes = parameter_bytes(whole)
    teacher = spread_teacher(whole, rank, world, torch.device("cpu"), "the teacher")
    start = sum(rows[:rank])
    x = (splits.train_x[: sum(rows)].float() / 255)[start : start + rows[rank]]  # this rank's shard
    w = torch.randn(members, sum(rows), splits.meta.num_classes, generator=torch.Generator().manual_seed(1))
    w = w[:, start : start + rows[rank]]
    found = {"owned": list(range(teacher.spread.owned.start, teacher.spread.owned.stop))}
    found["bytes"] = [whole_bytes, parameter_bytes(teacher)]
    a, b = forward_no_grad(teacher, x), forward_no_grad(reference, x)
    found["shape"] = list(a.shape)
    found["logits"] = _max_diff(a, b)
    (la, ga), (lb, gb) = _input_gradient(teacher, x, w), _input_gradient(reference, x, w)
    found["logits_grad_path"] = _max_diff(la, lb)
    found["input_grad"], found["input_grad_scale"] = _max_diff(ga, gb), float(gb.abs().max())
    odss = [ods_step(t, x, ODSParams(), torch.Generator().manual_seed(3), True) for t in (teacher, reference)]
    found["confods_x"] = _max_diff(odss[0].x, odss[1].x)
    found["confods_logits"] = _max_diff(odss[0].teacher_logits_perturbed, odss[1].teacher_logits_perturbed)
    return found


def _spread_check(out: Path) -> None:
    """Run under torchrun: each process compares the spread teacher with the whole one on its own shard."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    found = {name: _one_case(m, rows, rank, world) for name, (m, rows) in SPREAD_CASES.items()}
    (out / f"rank{rank}.json").write_text(json.dumps(found))
    dist.destroy_process_group()


def test_spread_teacher_logits_and_input_gradient_equal_the_whole_teacher(tmp_path):
    """On 2 processes: logits, the input gradient of a random cotangent and a ConfODS step on each rank's shard equal
    the whole teacher's within 1e-6 (measured: logits equal, input gradient within 1.2e-8 of values up to 0.04,
    ConfODS's x~ within 3e-8), on equal shards and on shards of 5 and 3 rows with 5 members split 2 + 3; each
    process holds the parameters of its members only."""
    proc = _launch([__file__, "--spread-check", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    print(json.dumps(ranks))
    assert [r["5_members_uneven_shards"]["owned"] for r in ranks] == [[0, 1], [2, 3, 4]]
    for rank, found in enumerate(ranks):
        for name, (members, rows) in SPREAD_CASES.items():
            f = found[name]
            assert f["shape"] == [members, rows[rank], 10], name
            for key in ("logits", "logits_grad_path", "confods_x", "confods_logits"):
                assert f[key] <= 1e-6, (name, key, f[key])
            assert f["input_grad"] <= 1e-6 * max(f["input_grad_scale"], 1.0), (name, f)
    whole, share = ranks[0]["4_members_equal_shards"]["bytes"]
    assert share * 2 == whole and ranks[1]["4_members_equal_shards"]["bytes"] == [whole, share]


# --- students ---------------------------------------------------------------------------------------------------

STUDENT = {"arch": "small_cnn", "alpha": 0.9, "temperature": 4.0}
STUDENT_TRAIN = {"epochs": 2, "batch_size": 32, "optim": {"lr": 0.05, "momentum": 0.9}}


def _recipe(parallel: str = "data") -> dict:
    train = {"epochs": 6, "batch_size": 32, "optim": {"lr": 0.1, "momentum": 0.9}}
    return {
        "seed": 0,
        "data": {"name": "digits", "limit_train": 256, "augment": True, "crop_padding": 1},
        "teacher": {"arch": "tiny_cnn", "members": 4, "objective": {"name": "de"}, "train": train},
        "students": [
            {**STUDENT, "name": "kd", "perturb": {"name": "none"}, "train": STUDENT_TRAIN},
            {**STUDENT, "name": "confods", "perturb": {"name": "confods"}, "train": STUDENT_TRAIN},
            {**STUDENT, "name": "be", "kind": "batchensemble", "perturb": {"name": "confods"}, "train": STUDENT_TRAIN},
            {**STUDENT, "name": "end2", "kind": "dirichlet", "perturb": {"name": "confods"}, "train": STUDENT_TRAIN},
        ],
        "run": {"progress": False, "parallel": parallel},
    }


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """A DE of 4 tiny CNNs trained 6 epochs (test accuracy about 0.3: members that disagree)."""
    root = tmp_path_factory.mktemp("spread_student")
    train_ensemble(recipe_from_dict(_recipe()), root / "teacher")
    return root / "teacher"


STUDENTS = ["kd", "confods", "be", "end2"]


def _students(teacher: Path, out: Path) -> None:
    """Run under torchrun: every student of ``_recipe`` against the whole teacher (run.parallel: data), then
    against the spread one (members), in one process group as `distill run` trains its stages; each process
    records its teacher's parameter bytes before and after the spread."""
    from distill.objectives import student
    from distill.spread_teacher import parameter_bytes

    bytes_seen = []

    def recording(teacher: torch.nn.Module, *args: object) -> torch.nn.Module:
        whole = parameter_bytes(teacher)
        spread = real(teacher, *args)
        bytes_seen.append([whole, parameter_bytes(spread)])
        return spread

    real, student.spread_teacher = student.spread_teacher, recording
    for name in STUDENTS:
        for parallel in ("data", "members"):
            train_student(recipe_from_dict(_recipe(parallel)), teacher, out / f"{name}_{parallel}", name=name)
    rank = torch.distributed.get_rank()
    (out / f"bytes{rank}.json").write_text(json.dumps(bytes_seen))


@pytest.fixture(scope="module")
def student_runs(teacher_run, tmp_path_factory) -> tuple[Path, str]:
    """Every student trained on 2 processes against the whole and the spread teacher (one launch: its start-up
    is most of the time), and the launch's output."""
    out = tmp_path_factory.mktemp("spread_students")
    proc = _launch([__file__, "--students", str(teacher_run), str(out)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out, proc.stdout


def _weights(run: Path, f: str) -> dict[str, torch.Tensor]:
    tensors, _ = load_tensors(run / f)
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}


def _max_weight_diff(a: Path, b: Path) -> float:
    diffs = []
    for f in ("model.safetensors", "state.safetensors"):
        ta, tb = _weights(a, f), _weights(b, f)
        assert ta.keys() == tb.keys(), f
        diffs += [_max_diff(ta[k], tb[k]) for k in ta if ta[k].is_floating_point()]
    return max(diffs)


@pytest.mark.parametrize("name", STUDENTS)
def test_a_student_against_a_spread_teacher_trains_as_against_the_whole_teacher(student_runs, name):
    """2 processes, 2 epochs: the teacher's 4 members spread 2 + 2 (run.parallel: members) or whole on each process
    (run.parallel: data); the student data-parallel in both. Weights and momentum within 1e-5 (measured: equal),
    the same val and test accuracy; the BatchEnsemble student (``be``) learns one-to-one from each member's
    gathered logits, the Dirichlet one (``end2``) from the spread of all of them."""
    out, stdout = student_runs
    assert stdout.count("the teacher's members spread over 2 processes; the student trains data-parallel") == 4
    data, members = out / f"{name}_data", out / f"{name}_members"
    diff = _max_weight_diff(data, members)
    print(f"{name}: max abs weight difference {diff:.3g}")
    assert diff <= 1e-5
    summaries = [json.loads((d / "summary.json").read_text()) for d in (data, members)]
    assert [h["val_acc"] for h in summaries[0]["history"]] == [h["val_acc"] for h in summaries[1]["history"]]
    assert summaries[0]["test"]["acc"] == summaries[1]["test"]["acc"]
    assert [s["processes"] for s in summaries] == [2, 2] and summaries[1]["replicas_in_sync"] is True


def test_each_process_holds_half_of_the_teachers_parameters_while_its_student_trains(student_runs):
    out, _ = student_runs
    for rank in range(2):
        seen = json.loads((out / f"bytes{rank}.json").read_text())
        assert len(seen) == len(STUDENTS) and all(whole == 2 * spread for whole, spread in seen), seen


def test_members_mode_in_one_process_trains_a_student_as_data_mode(tmp_path, teacher_run):
    """World 1: the spread teacher holds every member and calls no collective; the student is data mode's, bit for
    bit."""
    teacher = teacher_run
    for parallel in ("data", "members"):
        train_student(recipe_from_dict(_recipe(parallel)), teacher, tmp_path / parallel, name="confods")
    assert _max_weight_diff(tmp_path / "data", tmp_path / "members") == 0


def test_a_teacher_with_fewer_members_than_processes_is_refused_in_one_line(digits):
    """Every process needs a member of a spread teacher: 3 members on 4 processes is refused in one line. A teacher
    of one network (self_kd's) has nothing to spread and stays whole on every process; a teacher that is a bare
    module, not a model of the contract, is refused."""
    from distill.models import build_model
    from distill.objectives.student import KD
    from distill.perturb import make_perturbation

    three = build_model({"kind": "ensemble", "archs": ["tiny_cnn"] * 3}, digits.meta)
    objective = KD(three, make_perturbation("none"), 0.9, 4.0)
    with pytest.raises(UserError, match="4 processes for the 3 members of the teacher of the student") as err:
        objective.share_teacher(0, 4, torch.device("cpu"), "the teacher of the student")
    assert "\n" not in str(err.value)
    one = build_model({"kind": "ensemble", "archs": ["tiny_cnn"]}, digits.meta)
    whole = KD(one, make_perturbation("none"), 0.9, 4.0)
    assert whole.share_teacher(0, 2, torch.device("cpu"), "the teacher") is False
    assert whole.teacher is one and all(p.device.type == "cpu" for p in one.parameters())
    plain = KD(three.members[0], make_perturbation("none"), 0.9, 4.0)
    with pytest.raises(UserError, match="not an ensemble of separate members"):
        plain.share_teacher(0, 1, torch.device("cpu"), "the teacher")


TINY_RUN = [
    "data.limit_train=240",
    "teacher.train.epochs=1",
    "single.train.epochs=1",
    "students.*.train.epochs=1",
    "evaluate.cost.enabled=false",
    "evaluate.ood=[]",
    "evaluate.corruptions=[]",
    "run.progress=false",
    "run.parallel=members",
]


def test_distill_run_under_members_on_two_processes_trains_every_stage_and_reports(tmp_path):
    """`torchrun -m distill run` with run.parallel: members, as a user would: the teacher's 4 members are spread,
    the single network and the controls (one network each) say they train data-parallel, the students train
    against the spread teacher (ConfODS's search through the gather), self_kd's one-network teacher stays whole,
    and the report is written once; each stage's header is printed once."""
    sets = [x for s in TINY_RUN for x in ("--set", s)]
    proc = _launch(["-m", "distill", "run", "recipes/digits.yaml", "--out", str(tmp_path / "out"), *sets])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout
    assert log.count("== teacher ->") == 1 and log.count("== report ->") == 1, log
    assert log.count("the teacher's members spread over 2 processes; the student trains data-parallel") == 2
    assert "the single is one network; it trains data-parallel" in log
    assert log.count("the control is one network; it trains data-parallel") == 2  # label_smoothing, self_kd
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert {"kd", "confods", "control:self_kd"} <= set(report["models"])
    for stage in ("teacher", "single", "students/kd", "students/confods", "controls/self_kd"):
        summary = json.loads((tmp_path / "out" / stage / "summary.json").read_text())
        assert summary["processes"] == 2 and summary["parallel"] == "members", stage


if __name__ == "__main__" and sys.argv[1:2] == ["--spread-check"]:
    _spread_check(Path(sys.argv[2]))
if __name__ == "__main__" and sys.argv[1:2] == ["--students"]:
    _students(Path(sys.argv[2]), Path(sys.argv[3]))
