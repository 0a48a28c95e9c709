#!/usr/bin/env bash
# one seed of the BatchEnsemble-at-90-epochs benchmark: teacher, single, be4 (recipe: 90 epochs, T 2), report
set -uo pipefail
cd /work/main
s=$1
export OMP_NUM_THREADS=1
start=$(date +%s)
STUDENTS="be4" tools/cifar10_cpu.sh "$s" runs/c10/s$s > runs/logs/s$s.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - start ))" >> runs/logs/s$s.done
