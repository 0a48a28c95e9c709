"""Nam et al.'s precondition, measured: do the teacher's members disagree on their clean training images, and how
much more after one step of a perturbation?

    PYTHONPATH=. python experiments/clean_disagreement.py RUN_DIR [RUN_DIR ...] [--images 2000] [--seed 0]
        [--perturb ods confods] [--last] [--out FILE.json]

For each teacher run: the members' accuracy on the training images they were trained on (no augmentation), and on
``--images`` of them drawn class-stratified and seeded (never the first N): the members' pairwise label
disagreement and mutual information (nats) on the clean images, and on the same images after one step of each
perturbation, with the recipe's defaults (ODS / ConfODS: 1/255, Nam et al.'s official step). Diversity Matters
(Nam et al. 2021) argues that members that fit their training data agree on clean training inputs, so distilling
on them shows the student no diversity; the perturbation must find where they disagree.

``--last``: the members of the run's last epoch (its ``state.safetensors``, kept for ``--resume``), not the epoch
its validation selected: members that fit their training data are the end of a long schedule, which best-on-
validation selection may not keep.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from distill.checkpoint import load_tensors
from distill.data.subsets import eval_subset
from distill.perturb import label_disagreement, make_perturbation, mutual_information
from distill.perturb.base import forward_no_grad
from distill.runs import load_run, run_splits


def measure(run_dir: Path, images: int, seed: int, perturbs: list[str], last: bool = False, batch: int = 250) -> dict:
    run = load_run(run_dir)
    chosen = json.loads((run_dir / "model.json").read_text())["epoch"]  # 1-based; = the last under validate_last
    if last:  # the last epoch's weights: the model's entries of the resume state, "model." stripped
        state, meta = load_tensors(run_dir / "state.safetensors")
        run.model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    splits = run_splits(run.data)
    x_all, y_all = splits.train_x, splits.train_y
    fit = []
    for i in range(0, len(x_all), 1000):  # members' training accuracy: logits (M, B, K)
        logits = forward_no_grad(run.model, x_all[i : i + 1000].float() / 255)
        fit.append((logits.argmax(-1) == y_all[i : i + 1000]).float())
    per_member_acc = torch.cat(fit, 1).mean(1)  # (M,)
    idx = eval_subset(y_all, images, seed)
    x, y = x_all[idx].float() / 255, y_all[idx]
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, list[float]] = {"clean": [0.0, 0.0]} | {p: [0.0, 0.0] for p in perturbs}
    methods = {p: make_perturbation(p) for p in perturbs}
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        clean = forward_no_grad(run.model, xb)  # (M, B, K)
        sums["clean"][0] += float(label_disagreement(clean)) * len(xb)  # a batch mean
        sums["clean"][1] += float(mutual_information(clean).sum())
        for name, method in methods.items():
            pert = forward_no_grad(run.model, method(run.model, xb, yb, gen).x)
            sums[name][0] += float(label_disagreement(pert)) * len(xb)
            sums[name][1] += float(mutual_information(pert).sum())
    n = len(x)
    return {
        "run": str(run_dir),
        "weights": f"last epoch ({int(meta['epoch']) + 1})" if last else f"selected on validation (epoch {chosen})",
        "members": int(per_member_acc.numel()),
        "train_images": len(x_all),
        "member_train_acc": [round(float(a), 4) for a in per_member_acc],
        "images": n,
        "seed": seed,
        **{f"{k}_disagreement": round(v[0] / n, 4) for k, v in sums.items()},
        **{f"{k}_mi": round(v[1] / n, 4) for k, v in sums.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--perturb", nargs="*", default=["ods", "confods"])
    ap.add_argument("--last", action="store_true", help="the last epoch's members, not the selected ones")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [measure(r, args.images, args.seed, args.perturb, args.last) for r in args.runs]
    text = json.dumps(rows, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
