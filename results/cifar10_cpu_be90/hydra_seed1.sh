#!/usr/bin/env bash
cd /work/main
export OMP_NUM_THREADS=1
start=$(date +%s)
.venv/bin/python -m distill student --teacher runs/c10/s1/teacher --recipe recipes/cifar10_cpu_kinds.yaml --name hydra \
  --out runs/c10/s1/students/hydra --set seed=1 > runs/logs/hydra1.log 2>&1
echo "hydra rc=$? wall=$(( $(date +%s) - start ))" >> runs/logs/hydra1.done
start=$(date +%s)
.venv/bin/python -m distill evaluate --teacher runs/c10/s1/teacher --single runs/c10/s1/single \
  --student runs/c10/s1/students/be4 --student runs/c10/s1/students/hydra --out runs/c10/s1/report_kinds \
  > runs/logs/report_kinds1.log 2>&1
echo "report rc=$? wall=$(( $(date +%s) - start ))" >> runs/logs/hydra1.done
