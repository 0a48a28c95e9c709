#!/usr/bin/env bash
cd /work/main
export OMP_NUM_THREADS=1
start=$(date +%s)
.venv/bin/python -m distill student --teacher runs/c10/s0/teacher --recipe recipes/cifar10_cpu_kinds.yaml --name hydra \
  --out runs/c10/s0/students/hydra --set seed=0 > runs/logs/hydra0.log 2>&1
echo "hydra rc=$? wall=$(( $(date +%s) - start ))" >> runs/logs/hydra0.done
while [ ! -e runs/logs/s0.done ]; do sleep 20; done
start=$(date +%s)
.venv/bin/python -m distill evaluate --teacher runs/c10/s0/teacher --single runs/c10/s0/single \
  --student runs/c10/s0/students/be4 --student runs/c10/s0/students/hydra --out runs/c10/s0/report_kinds \
  > runs/logs/report_kinds0.log 2>&1
echo "report rc=$? wall=$(( $(date +%s) - start ))" >> runs/logs/report_kinds0.done
