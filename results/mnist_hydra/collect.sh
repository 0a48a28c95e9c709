#!/usr/bin/env bash
# Copies the evidence of runs/mnist/s{0,1,2} (issue 14 on MNIST with Hydra's heads at head_lr_scale 4; README.md
# here) and of the seed-0 validation probe, and makes the 3-seed aggregate.
set -euo pipefail
cd "$(dirname "$0")/../.."
dst=results/mnist_hydra
py=${PYTHON:-.venv/bin/python}
for s in 0 1 2; do
  src=runs/mnist/s$s
  mkdir -p "$dst/s$s"
  cp "$src"/report/{report.md,report.json,gap.png} "$src/stages.json" "$dst/s$s/"
  for st in teacher single students/hydra students/end2; do cp "$src/$st/summary.json" "$dst/s$s/summary_$(basename "$st").json"; done
done
mkdir -p "$dst/probe_s0"
for e in 6 12 24; do cp runs/mnist_probe/s0/hydra_lr4_e$e/summary.json "$dst/probe_s0/summary_hydra_lr4_e$e.json"; done
"$py" - > "$dst/probe_s0/validation.md" <<'PY'
import json
print("| Hydra on seed 0 (head_lr_scale 4) | epochs | selected epoch | val acc | val NLL |")
print("|---|---|---|---|---|")
for e in (6, 12, 24):
    d = json.load(open(f"results/mnist_hydra/probe_s0/summary_hydra_lr4_e{e}.json"))
    h = next(h for h in d["history"] if h["epoch"] == d["best_epoch"])
    print(f"| e{e} | {e} | {d['best_epoch']} | {h['val_acc']:.4f} | {h['val_nll']:.4f} |")
PY
"$py" tools/aggregate_reports.py runs/mnist/s0 runs/mnist/s1 runs/mnist/s2 --out "$dst/gap.md" \
  --title "MNIST (recipes/mnist.yaml): Hydra with head_lr_scale 4 and EnD², seeds 0-2"
