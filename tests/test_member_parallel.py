"""run.parallel: members (distill/parallel.py): each process trains its own share of the members.

Fast tests check ownership, the refusals and the state's split / merge in this process. The 2-process tests
launch `torchrun --nproc_per_node 2 -m distill teacher` on the CPU (gloo), as a user would, and compare with one
process; the gradient check launches this file itself under torchrun (``python tests/test_member_parallel.py``).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distill import UserError
from distill.checkpoint import load_tensors
from distill.cli import main
from distill.parallel import (
    MemberSpread,
    Share,
    check_members_mode,
    check_world,
    globalise,
    localise,
    merge_optim_meta,
    owned_members,
    share_members,
)
from distill.recipe import recipe_from_dict
from distill.train import train_ensemble

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


# --- ownership and refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("members", range(1, 10))
def test_each_process_owns_a_contiguous_nearly_even_share_of_every_member_once(members):
    for world in range(1, members + 1):
        shares = [owned_members(r, world, members) for r in range(world)]
        assert [m for s in shares for m in s] == list(range(members))  # every member once, in order
        sizes = [len(s) for s in shares]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_ownership_by_hand():
    assert [list(owned_members(r, 2, 5)) for r in range(2)] == [[0, 1], [2, 3, 4]]
    assert [list(owned_members(r, 3, 4)) for r in range(3)] == [[0], [1], [2, 3]]


def test_more_processes_than_members_is_refused_naming_both():
    with pytest.raises(UserError, match="3 processes for the 2 members of teacher"):
        check_world(3, 2, "teacher")
    with pytest.raises(UserError, match="at most 2 processes"):
        check_members_mode(2, True, "teacher", world=3)


def test_an_objective_without_gathers_is_refused_before_any_data_is_read(tmp_path, capsys):
    sets = ["--set", "run.parallel=members", "--set", "teacher.objective={name: balanced}"]
    code = main(["teacher", "--recipe", str(ROOT / "recipes/digits.yaml"), "--out", str(tmp_path / "r"), *sets])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "teacher's objective cannot spread its members" in err[0]
    assert not (tmp_path / "r").exists()


def test_more_launched_processes_than_members_is_refused_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    """WORLD_SIZE (set by the launcher) 8 for a teacher of 4 members: one line, exit 2, nothing written; the single
    network of the same recipe (one member) is not refused: it trains data-parallel."""
    monkeypatch.setenv("WORLD_SIZE", "8")
    sets = ["--set", "run.parallel=members"]
    code = main(["teacher", "--recipe", str(ROOT / "recipes/digits.yaml"), "--out", str(tmp_path / "r"), *sets])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "8 processes for the 4 members of teacher" in err[0]
    assert not (tmp_path / "r").exists()
    from distill.resolve import _check_members

    recipe = recipe_from_dict({"data": {"name": "digits"}, "teacher": {"arch": "tiny_cnn", "members": 1}})
    _check_members(recipe.teacher, "single")  # one network: nothing to spread, no refusal


def test_a_data_parallel_state_is_refused_by_a_members_resume():
    spread = MemberSpread(0, 2, 4, torch.device("cpu"), Share(0, 2, 0, 8))
    meta = {"optimizer": {"param_groups": [], "scalars": {}}, "parallel": {"mode": "data", "processes": 2}}
    with pytest.raises(UserError, match="written by 2 processes under run.parallel: data"):
        spread.own_state({}, meta, "run/state.safetensors")


# --- the state: one-process format <-> shares ---------------------------------------------------------------


def _state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    from distill.loop import TrainState, state_parts

    return state_parts(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), TrainState(epoch=1))


def test_shares_of_a_one_process_state_merge_back_to_it_exactly(tiny_ensemble):
    """3 members over 2 processes (1 + 2): each share's part (localise), loaded and written again (globalise),
    merges to the one-process state bit for bit, momentum buffers and parameter indices included."""
    from distill.checkpoint import load_weights, optimizer_from_flat

    model = tiny_ensemble
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    logits, _ = model(torch.rand(4, 1, 8, 8))
    logits.square().mean().backward()
    opt.step()
    whole, meta = _state(model, opt)
    tensors, parts = {}, []
    for rank in range(2):
        share = share_members(copy.deepcopy(model), rank, 2, torch.device("cpu"), "teacher")
        own_opt = torch.optim.SGD(share.parameters(), lr=0.1, momentum=0.9)
        mine, mine_meta = localise(whole, meta["optimizer"], share.member_spread.share)
        load_weights(share, {k[6:]: v for k, v in mine.items() if k.startswith("model.")}, Path("x"))
        optimizer_from_flat(own_opt, mine, mine_meta)
        back, back_optim = globalise(*_state_for_globalise(share, own_opt), share.member_spread.share)
        tensors.update(back)
        parts.append(back_optim)
    per_member = len(list(model.members[0].parameters()))
    assert share.member_spread.share == Share(1, 2, per_member, 2 * per_member)  # rank 1 of 2: members 1 and 2
    assert tensors.keys() == whole.keys()
    assert all(torch.equal(tensors[k], whole[k]) for k in whole)
    assert merge_optim_meta(parts) == json.loads(json.dumps(meta["optimizer"]))


def _state_for_globalise(share: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    tensors, meta = _state(share, opt)
    return tensors, meta["optimizer"]


# --- one process: members mode is the data mode's run --------------------------------------------------------


def _tiny(parallel: str, objective: dict) -> dict:
    return {
        "seed": 1,
        "data": {"name": "digits", "limit_train": 128, "crop_padding": 1},
        "teacher": {
            "arch": "tiny_cnn",
            "members": 3,
            "objective": objective,
            "train": {"epochs": 2, "batch_size": 32, "optim": {"lr": 0.05}},
        },
        "run": {"progress": False, "log_every": 2, "parallel": parallel},
    }


def test_members_mode_in_one_process_trains_and_resumes_as_data_mode(tmp_path):
    """World 1 runs the spread code path (share, gathers, checkpoint merge, own_state on resume) with no peer."""
    sdde = {"name": "sdde", "lam": 0.1, "same_batch": False}
    train_ensemble(recipe_from_dict(_tiny("data", sdde)), tmp_path / "data")
    members = recipe_from_dict(_tiny("members", sdde))
    assert train_ensemble(members, tmp_path / "members", stop_after=1) == {"stopped_after": 1}
    summary = train_ensemble(members, tmp_path / "members", resume=True)
    assert summary["parallel"] == "members" and summary["replicas_in_sync"] is None
    for f in ("model.safetensors", "state.safetensors"):
        a, _ = load_tensors(tmp_path / "data" / f)
        b, _ = load_tensors(tmp_path / "members" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f


# --- two processes ---------------------------------------------------------------------------------------------


def _launch(args: list[str], nproc: int = 2, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    if not TORCHRUN.exists():
        pytest.skip("torchrun is not installed beside this python")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(nproc), *args]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, **kw)


DE4 = ["--recipe", str(ROOT / "recipes/digits_de.yaml")] + [
    x
    for s in ("teacher.train.epochs=2", "data.limit_train=256", "run.progress=false", "run.parallel=members")
    for x in ("--set", s)
]


def _same_files(a: Path, b: Path) -> None:
    for f in ("model.safetensors", "state.safetensors"):
        ta, ma = load_tensors(a / f)
        tb, mb = load_tensors(b / f)
        assert ta.keys() == tb.keys(), f
        assert [k for k in ta if not torch.equal(ta[k], tb[k])] == [], f
        assert ma.get("optimizer") == mb.get("optimizer"), f


def _same_history(a: Path, b: Path) -> None:
    """The logged per-epoch terms (the whole ensemble's loss, ce, diversity terms, validation) are equal."""
    rows = [
        [{k: v for k, v in h.items() if k != "time_s"} for h in json.loads((d / "summary.json").read_text())["history"]]
        for d in (a, b)
    ]
    assert rows[0] and rows[0] == rows[1]


def test_de_of_four_members_over_two_processes_is_bit_identical_to_one_process(tmp_path):
    """4 small CNNs, per-member data orders (same_batch: false) and augmentation, 2 epochs: every weight, momentum
    buffer and the selected model equal the one-process run's bit for bit."""
    one = _launch(["-m", "distill", "teacher", *DE4, "--set", "run.parallel=data", "--out", str(tmp_path / "one")], 1)
    assert one.returncode == 0, one.stderr[-3000:]
    proc = _launch(["-m", "distill", "teacher", *DE4, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    _same_files(tmp_path / "one", tmp_path / "two")
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["parallel"] == "members"
    # the test metrics, each member predicting on its own process and gathered (CAM similarity too)
    one = json.loads((tmp_path / "one" / "summary.json").read_text())["test"]
    assert summary["test"] == one and "cam_similarity" in one
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(list((tmp_path / "two" / "tb").glob("events.out.tfevents.*"))) == 1  # one process logs
    _same_history(tmp_path / "one", tmp_path / "two")
    assert proc.stdout.count("summary:") == 1


# The one-step gradients of each objective, spread over 2 processes vs one process: bit-identical, double backprop
# (SDDE's CAMs, IGD's input gradients) included. (With torch.distributed.nn.functional.all_gather's summing
# backward and a 1/W scale they were not: up to 8e-7 of the largest gradient, see MemberSpread.gather.)
STEP_CASES = {
    "ncl_shared": ({"name": "de", "same_batch": True, "diversity": [{"name": "ncl", "lam": 0.5}]}, 4),
    "ncl_own_batches": ({"name": "de", "same_batch": False, "diversity": [{"name": "ncl", "lam": 0.5}]}, 4),
    "adp": ({"name": "adp"}, 4),
    "sdde": ({"name": "sdde", "lam": 0.1, "same_batch": False}, 4),
    "sdde_5_members_2_and_3": ({"name": "sdde", "lam": 0.1, "same_batch": True}, 5),
    "igd": ({"name": "igd"}, 4),
}


def _step_check(out: Path) -> None:
    """Run under torchrun: each process compares its members' gradients with the one-process model's."""
    import torch.distributed as dist

    from distill.data import load_dataset
    from distill.data.batches import Batch
    from distill.models import build_model
    from distill.objectives import objective_from_recipe

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    splits = load_dataset("digits")
    found = {}
    for name, (spec, members) in STEP_CASES.items():
        torch.manual_seed(0)
        whole = build_model({"kind": "ensemble", "archs": ["small_cnn"] * members}, splits.meta)
        objective, _ = objective_from_recipe(spec, name)
        views = members if objective.per_member_batches else 1
        idx = torch.randint(len(splits.train_y), (views, 32), generator=torch.Generator().manual_seed(1))
        batch = Batch(x=splits.train_x[idx].float() / 255, y=splits.train_y[idx])
        reference = copy.deepcopy(whole)
        share = share_members(whole, rank, world, torch.device("cpu"), name)
        terms = []
        for model in (reference, share):
            torch.manual_seed(5)  # the diversity batch's draw
            loss, logged = objective(model, batch)
            loss.backward()
            # spread, the objective logs the whole ensemble's loss ("loss"; its own is its members' part)
            terms.append({"loss": float(loss), **{k: float(v) for k, v in logged.items()}})
        own = range(share.member_spread.owned.start, share.member_spread.owned.stop)
        pairs = [
            (p.grad, q.grad)
            for i, member in zip(own, share.members)
            for p, q in zip(member.parameters(), reference.members[i].parameters())
            if q.grad is not None
        ]
        found[name] = {
            "grads": len(pairs),
            "unequal": sum(not torch.equal(p, q) for p, q in pairs),
            "terms_equal": terms[0] == terms[1],
            "members": list(own),
        }
    found["dropout"] = _dropout_steps(share_members, rank, world)
    (out / f"rank{rank}.json").write_text(json.dumps(found))
    dist.destroy_process_group()


class DropoutNet(torch.nn.Module):
    """A member with dropout after its CAM layer (any module returning (logits, CAM features) is a member)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.conv(x).relu()  # (B, 4, 8, 8)
        return self.head(self.drop(a).mean((2, 3))), a


def _dropout_steps(share_members, rank: int, world: int) -> dict:
    """5 dropout members over 2 processes (2 + 3: their dropout draws differ in number), SDDE with per-member
    batches, 4 steps as the loop runs them: the diversity batch and the CAM term must be one on every process."""
    from distill.data.batches import Batch
    from distill.models.ensemble import Ensemble
    from distill.objectives import objective_from_recipe

    torch.manual_seed(0)
    share = share_members(Ensemble([DropoutNet() for _ in range(5)]), rank, world, torch.device("cpu"), "t")
    objective, _ = objective_from_recipe({"name": "sdde", "lam": 0.1, "same_batch": False}, "t")
    g = torch.Generator().manual_seed(2)
    batch = Batch(x=torch.rand(5, 16, 1, 8, 8, generator=g), y=torch.randint(10, (5, 16), generator=g))
    spread, picked = share.member_spread, []

    def same_everywhere(k: int) -> int:  # records which member's batch each step's diversity batch is
        picked.append(MemberSpread.same_everywhere(spread, k))
        return picked[-1]

    object.__setattr__(spread, "same_everywhere", same_everywhere)
    divs = []
    for _ in range(4):
        loss, logged = objective(share, batch)
        loss.backward()
        divs.append(float(logged["div"]))
        spread.sync_rng()
    return {"diversity_batch": picked, "div": divs, "rng": torch.get_rng_state().double().sum().item()}


def test_cross_member_terms_give_one_process_gradients_over_two_processes(tmp_path):
    proc = _launch([__file__, "--step-check", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[1]["sdde_5_members_2_and_3"]["members"] == [2, 3, 4]
    # members with dropout: not the one-process numbers, but one diversity batch, one term, one RNG on both
    assert ranks[0]["dropout"] == ranks[1]["dropout"]
    for name in STEP_CASES:
        for found in ranks:
            assert found[name]["terms_equal"], name  # the logged loss and terms (ce, div, ...) equal one process's
            assert found[name]["grads"] >= 8 and found[name]["unequal"] == 0, (name, found[name])


COMBO = {"name": "de", "same_batch": False, "ce_reduction": "mean", "diversity": [
    {"name": "cam", "lam": 0.1}, {"name": "ncl", "lam": 0.5}, {"name": "adp_log_det", "lam": 0.1}]}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("members", "objective"), [(4, "{name: sdde, lam: 0.1, same_batch: false}"), (5, json.dumps(COMBO))]
)
def test_cross_member_teachers_over_two_processes_train_as_one_process(tmp_path, members, objective):
    """20 steps of SDDE (4 members), and of CAM + NCL + ADP's log det on 5 members split 2 + 3: weights, momentum,
    BatchNorm statistics, the logged terms and the test metrics equal one process's bit for bit."""
    sets = {"teacher.members": members, "teacher.objective": objective, "data.limit_train": 1280,
            "teacher.train.epochs": 1, "run.progress": "false", "run.parallel": "members"}  # fmt: skip
    args = ["-m", "distill", "teacher", "--recipe", str(ROOT / "recipes/digits_sdde.yaml")]
    args += [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    for out, nproc in (("one", 1), ("two", 2)):
        data = ["--set", "run.parallel=data"] if nproc == 1 else []  # the reference: one process, as before
        proc = _launch([*args, *data, "--out", str(tmp_path / out)], nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
    _same_files(tmp_path / "one", tmp_path / "two")
    _same_history(tmp_path / "one", tmp_path / "two")
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two")]
    assert summaries[0]["test"] == summaries[1]["test"]
    assert summaries[1]["processes"] == 2 and len(summaries[1]["history"]) == 1


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _rank_pid(launcher: int, rank: int) -> int | None:
    for child in _children(launcher):
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return child
    return None


@pytest.mark.slow
def test_kill_9_of_one_process_then_resume_ends_where_an_uninterrupted_spread_run_ends(tmp_path):
    """The spread run, straight; the same run with rank 1 killed (SIGKILL) after its first checkpoint, resumed at
    2 processes; and resumed again from that checkpoint in one process (another world size): all bit-identical."""
    args = ["-m", "distill", "teacher", *DE4, "--set", "teacher.train.epochs=3", "--set", "data.limit_train=1024"]
    straight = _launch([*args, "--out", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _launch([*args, "--out", str(tmp_path / "killed")], background=True)
    state = tmp_path / "killed" / "state.safetensors"
    deadline = time.monotonic() + 300
    while not state.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = _rank_pid(killed.pid, 1)
    assert pid is not None and killed.poll() is None, "the run ended before its first checkpoint"
    os.kill(pid, signal.SIGKILL)
    killed.communicate(timeout=300)
    assert killed.returncode != 0 and not (tmp_path / "killed" / "summary.json").exists()
    _, meta = load_tensors(state)
    assert meta["epoch"] < 2  # stopped before the last epoch
    for out in ("one", "two"):  # the killed run's checkpoint, resumed by 2 processes and by 1
        (tmp_path / out).mkdir()
        for f in (tmp_path / "killed").glob("*.safetensors"):
            (tmp_path / out / f.name).write_bytes(f.read_bytes())
        for f in (tmp_path / "killed").glob("*.json"):
            (tmp_path / out / f.name).write_bytes(f.read_bytes())
    two = _launch([*args, "--out", str(tmp_path / "two"), "--resume"])
    assert two.returncode == 0, two.stderr[-3000:]
    one = _launch([*args, "--out", str(tmp_path / "one"), "--resume"], nproc=1)
    assert one.returncode == 0, one.stderr[-3000:]
    _same_files(tmp_path / "straight", tmp_path / "two")
    _same_files(tmp_path / "straight", tmp_path / "one")


if __name__ == "__main__" and sys.argv[1:2] == ["--step-check"]:
    _step_check(Path(sys.argv[2]))
