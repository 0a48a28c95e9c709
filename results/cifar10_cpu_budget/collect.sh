#!/usr/bin/env bash
# Copies the evidence of the timed run runs/c10v2/s0 (see README.md here) into this folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
dst=results/cifar10_cpu_budget src=runs/c10v2/s0
py=${PYTHON:-.venv/bin/python}
mkdir -p "$dst/sdde"
cp "$src"/report/{report.md,report.json,gap.png} "$src/stages.json" "$dst/"
cp "$src/teacher/summary.json" "$dst/summary_teacher.json"
cp "$src/single/summary.json" "$dst/summary_single.json"
for d in "$src"/students/*/; do cp "$d/summary.json" "$dst/summary_$(basename "$d").json"; done
cp "$src/sdde/stages.json" "$src"/sdde/report/{report.md,report.json} "$dst/sdde/"
cp "$src/sdde/teacher/summary.json" "$dst/sdde/summary_teacher.json"
rm -f "$dst/stage_overhead.md"  # the tools append; this file is made here whole
"$py" tools/stage_overhead.py runs/c10full/s0 --out "$dst/stage_overhead.md"
"$py" tools/stage_overhead.py runs/c10full/s0/sdde --out "$dst/stage_overhead.md"
"$py" tools/stage_overhead.py "$src" --out "$dst/stage_overhead.md"
"$py" tools/stage_overhead.py "$src/sdde" --out "$dst/stage_overhead.md"
