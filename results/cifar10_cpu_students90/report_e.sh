#!/usr/bin/env bash
# report_e.sh SEED: the gap report of the 30-epoch teacher and single network with the kd students at 30, 60, 90 epochs
set -euo pipefail
seed=$1
export OMP_NUM_THREADS=1
while [ ! -f runs/tune/s$seed/kd_a09_t2_e90/summary.json ]; do sleep 20; done
s0=$(date +%s)
nice -n 5 .venv/bin/python -m distill evaluate --teacher runs/c10/s$seed/teacher --single runs/c10/s$seed/single \
  --student runs/tune/s$seed/kd_a09_t2 --student runs/tune/s$seed/kd_a09_t2_e60 --student runs/tune/s$seed/kd_a09_t2_e90 \
  --out runs/c10/s$seed/report_e > runs/tune/s$seed/report_e.log 2>&1
echo "report_e s$seed $(( $(date +%s) - s0 )) s" >> runs/tune/times.txt
