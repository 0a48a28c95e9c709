"""What the evaluation passes cost by memory layout and batch size: ``predict_logits`` (the loop's validation,
the report's predictions) of a CIFAR-sized single network and BatchEnsemble on the CPU.

    OMP_NUM_THREADS=2 PYTHONPATH=. python experiments/eval_layout.py [ARCH] [--images N] [--reps R]

Random weights and images (the cost does not depend on them); eval mode; each case predicts the same N images;
cases timed round-robin after one warm-up call each (distill.bench.timing.interleaved), medians. Prints ms per
image and each case's speed-up over the contiguous batch-512 case of the same model.
"""

from __future__ import annotations

import argparse

import torch

from distill.bench.timing import interleaved, stats
from distill.data.base import DatasetMeta
from distill.models import build_model, ensemble_spec
from distill.models.ensemble import to_channels_last
from distill.predict import predict_logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", nargs="?", default="airnet_cpu")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    meta = DatasetMeta("cifar10", 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    specs = {"single": ensemble_spec(args.arch, 1), "be4": {"kind": "batchensemble", "arch": args.arch, "members": 4}}
    cases = {}
    for name, spec in specs.items():
        plain = build_model(spec, meta).eval()
        cl = to_channels_last(build_model(spec, meta).eval())
        for layout, model in (("contiguous", plain), ("channels_last", cl)):
            for bs in (128, 256, 512):
                cases[f"{name} {layout} {bs}"] = lambda m=model, b=bs: predict_logits(m, x, b, "cpu")
    times = interleaved(cases, torch.device("cpu"), args.reps, 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images, {args.reps} reps")
    print("| model | layout | batch | ms / image | x contiguous 512 |")
    print("|---|---|---|---|---|")
    for key, t in times.items():
        name, layout, bs = key.split()
        ms = stats(t)["median_ms"] / args.images
        base = stats(times[f"{name} contiguous 512"])["median_ms"] / args.images
        print(f"| {name} | {layout} | {bs} | {ms:.4f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
