#!/usr/bin/env bash
# The "CIFAR-10 on the CPU" benchmark of docs/results.md for one seed:
#   tools/cifar10_cpu.sh SEED OUT [--set KEY=VALUE ...]
# 1. the pipeline of recipes/cifar10_cpu.yaml (DE teacher, single network, students, gap report) into OUT;
# 2. the SDDE teacher (same members, schedule and data; lam 0.02 on the summed CE = the official 0.005 on
#    the mean CE) into OUT/teacher_sdde, and its report against the
#    same single network into OUT/report_sdde.
# Wall times of every stage land in OUT/stages.json. Extra arguments go to every command (e.g. a tiny check:
#   tools/cifar10_cpu.sh 0 runs/tiny --set data.limit_train=500 --set x-train.epochs=1 ...).
set -euo pipefail
seed=$1 out=$2
shift 2
py=${PYTHON:-.venv/bin/python}
recipe=recipes/cifar10_cpu.yaml
"$py" -m distill run "$recipe" --out "$out" --set seed="$seed" "$@"
sdde=(--set teacher.objective="{name: sdde, lam: 0.02, same_batch: true, ce_reduction: sum}")
start=$(date +%s.%N)
if [ ! -f "$out/teacher_sdde/summary.json" ]; then
  "$py" -m distill teacher --recipe "$recipe" --out "$out/teacher_sdde" --set seed="$seed" "${sdde[@]}" "$@"
fi
mid=$(date +%s.%N)
"$py" -m distill evaluate --teacher "$out/teacher_sdde" --single "$out/single" --out "$out/report_sdde"
end=$(date +%s.%N)
"$py" - "$out/stages.json" "$start" "$mid" "$end" <<'PY'
import json, sys
path, start, mid, end = sys.argv[1], *map(float, sys.argv[2:])
times = json.load(open(path))
times.setdefault("teacher_sdde", round(mid - start, 1))
times["report_sdde"] = round(end - mid, 1)
json.dump(times, open(path, "w"), indent=2)
PY
