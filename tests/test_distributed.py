"""The teacher under `accelerate launch` with 2 CPU processes (gloo): the ranks train on disjoint shards whose union
is the one-process batch, the weights after every step equal a one-process run at the same global batch, SDDE's
double backprop runs under DistributedDataParallel, and exactly one process writes checkpoints and logs."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from distill.checkpoint import load_tensors
from distill.models.registry import ARCHS
from distill.recipe import recipe_from_dict
from distill.train import train_ensemble

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
PER_PROCESS_BATCH = 16
N_TRAIN = 128
# Float reduction order is the only difference between the runs: gloo sums the two ranks' fp32 gradients and
# divides by 2, the one-process run sums 32 samples in one kernel (with another thread count). With SGD and no
# BatchNorm or dropout the weights agree to float32 rounding (6e-8 measured, at 256 images); 1e-6 leaves a 10x
# margin, and a wrong shard, a missing all-reduce or a double-counted gradient moves them by ~1e-3 or more (the
# training itself moves every tensor by more than 100x the tolerance, checked below).
WEIGHT_ATOL = 1e-6


def _worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recipe(batch_size: int) -> dict:
    train = {"epochs": 2, "batch_size": batch_size, "optim": {"lr": 0.05}}
    objective = {"name": "sdde", "lam": 0.1, "same_batch": False}  # per-member orders and the double backprop
    return {
        "seed": 3,
        "data": {"name": "digits", "limit_train": N_TRAIN, "augment": False},
        "teacher": {"arch": "test_ddp_probe", "members": 2, "objective": objective, "train": train},
        "run": {"progress": False, "log_every": 4},
    }


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state, _ = load_tensors(run / "state.safetensors")  # the last epoch's weights (model.safetensors: the best)
    return {k: v for k, v in state.items() if k.startswith("model.")}


def test_two_processes_train_disjoint_shards_to_the_one_process_weights(tmp_path, monkeypatch):
    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.exists() and shutil.which("accelerate") is None:
        pytest.skip("the accelerate launcher is not installed")
    recipe_file = tmp_path / "ddp.yaml"
    recipe_file.write_text(yaml.safe_dump(_recipe(PER_PROCESS_BATCH)))
    out, seen = tmp_path / "ddp", tmp_path / "indices"
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
        str(WORKER),
        str(seen),
        "teacher",
        "--recipe",
        str(recipe_file),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the one-process run at the same global batch, in this process
    worker = _worker()
    monkeypatch.setitem(ARCHS, worker.ARCH, worker.Probe)  # registered for this test only
    one = tmp_path / "one"
    train_ensemble(recipe_from_dict(_recipe(2 * PER_PROCESS_BATCH)), one)

    # each rank trained on its own shard: per epoch and view, disjoint index sets whose union, step by step, is
    # the one-process run's batch
    r0, r1 = (json.loads((seen / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) == 2 * 2  # 2 epochs x 2 views (same_batch: false gives each member its own order)
    steps = N_TRAIN // (2 * PER_PROCESS_BATCH)
    for a, b in zip(r0, r1):
        assert (a["epoch"], a["view"], a["world"]) == (b["epoch"], b["view"], b["world"]) and a["world"] == 2
        assert len(a["indices"]) == len(b["indices"]) == steps * PER_PROCESS_BATCH
        assert not set(a["indices"]) & set(b["indices"])
        g = torch.Generator().manual_seed(3 * 1_000_003 + a["epoch"] * 1009 + a["view"])  # the one-process order
        full = torch.randperm(N_TRAIN, generator=g).tolist()
        for s in range(steps):
            batch = slice(s * PER_PROCESS_BATCH, (s + 1) * PER_PROCESS_BATCH)
            union = sorted(a["indices"][batch] + b["indices"][batch])
            assert union == sorted(full[2 * s * PER_PROCESS_BATCH : 2 * (s + 1) * PER_PROCESS_BATCH])

    # the same weights as one process after 2 epochs x 4 steps
    ddp, single = _weights(out), _weights(one)
    assert ddp.keys() == single.keys() and ddp
    diff = max((ddp[k] - single[k]).abs().max().item() for k in ddp)
    moved = min((single[k] - v).abs().max().item() for k, v in _init_weights(tmp_path).items())
    assert diff < WEIGHT_ATOL, f"max |w_ddp - w_one| = {diff:.2e}"
    assert moved > 100 * WEIGHT_ATOL  # every tensor trained far beyond the tolerance: the comparison has teeth

    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["replicas_in_sync"] is True
    assert all(h["div"] == h["div"] and h["div"] != 0 for h in summary["history"])  # the CAM term ran each epoch
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # one process logs
    assert sorted(p.name for p in out.iterdir()) == [
        "model.json",
        "model.safetensors",
        "state.safetensors",
        "summary.json",
        "tb",
    ]
    assert proc.stdout.count("summary:") == 1  # one process prints the summary


def _init_weights(tmp_path: Path) -> dict[str, torch.Tensor]:
    """The weights both runs start from (the recipe's seed), after 0 epochs: to show how far training moved them."""
    from distill.data.base import DatasetMeta
    from distill.models import build_model, ensemble_spec

    info = json.loads((tmp_path / "one" / "model.json").read_text())
    torch.manual_seed(3)
    model = build_model(ensemble_spec("test_ddp_probe", 2), DatasetMeta.from_json(info["meta"]))
    return {f"model.{k}": v.detach() for k, v in model.named_parameters()}  # not the fixed normalisation buffers
