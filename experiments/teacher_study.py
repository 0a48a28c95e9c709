"""DE vs SDDE (or any teacher recipes) over several seeds: one table of means +- std.

    python experiments/teacher_study.py --recipes recipes/digits_de.yaml recipes/digits_sdde.yaml \
        --seeds 0 1 2 --out runs/study_digits --table results/teacher_digits.md

Each (recipe, seed) trains into OUT/<recipe>/seed<k> (reused when finished from the same recipe, so an
interrupted study continues; a run trained from another recipe is refused). The table reports member and
ensemble test accuracy, ensemble NLL, the mean pairwise CAM cosine similarity (the SDDE diversity measure:
lower = more diverse saliency maps) and the median training time per epoch, and the time ratio of each recipe
to the first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.resolve import load_checked
from distill.reuse import Stage
from distill.stages import run_stage
from distill.train import train_ensemble


def run(recipe_path: Path, seed: int, out: Path, overrides: list[str]) -> dict:
    recipe = load_checked(str(recipe_path), [f"seed={seed}", "run.progress=false", *overrides])
    stage = Stage(f"{recipe_path.stem}/seed{seed}", out, "teacher")
    remedy = "use a new --out, or move the old run aside to train it again"
    return run_stage(recipe, stage, partial(train_ensemble, recipe, out), out.parent.parent, remedy=remedy)


def fmt(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", type=Path, required=True)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--table", type=Path, help="write the markdown table here too")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    rows = []
    base_time = None
    for path in args.recipes:
        summaries = [run(path, s, args.out / path.stem / f"seed{s}", args.overrides) for s in args.seeds]
        tests = [s["test"] for s in summaries]
        epoch_time = statistics.median(s["epoch_time_s_median"] for s in summaries)
        base_time = base_time or epoch_time
        rows.append(
            f"| {path.stem} | {fmt([t['member_acc_mean'] for t in tests])} | {fmt([t['acc'] for t in tests])} | "
            f"{fmt([t['nll'] for t in tests])} | {fmt([t['cam_similarity'] for t in tests])} | "
            f"{epoch_time:.2f} | {epoch_time / base_time:.2f} |"
        )
    header = (
        f"seeds {args.seeds}; test split; mean ± std over seeds\n\n"
        "| recipe | member acc | ensemble acc | ensemble NLL | CAM cosine sim. | s / epoch (median) | time ratio |\n"
        "|---|---|---|---|---|---|---|"
    )
    table = "\n".join([header, *rows])
    print(table)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(table + "\n")


if __name__ == "__main__":
    main()
