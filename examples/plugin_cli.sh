#!/usr/bin/env bash
# Your own architecture from the command line: examples/my_models.py registers 'my_cnn' (a logits-only nn.Module);
# `--plugin` imports it for the teacher, and every later command (a fresh process each) imports it again from the
# run directory's record. The teacher's members are then saved as ordinary state dicts (.safetensors and .pt, the
# user's own key names) and imported back with `distill import-teacher`, which must give the same test metrics.
#
#   examples/plugin_cli.sh [OUT]        QUICK=1 for a smoke run (what tests/test_examples.py runs)
#   PYTHON=.venv/bin/python examples/plugin_cli.sh /tmp/plugin_demo
#
# Under 2 minutes on 2 CPU cores without QUICK.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$(mktemp -d -t distill_plugin_cli.XXXXXX)}"
PY="${PYTHON:-python}"
distill() { "$PY" -m distill "$@"; }
mkdir -p "$OUT"

if [[ "${QUICK:-0}" == 1 ]]; then EPOCHS=1; LIMIT="limit_train: 300"; CORRUPTIONS="[]"; else EPOCHS=4; LIMIT=""; CORRUPTIONS="[gaussian_noise, contrast]"; fi
cat > "$OUT/recipe.yaml" <<EOF
seed: 0
data: {name: digits, ${LIMIT}}
x-train: &train {epochs: ${EPOCHS}, batch_size: 64, optim: {name: sgd, lr: 0.05}}
teacher: {arch: my_cnn, members: 3, objective: {name: sdde}, train: *train}   # SDDE's Grad-CAM term via the hook
student: {arch: my_cnn, train: *train}
evaluate:
  ood: [{name: sample_patches, group: far}]
  corruptions: ${CORRUPTIONS}
  corruption_limit: 150
  diversity_images: 100
  cost: {enabled: false}
  bootstrap: 200
EOF

echo "== teacher (--plugin $HERE/my_models.py)"
distill teacher --plugin "$HERE/my_models.py" --recipe "$OUT/recipe.yaml" --out "$OUT/teacher"
echo "== student (no --plugin: the teacher's model.json records it)"
distill student --teacher "$OUT/teacher" --recipe "$OUT/recipe.yaml" --out "$OUT/student"

echo "== export and evaluate, each in a fresh process"
distill export "$OUT/student" --format onnx --out "$OUT/student.onnx"
distill evaluate --teacher "$OUT/teacher" --student "$OUT/student" --out "$OUT/report"

echo "== the members as a user's own checkpoints, imported back as a teacher"
"$PY" - "$OUT" <<'EOF'
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

out = Path(sys.argv[1])
weights = load_file(str(out / "teacher" / "model.safetensors"))
for m in range(3):
    prefix = f"members.{m}.net.module."  # the ensemble's member m, as the user's MyCNN names its tensors
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if m == 1:
        save_file(state, str(out / f"member{m}.safetensors"))
    else:
        torch.save(state, out / f"member{m}.pt")
EOF
# my_cnn was trained behind the training split's own standardisation: --normalization-from-data says so
distill import-teacher --plugin "$HERE/my_models.py" --arch my_cnn \
    --checkpoint "$OUT/member0.pt" --checkpoint "$OUT/member1.safetensors" --checkpoint "$OUT/member2.pt" \
    --normalization-from-data --recipe "$OUT/recipe.yaml" --out "$OUT/imported"

"$PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
trained = json.loads((out / "teacher" / "summary.json").read_text())["test"]
imported = json.loads((out / "imported" / "summary.json").read_text())["test"]
print(f"trained teacher acc {trained['acc']:.4f} nll {trained['nll']:.4f}; imported acc {imported['acc']:.4f} nll {imported['nll']:.4f}")
assert imported["acc"] == trained["acc"] and abs(imported["nll"] - trained["nll"]) < 1e-9, (trained, imported)
plugins = json.loads((out / "student" / "model.json").read_text())["plugins"]
print("the student records", [(p["path"], p["sha256"][:12]) for p in plugins])
EOF
echo "done: $OUT"
