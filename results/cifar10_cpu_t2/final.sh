#!/usr/bin/env bash
# final.sh SEED: kd and confods at alpha 0.9 / T 2 (chosen on seed 0's validation split), then the report
set -euo pipefail
seed=$1
export OMP_NUM_THREADS=1
[ -f runs/tune/s$seed/kd_a09_t2/summary.json ] || runs/tune/go.sh $seed kd_a09_t2 kd 0.9 2.0
[ -f runs/tune/s$seed/confods_a09_t2/summary.json ] || runs/tune/go.sh $seed confods_a09_t2 confods 0.9 2.0
s0=$(date +%s)
nice -n 5 .venv/bin/python -m distill evaluate --teacher runs/c10/s$seed/teacher --single runs/c10/s$seed/single \
  --student runs/tune/s$seed/kd_a09_t2 --student runs/tune/s$seed/confods_a09_t2 --out runs/c10/s$seed/report_t2 \
  > runs/tune/s$seed/report_t2.log 2>&1
echo "report s$seed $(( $(date +%s) - s0 )) s" >> runs/tune/times.txt
