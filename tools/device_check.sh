#!/usr/bin/env bash
# The prepared GPU check: one command, sized for about 8 minutes on one H200, a short table last.
#   tools/device_wheels.sh          here, once: kornia + kornia-rs wheels for the device's Python 3.12 into .whl/,
#                                   and the CIFAR-10 / MNIST / notMNIST files into .devdata/ (both git-ignored)
#   tools/device_check.sh           on the device machine (device tool: carry [".whl", ".devdata"]); writes $OUT
#   tools/device_check.sh --tiny    the same steps on the CPU at tiny sizes, in seconds (tests/test_device_check.py)
# Steps: 1. `distill bench --device cuda` (DE / SDDE steps per member mode, fp32 and bf16, the plain per-member
# fp32 loop, student steps per perturbation, inference, an epoch); 2. recipes/cifar10_fast.yaml end to end
# (stages.json: each stage's wall time; the gap report); 3. tools/device_table.py: the table.
# Each step has its own time limit, so a slow one still leaves the table.
set -uo pipefail
tiny=0
[ "${1:-}" = --tiny ] && tiny=1
out=${OUT:-runs/device_check}
py=${PYTHON:-python3}
data=${DATA:-.devdata}
[ -d "$data" ] || data=../shared/data
mkdir -p "$out"
if [ -d .whl ] && ! "$py" -c "import kornia" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "device_check: installing .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$py" - "$out/env.json" <<'PY'
import json, sys, time
import torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
json.dump({"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, open(sys.argv[1], "w"))
PY
if [ $tiny = 1 ]; then
  bench=(--device cpu --quick --sections teacher student)
  limit_bench=120 limit_run=300
  run=(--set data.name=digits --set data.root=null --set data.limit_train=200 --set data.crop_padding=1
       --set data.flip=false --set teacher.arch=tiny_cnn --set teacher.members=2 --set single.arch=tiny_cnn
       --set students.*.arch=tiny_cnn --set teacher.train.epochs=1 --set single.train.epochs=1
       --set students.*.train.epochs=1 --set teacher.train.batch_size=32 --set single.train.batch_size=32
       --set students.*.train.batch_size=32 --set teacher.objective.lam=0.1 --set "evaluate.ood=[]"
       --set evaluate.corruption_limit=50 --set "evaluate.corruptions=[gaussian_noise]"
       --set evaluate.cost.enabled=false --set "run.mixed_precision='no'" --set run.channels_last=false)
else
  bench=(--device cuda --data-root "$data")
  limit_bench=${LIMIT_BENCH:-210} limit_run=${LIMIT_RUN:-270}
  run=(--set data.root="$data" --set evaluate.ood.0.root="$data/mnist" --set evaluate.ood.1.root="$data/notmnist")
fi
t0=$(date +%s)
timeout "$limit_bench" "$py" -m distill bench "${bench[@]}" --out "$out/bench" > "$out/bench.log" 2>&1
echo "bench: rc $? in $(( $(date +%s) - t0 )) s" | tee -a "$out/steps.txt"
t0=$(date +%s)
timeout "$limit_run" "$py" -m distill run recipes/cifar10_fast.yaml --out "$out/fast" "${run[@]}" > "$out/run.log" 2>&1
echo "cifar10_fast: rc $? in $(( $(date +%s) - t0 )) s" | tee -a "$out/steps.txt"
# 3. members spread over processes: the cifar10_fast teacher with run.parallel=members, one process per
# GPU (2 epochs), beside step 2's one-GPU teacher; needs 2 GPUs or more (--tiny: 2 CPU processes, gloo, digits)
if [ $tiny = 1 ]; then
  nproc=2
  spread=(--recipe recipes/digits_de.yaml --set teacher.train.epochs=1 --set data.limit_train=256)
else
  nproc=$("$py" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  spread=(--recipe recipes/cifar10_fast.yaml --set data.root="$data" --set teacher.train.epochs=2)
fi
if [ "$nproc" -ge 2 ]; then
  t0=$(date +%s)
  timeout "${LIMIT_SPREAD:-150}" "$py" -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m distill teacher \
    "${spread[@]}" --set run.parallel=members --set run.progress=false --out "$out/spread" > "$out/spread.log" 2>&1
  echo "spread ($nproc processes): rc $? in $(( $(date +%s) - t0 )) s" | tee -a "$out/steps.txt"
else
  echo "spread: skipped ($nproc GPU; members spread over processes needs 2 or more)" | tee -a "$out/steps.txt"
fi
tail -n 5 "$out/bench.log" "$out/run.log"
"$py" tools/device_table.py "$out"
