#!/usr/bin/env bash
cd /work/main
export OMP_NUM_THREADS=1
while [ ! -e runs/c10/s0/students/end2_adam/summary.json ]; do sleep 15; done
sleep 90   # summary.json is written before the test metrics
while pgrep -f "name end2" >/dev/null; do sleep 10; done
start=$(date +%s)
.venv/bin/python -m distill evaluate --teacher runs/c10/s0/teacher --single runs/c10/s0/single \
  --student runs/c10/s0/students/be4 --student runs/c10/s0/students/hydra --student runs/c10/s0/students/end2_adam \
  --out runs/c10/s0/report_kinds3 > runs/logs/report_kinds3.log 2>&1
echo "report rc=$? wall=$(( $(date +%s) - start ))" >> runs/logs/report_kinds3.done
