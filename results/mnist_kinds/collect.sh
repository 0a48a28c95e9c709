#!/usr/bin/env bash
# Copies the evidence of runs/mnist/s{0,1} (issue 14's students on MNIST; README.md here) and makes the aggregate.
set -euo pipefail
cd "$(dirname "$0")/../.."
dst=results/mnist_kinds
py=${PYTHON:-.venv/bin/python}
for s in 0 1; do
  src=runs/mnist/s$s
  mkdir -p "$dst/s$s"
  cp "$src"/report/{report.md,report.json,gap.png} "$src/stages.json" "$dst/s$s/"
  for st in teacher single students/hydra students/end2; do cp "$src/$st/summary.json" "$dst/s$s/summary_$(basename "$st").json"; done
done
"$py" tools/aggregate_reports.py runs/mnist/s0 runs/mnist/s1 --out "$dst/gap.md" \
  --title "MNIST (recipes/mnist.yaml): the Hydra and EnD² students, seeds 0-1"
