#!/usr/bin/env bash
# The "CIFAR-10 on the CPU" benchmark of docs/results.md for one seed:
#   tools/cifar10_cpu.sh SEED OUT [--set KEY=VALUE ...]
# Runs the stages of recipes/cifar10_cpu.yaml one command each, into the layout `distill run` writes:
#   OUT/teacher, OUT/single, OUT/students/<name> for each name in $STUDENTS (default: every student of the
#   recipe), OUT/report (the gap report); with SDDE=1 also the SDDE teacher (same members, schedule and data;
#   lam 0.02 on the summed CE = the official 0.005 on the mean CE) into OUT/teacher_sdde and its report
#   against the same single network into OUT/report_sdde.
# Finished stages are reused, so a rerun with more $STUDENTS adds only those. Wall times of the stages run
# land in OUT/stages.json. Extra arguments go to every training command (a tiny check:
#   STUDENTS="kd" tools/cifar10_cpu.sh 0 runs/tiny --set data.limit_train=500 --set teacher.train.epochs=1 \
#   --set single.train.epochs=1 --set students.0.train.epochs=1).
set -euo pipefail
seed=$1 out=$2
shift 2
py=${PYTHON:-.venv/bin/python}
recipe=${RECIPE:-recipes/cifar10_cpu.yaml}
students=${STUDENTS:-$("$py" -c "
import sys, yaml
print(' '.join(s['name'] for s in yaml.safe_load(open(sys.argv[1]))['students']))" "$recipe")}
mkdir -p "$out"

record() {  # record NAME START: one entry of OUT/stages.json, the seconds since START (date +%s.%N)
  "$py" - "$out/stages.json" "$1" "$2" <<'PY'
import json, os, sys, time
path, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
times = json.load(open(path)) if os.path.isfile(path) else {}
times[name] = round(time.time() - start, 1)
json.dump(times, open(path, "w"), indent=2)
PY
}

stage() {  # stage NAME DIR COMMAND...: run COMMAND unless DIR holds a finished run
  local name=$1 dir=$2
  shift 2
  if grep -qs '"test"' "$dir/summary.json"; then
    echo "[reuse] $dir"
    return
  fi
  local resume=()
  [ -f "$dir/state.safetensors" ] && resume=(--resume)
  echo "== $name -> $dir ($(date -u +%H:%M:%S))"
  local t0
  t0=$(date +%s.%N)
  "$@" --out "$dir" "${resume[@]}"
  record "$name" "$t0"
}

common=(--recipe "$recipe" --set seed="$seed" "$@")
stage teacher "$out/teacher" "$py" -m distill teacher "${common[@]}"
stage single "$out/single" "$py" -m distill single "${common[@]}"
student_args=()
for name in $students; do
  stage "student/$name" "$out/students/$name" \
    "$py" -m distill student --teacher "$out/teacher" --name "$name" "${common[@]}"
  student_args+=(--student "$out/students/$name")
done
t0=$(date +%s.%N)
"$py" -m distill evaluate --teacher "$out/teacher" --single "$out/single" "${student_args[@]}" --out "$out/report"
record report "$t0"

if [ "${SDDE:-0}" = 1 ]; then
  stage teacher_sdde "$out/teacher_sdde" "$py" -m distill teacher "${common[@]}" \
    --set teacher.objective="{name: sdde, lam: 0.02, same_batch: true, ce_reduction: sum}"
  t0=$(date +%s.%N)
  "$py" -m distill evaluate --teacher "$out/teacher_sdde" --single "$out/single" --out "$out/report_sdde"
  record report_sdde "$t0"
fi
