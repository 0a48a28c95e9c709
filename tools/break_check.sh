#!/usr/bin/env bash
# Tests that can fail: break one feature at a time in a scratch worktree of HEAD, run the test that guards it, and
# print whether it failed (it must). The tree you work in is not touched.
#   tools/break_check.sh            (about 2 minutes on 2 cores; docs/testing.md has the last output)
set -euo pipefail
root=$(git rev-parse --show-toplevel)
py=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
git -C "$root" worktree add --detach "$work" HEAD > /dev/null
trap 'git -C "$root" worktree remove --force "$work"' EXIT
cd "$work"
case_() {  # name, file, old text, new text, test selector
  local name=$1 file=$2 old=$3 new=$4 sel=$5
  cp "$file" "$work/.orig"
  "$py" - "$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:]
s = open(p).read()
assert old in s, f"{p}: the text to break is gone: {old!r}"
open(p, "w").write(s.replace(old, new, 1))
PY
  if OMP_NUM_THREADS=1 "$py" -m pytest -p no:cacheprovider -q -x "$sel" > "$work/$name.log" 2>&1; then
    echo "$name: the feature is broken and its test PASSED: the test cannot fail"; status=1
  else
    echo "$name: broken -> test failed: $(grep -m1 -E '^E ' "$work/$name.log" | cut -c1-110)"
  fi
  cp "$work/.orig" "$file"
}
status=0
case_ autocast distill/loop.py "with acc.autocast():" 'with __import__("contextlib").nullcontext():' \
  tests/test_loop.py::test_mixed_precision_reaches_the_convolutions_of_the_step
case_ search_skipped distill/perturb/disagree.py "    return finish(x_orig, best_x, logits_clean, best_logits, extra)" \
  "    return finish(x_orig, x_orig.clone(), logits_clean, logits_clean, extra)" \
  tests/test_perturb.py::test_disagree_beats_a_random_step_of_its_size_on_its_objective
case_ auto_rule distill/models/ensemble.py "            return AUTO_CUDA_MODE" '            return "loop"' \
  tests/test_ensemble_modes.py::test_modes_checked_and_auto_resolution
case_ declared_ood distill/report/ood.py "    name = overrides.get(ood_kind(kind, size), readout.primary_score(size))" \
  "    name = overrides.get(ood_kind(kind, size), 'max_logit')" tests/test_intervals.py
case_ first_n distill/data/subsets.py "    return stratified_subset(y, min(n, len(y)), seed, seeded_ties=True)" \
  "    return torch.arange(min(n, len(y)))" tests/test_report_subsets.py
case_ share_of_noise distill/report/intervals.py '    if gain.verdict != "better":' "    if False:" tests/test_intervals.py
case_ provenance distill/report/runs.py "    if recorded != source_sha256:" "    if False:" tests/test_provenance.py
exit $status
