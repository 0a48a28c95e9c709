"""Validation numbers of trained runs, as a markdown table: what a tuning grid is chosen on (never the test split).

    python tools/val_grid.py runs/tune/* --out results/cifar10_cpu_tuning.md --title "student grid, seed 0"

For each run directory (one holding ``summary.json``): the epoch the loop selected (lowest validation NLL),
its validation accuracy and NLL, the last epoch's, and the median epoch time. The test numbers in the summary
are not printed, so a grid read from this table cannot be picked on test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(run: Path) -> list[str]:
    s = json.loads((run / "summary.json").read_text())
    hist = s["history"]
    best = hist[s["best_epoch"] - 1] if s.get("best_epoch", 0) > 0 else hist[-1]
    last = hist[-1]
    return [
        str(run),  # the path as given: runs of several seeds share their last component
        str(best["epoch"]),
        f"{best['val_acc']:.4f}",
        f"{best['val_nll']:.4f}",
        f"{last['val_acc']:.4f}",
        f"{last['val_nll']:.4f}",
        f"{s['epoch_time_s_median']:.1f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    runs = [r for r in args.runs if (r / "summary.json").is_file()]
    head = ["run", "selected epoch", "val acc", "val NLL", "last val acc", "last val NLL", "epoch s (median)"]
    lines = [args.title, ""] if args.title else []
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(row(r)) + " |" for r in runs]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
