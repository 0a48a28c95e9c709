"""What run.parallel: members saves and costs, in one invocation: per-process parameter + optimiser
memory, and the training step time of the teacher spread over W processes vs one process.

    PYTHONPATH=. python experiments/member_parallel_cost.py [--recipe recipes/digits_sdde.yaml] [--world 2] [--rounds 2]
        [--set KEY=VALUE ...]

1. memory: each process's share (distill/parallel.py: share_members) of the recipe's teacher, its parameters and
   its optimiser state after one step (SGD momentum / Adam moments), counted in bytes; no process group needed;
2. time: `python -m distill teacher` in one process and `torchrun --nproc_per_node W -m distill teacher` with
   run.parallel=members, interleaved ``--rounds`` times (one process first, then W, then again), each run's
   training time per step read from its summary.json (epoch_times_s over the loader's steps: validation and
   checkpoints excluded). Both on the CPU (gloo) with OMP_NUM_THREADS=1 per process. The ratio is only as good
   as the machine is quiet: W processes need W free cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bytes(tensors: object) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def memory(recipe_path: str, sets: list[str], world: int) -> list[dict]:
    """Per process: parameter and optimiser-state bytes of its members, after one optimiser step."""
    from distill.data import load_splits
    from distill.loop import make_optimizer
    from distill.models import build_model, ensemble_spec
    from distill.parallel import share_members
    from distill.recipe import load_recipe

    recipe = load_recipe(recipe_path, sets)
    splits = load_splits(recipe.data)
    torch.manual_seed(recipe.seed)
    whole = build_model(ensemble_spec(recipe.teacher.arch, recipe.teacher.members), splits.meta)
    x = splits.train_x[:8].float() / 255
    rows = []
    for w in (1, world):
        for rank in range(w):
            share = share_members(copy.deepcopy(whole), rank, w, torch.device("cpu"), "teacher")
            opt = make_optimizer(share, recipe.teacher.train)
            share(x)[0].square().mean().backward()
            opt.step()
            state = [v for s in opt.state.values() for v in s.values()]
            rows.append(
                {
                    "world": w,
                    "rank": rank,
                    "members": share.size,
                    "params": _bytes(share.parameters()),
                    "optim": _bytes(state),
                }
            )
    return rows


def _run(recipe: str, sets: list[str], world: int, out: Path) -> float:
    """Median training seconds per step of one `distill teacher` run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = ["-m", "distill", "teacher", "--recipe", recipe, "--out", str(out), "--set", "run.progress=false"]
    args += [x for s in [*sets, "run.parallel=members"] for x in ("--set", s)]
    cmd = [sys.executable, *args] if world == 1 else [str(Path(sys.executable).with_name("torchrun")), "--standalone",
                                                       "--nproc_per_node", str(world), *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return statistics.median(summary["epoch_times_s"]) / _steps(out)


def _steps(out: Path) -> int:
    """Optimizer steps per epoch, from the state's schedule (LambdaLR counts them)."""
    from distill.checkpoint import load_tensors

    _, meta = load_tensors(out / "state.safetensors")
    return meta["scheduler"]["last_epoch"] // (meta["epoch"] + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes/digits_sdde.yaml"))
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    a = ap.parse_args()
    print(f"recipe {a.recipe} {' '.join(a.sets)}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    rows = memory(a.recipe, a.sets, a.world)
    one = rows[0]["params"] + rows[0]["optim"]
    print("world rank members  params MB  optim MB  share of one process")
    for r in rows:
        print(f"{r['world']:5d} {r['rank']:4d} {r['members']:7d} {r['params'] / 2**20:10.3f} {r['optim'] / 2**20:9.3f}"
              f"  {(r['params'] + r['optim']) / one:.3f}")  # fmt: skip
    times: dict[int, list[float]] = {1: [], a.world: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.rounds):
            for w in (1, a.world):
                times[w].append(_run(a.recipe, a.sets, w, Path(tmp) / f"{w}-{i}"))
    t1, tw = statistics.median(times[1]), statistics.median(times[a.world])
    print(f"step ms, one process: {', '.join(f'{t * 1e3:.1f}' for t in times[1])} (median {t1 * 1e3:.1f})")
    print(
        f"step ms, {a.world} processes: {', '.join(f'{t * 1e3:.1f}' for t in times[a.world])} (median {tw * 1e3:.1f})"
    )
    print(f"speed-up ({a.world} processes / one): {t1 / tw:.2f}x; load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
