#!/usr/bin/env bash
# The "CIFAR-10 on the CPU" benchmark of docs/results.md for one seed:
#   tools/cifar10_cpu.sh SEED OUT [--set KEY=VALUE ...]
# `distill run` of recipes/cifar10_cpu.yaml into OUT (OUT/teacher, OUT/single, OUT/students/<name>,
# OUT/report, OUT/stages.json), with only the students named in $STUDENTS (default: every student of the
# recipe). Finished stages are reused only when they were trained from the same recipe (distill/reuse.py), so
# a rerun with more $STUDENTS trains only those, and a changed recipe is refused instead of reused.
# With SDDE=1 also the SDDE teacher (same members, schedule and data; lam 0.02 on the summed CE = the official
# 0.005 on the mean CE) into OUT/sdde, reported against the same single network (linked in, then checked as
# any reused stage is) with the students in $SDDE_STUDENTS (default: kd; set and empty: the teacher and its
# report only, without controls).
# A tiny check:
#   STUDENTS="kd" tools/cifar10_cpu.sh 0 runs/tiny --set data.limit_train=500 --set teacher.train.epochs=1 \
#   --set single.train.epochs=1 --set students.*.train.epochs=1
set -euo pipefail
seed=$1 out=$2
shift 2
py=${PYTHON:-.venv/bin/python}
recipe=${RECIPE:-recipes/cifar10_cpu.yaml}
only=()
for name in ${STUDENTS:-}; do only+=(--students "$name"); done
"$py" -m distill run "$recipe" --out "$out" --set seed="$seed" "${only[@]}" "$@"

if [ "${SDDE:-0}" = 1 ]; then
  mkdir -p "$out/sdde"
  [ -e "$out/sdde/single" ] || cp -al "$out/single" "$out/sdde/single"
  # the controls learn nothing from the teacher: the SDDE report reuses the DE run's (checked as any reused stage)
  if [ -d "$out/controls" ] && [ ! -e "$out/sdde/controls" ]; then cp -al "$out/controls" "$out/sdde/controls"; fi
  sdde_only=()
  for name in ${SDDE_STUDENTS-kd}; do sdde_only+=(--students "$name"); done
  [ ${#sdde_only[@]} -gt 0 ] || sdde_only=(--set "students=[]" --set "controls=[]")
  "$py" -m distill run "$recipe" --out "$out/sdde" --set seed="$seed" "${sdde_only[@]}" "$@" \
    --set teacher.objective="{name: sdde, lam: 0.02, same_batch: true, ce_reduction: sum}"
fi
