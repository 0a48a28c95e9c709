#!/usr/bin/env bash
# The CIFAR-10 CPU teacher (recipes/cifar10_cpu.yaml, 4 x airnet_cpu DE) in fp32 and under bf16 autocast, seeds
# 0-2, both on this session's machine (README.md here): copies the summaries and writes table.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
dst=results/cifar10_bf16
py=${PYTHON:-.venv/bin/python}
for p in fp32 bf16; do for s in 0 1 2; do
  mkdir -p "$dst/$p"; cp "runs/c10$p/s$s/teacher/summary.json" "$dst/$p/summary_teacher_s$s.json"
done; done
"$py" - > "$dst/table.md" <<'PY'
import json
import statistics as st

rows = {}
for p in ("fp32", "bf16"):
    for s in (0, 1, 2):
        d = json.load(open(f"results/cifar10_bf16/{p}/summary_teacher_s{s}.json"))
        h = next(h for h in d["history"] if h["epoch"] == d["best_epoch"])
        rows[p, s] = (h["val_acc"], h["val_nll"], d["test"]["acc"], d["test"]["nll"], d["epoch_time_s_median"])
names = ("val acc", "val NLL", "test acc", "test NLL", "epoch s (median)")
print("| precision | seed | " + " | ".join(names) + " |")
print("|---|---|" + "---|" * len(names))
for (p, s), r in rows.items():
    print(f"| {p} | {s} | " + " | ".join(f"{v:.4f}" if i < 4 else f"{v:.2f}" for i, v in enumerate(r)) + " |")
for p in ("fp32", "bf16"):
    cols = list(zip(*(rows[p, s] for s in (0, 1, 2))))
    print(f"| {p} | mean ± std | " + " | ".join(
        f"{st.mean(c):.4f} ± {st.stdev(c):.4f}" if i < 4 else f"{st.median(c):.2f} (median)" for i, c in enumerate(cols)) + " |")
diff = [rows["bf16", s][1] - rows["fp32", s][1] for s in (0, 1, 2)]
print(f"\nbf16 - fp32 val NLL per seed: " + ", ".join(f"{d:+.4f}" for d in diff))
print("fp32 / bf16 epoch time per seed: " + ", ".join(f"{rows['fp32', s][4] / rows['bf16', s][4]:.2f}x" for s in (0, 1, 2)))
PY
cat "$dst/table.md"
