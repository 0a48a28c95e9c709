#!/usr/bin/env bash
# Copies the evidence of runs/c10full/s{0,1,2} (reports, stage times, summaries) into this folder, and makes the
# 3-seed aggregate and the validation table (see README.md here for the commands that trained the runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
dst=results/cifar10_cpu_all90
py=${PYTHON:-.venv/bin/python}
for s in 0 1 2; do
  src=runs/c10full/s$s
  mkdir -p "$dst/s$s"
  cp "$src"/report/{report.md,report.json,gap.png} "$src/stages.json" "$dst/s$s/"
  cp "$src/teacher/summary.json" "$dst/s$s/summary_teacher.json"
  cp "$src/single/summary.json" "$dst/s$s/summary_single.json"
  for d in "$src"/students/*/; do
    n=$(basename "$d"); [ -f "$d/summary.json" ] && cp "$d/summary.json" "$dst/s$s/summary_$n.json"
  done
done
mkdir -p "$dst/s0/sdde"
cp runs/c10full/s0/sdde/report_teacher/{report.md,report.json,gap.png} runs/c10full/s0/sdde/stages.json "$dst/s0/sdde/"
cp runs/c10full/s0/sdde/teacher/summary.json "$dst/s0/sdde/summary_teacher.json"
"$py" tools/aggregate_reports.py runs/c10full/s0 runs/c10full/s1 runs/c10full/s2 \
  --out results/cifar10_cpu_gap_all90.md --title "CIFAR-10 on the CPU, every student at 90 epochs"
rm -f "$dst/validation.md"  # val_grid appends; this file is made here whole
"$py" tools/val_grid.py runs/c10full/s*/teacher runs/c10full/s*/single runs/c10full/s*/students/* \
  runs/c10full/s0/sdde/teacher --out "$dst/validation.md" --title "validation, seeds 0-2"
