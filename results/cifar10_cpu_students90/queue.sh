#!/usr/bin/env bash
# queue.sh WAITFILE JOB...: wait for WAITFILE, then run each JOB "seed:kind:epochs" (kind kd or single), one thread
set -uo pipefail
wait_for=$1; shift
while [ ! -e "$wait_for" ]; do sleep 20; done
export OMP_NUM_THREADS=1
for job in "$@"; do
  IFS=: read -r seed kind ep <<< "$job"
  s1=$(date +%s)
  if [ "$kind" = kd ]; then
    bash runs/tune/go.sh $seed kd_a09_t2_e$ep kd 0.9 2 --set students.*.train.epochs=$ep
  else
    nice -n 5 .venv/bin/python -m distill single --recipe recipes/cifar10_cpu.yaml --out runs/tune/s$seed/single_e$ep \
      --set seed=$seed --set single.train.epochs=$ep > runs/tune/s$seed/single_e$ep.log 2>&1
    echo "single_e$ep s$seed $(( $(date +%s) - s1 )) s" >> runs/tune/times.txt
  fi
done
