"""Accuracy of one trained run under every corruption and severity: a markdown table.

    python tools/corruption_accuracy.py RUN_DIR [--root DATA] [--images 1000] [--extras] \
        [--frost-images DIR] [--seed 0] [--subset-seed 0] [--batch-size 250] [--out results/corruption_accuracy.md]

``--images`` test images of the run's own data (its recipe's ``data`` section; ``--root`` overrides where the
dataset lies), drawn class-stratified with ``--subset-seed`` as the report draws them, corrupted as the report's
sweep corrupts them (image i's noise from ``(seed, i)``), scored by the accuracy of the run's averaged
probabilities. Rows: the 15 CIFAR-10-C corruptions (and the 4
extras with ``--extras``); with ``--frost-images``, one more row for frost made from the photos.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from distill.checkpoint import load_model
from distill.data.corruptions import BENCHMARK, EXTRAS, SEVERITIES
from distill.data.subsets import eval_subset
from distill.metrics import accuracy
from distill.predict import predict_logits
from distill.recipe import recipe_from_dict
from distill.report.corruption import corrupted
from distill.report.predictions import mean_probs64
from distill.train import load_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run directory (model.json, model.safetensors)")
    ap.add_argument("--root", help="where the run's dataset lies (default: its recipe's data.root)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--extras", action="store_true", help="also the 4 extra corruptions of the release")
    ap.add_argument("--frost-images", help="directory of the frost photos: adds a row for frost from them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subset-seed", type=int, default=0, help="seed of the class-stratified draw of test images")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args()

    model, info = load_model(args.run)
    recipe = recipe_from_dict(info["recipe"])
    data = recipe.data if args.root is None else dataclasses.replace(recipe.data, root=args.root)
    splits = load_splits(data)
    idx = eval_subset(splits.test_y, args.images, args.subset_seed)  # the split may be class-sorted
    x, y = splits.test_x[idx], splits.test_y[idx]

    def acc(images: torch.Tensor) -> float:
        return accuracy(mean_probs64(predict_logits(model, images, args.batch_size, "cpu")), y)

    rows = [(n, n, None) for n in [*BENCHMARK, *(EXTRAS if args.extras else ())]]
    if args.frost_images:
        rows.insert(BENCHMARK.index("frost") + 1, ("frost (photos)", "frost", args.frost_images))
    start = time.perf_counter()
    clean = acc(x)
    lines = [
        f"{args.run}: accuracy on {len(y)} test images of {data.name} drawn class-stratified (seed "
        f"{args.subset_seed}), clean {clean:.4f}; corruption seed {args.seed}",
        "",
        "| corruption | " + " | ".join(f"s{s}" for s in SEVERITIES) + " | mean |",
        "|---|" + "---|" * (len(SEVERITIES) + 1),
    ]
    benchmark_means = []
    for label, name, frost in rows:
        accs = [acc(corrupted(x, name, s, args.batch_size, args.seed, frost)) for s in SEVERITIES]
        mean = statistics.fmean(accs)
        if frost is None and name in BENCHMARK:
            benchmark_means.append(mean)
        lines.append(f"| {label} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {mean:.3f} |")
        print(lines[-1], flush=True)
    lines += ["", f"mean over the 15 (synthetic frost): {statistics.fmean(benchmark_means):.4f}"]
    lines.append(f"({time.perf_counter() - start:.0f} s)")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
