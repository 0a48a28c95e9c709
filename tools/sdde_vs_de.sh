#!/usr/bin/env bash
# SDDE vs DE, de-confounded, for one seed (recipes/cifar10_cpu_sdde.yaml; docs/results.md):
#   tools/sdde_vs_de.sh SEED OUT [--set KEY=VALUE ...]
# One `distill run` per teacher arm into OUT/<arm>, each with the recipe's single network (trained once in
# OUT/de, linked into the other arms and checked there as any reused stage). $ARMS picks the arms
# (default: de sdde_eval sdde_train; also de_shared, sdde_shared).
# A tiny check:
#   ARMS="de sdde_eval" tools/sdde_vs_de.sh 0 runs/tiny --set data.limit_train=500 --set teacher.train.epochs=1 \
#   --set single.train.epochs=1
set -euo pipefail
seed=$1 out=$2
shift 2
py=${PYTHON:-.venv/bin/python}
recipe=${RECIPE:-recipes/cifar10_cpu_sdde.yaml}
sdde="name: sdde, lam: 0.02, ce_reduction: sum"
objective() {
  case $1 in
    de) echo "{name: de, same_batch: false, ce_reduction: sum}" ;;
    sdde_eval) echo "{$sdde, same_batch: false, diversity_bn: eval}" ;;
    sdde_train) echo "{$sdde, same_batch: false, diversity_bn: train}" ;;
    de_shared) echo "{name: de, same_batch: true, ce_reduction: sum}" ;;
    sdde_shared) echo "{$sdde, same_batch: true}" ;;
    *) echo "tools/sdde_vs_de.sh: unknown arm '$1' (de, sdde_eval, sdde_train, de_shared, sdde_shared)" >&2; exit 2 ;;
  esac
}
arms=${ARMS:-de sdde_eval sdde_train}
for arm in $arms; do objective "$arm" >/dev/null; done  # every arm named right before anything trains
first=""
for arm in $arms; do
  mkdir -p "$out/$arm"
  if [ -n "$first" ] && [ ! -e "$out/$arm/single" ] && [ -d "$out/$first/single" ]; then
    cp -al "$out/$first/single" "$out/$arm/single"
  fi
  "$py" -m distill run "$recipe" --out "$out/$arm" --set seed="$seed" --set teacher.objective="$(objective "$arm")" "$@"
  first=${first:-$arm}
done
