#!/usr/bin/env bash
# go.sh SEED NAME STUDENT ALPHA T [extra --set ...]
set -euo pipefail
seed=$1 name=$2 st=$3 a=$4 t=$5; shift 5
export OMP_NUM_THREADS=1
out=runs/tune/s$seed/$name
mkdir -p runs/tune/s$seed
s0=$(date +%s)
nice -n 5 .venv/bin/python -m distill student --teacher runs/c10/s$seed/teacher --recipe recipes/cifar10_cpu.yaml \
  --name $st --out $out --set seed=$seed --set students.*.alpha=$a --set students.*.temperature=$t "$@" > runs/tune/s$seed/$name.log 2>&1
echo "$name $(( $(date +%s) - s0 )) s" >> runs/tune/times.txt
