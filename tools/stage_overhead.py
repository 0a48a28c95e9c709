"""Where each stage's wall time goes besides its training epochs: validation, checkpoints, the final test pass.

    python tools/stage_overhead.py runs/c10full/s0 [--out FILE]

For a pipeline run directory (``stages.json`` with the wall seconds of each stage, and each stage's
``summary.json``): the stage's wall time, the sum of its training epochs (``epoch_times_s``, which the loop
times without validation), the rest, and how many epochs were validated (history entries with ``val_nll``),
so the rest per validated epoch shows what one validation pass (and its checkpoint) costs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def stage_dir(run: Path, stage: str) -> Path:
    kind, _, name = stage.partition("/")
    return run / "students" / name if kind == "student" else run / stage


def rows(run: Path) -> list[list[str]]:
    out = []
    for stage, wall in json.loads((run / "stages.json").read_text()).items():
        summary = stage_dir(run, stage) / "summary.json"
        if not summary.is_file() or not isinstance(wall, (int, float)):
            continue
        s = json.loads(summary.read_text())
        train = sum(s["epoch_times_s"])
        validated = sum("val_nll" in h for h in s["history"])
        rest = wall - train
        out.append([stage, f"{wall:.1f}", f"{train:.1f}", f"{rest:.1f}", str(validated), f"{rest / validated:.2f}"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    head = ["stage", "wall s", "training epochs s", "rest s", "epochs validated", "rest per validated epoch s"]
    lines = [f"{args.run}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(args.run)]
    text = "\n".join(lines) + "\n"
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
