"""The short table tools/device_check.sh prints last: the card, the bench's step ratios, each stage's wall
time and the gap, read from the check's output folder.

    python tools/device_table.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _f(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def bench_lines(b: dict | None) -> list[str]:
    if b is None:
        return ["bench: no bench.json (see bench.log)"]
    lines = []
    t = b.get("teacher")
    if t is not None:
        c = b["config"]
        lines.append(f"teacher step, {c['members']} x {c['arch']}, batch {c['batch']} per member (median ms):")
        lines += [f"  {k:28s} {v['median_ms']:9.1f}" for k, v in t["steps"].items()]
        lines.append(f"  plain fp32 loop / best DE ({t['best_de']}): {_f(t['plain_over_best_de'])}x  (goal >= 3)")
        lines.append(f"  SDDE / DE, best setting: {_f(t['best_sdde_over_best_de'])}x  (goal <= 1.8)")
        lines.append(f"  DE member-images/s ({t['mode']}): {t['de_member_images_per_s']:,.0f}")
    s = b.get("student")
    if s is not None:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in s["over_plain_kd"].items())
        lines.append(f"student step / plain KD: {ratios}  (goal: confods <= 1.5)")
    inf = b.get("inference")
    if inf is not None:
        peaks = {k: v.get("peak_memory_mb") for k, v in inf.items() if isinstance(v, dict) and "peak_memory_mb" in v}
        if peaks:
            lines.append("inference peak memory MB: " + ", ".join(f"{k} {_f(v, 0)}" for k, v in peaks.items()))
    return lines


def pipeline_lines(fast: Path) -> list[str]:
    stages = _load(fast / "stages.json")
    lines = []
    if stages is None:
        lines.append("cifar10_fast: no stages.json (see run.log)")
    else:
        total = sum(stages.values())
        lines.append(
            f"cifar10_fast stage wall s: {', '.join(f'{k} {v:.0f}' for k, v in stages.items())}; "
            f"total {total:.0f} (goal <= 300)"
        )
    report = _load(fast / "report" / "report.json")
    if report is None:
        return [*lines, "cifar10_fast: no report.json"]
    lines.append(f"{'model':12s} {'acc':>7s} {'NLL':>7s} {'cNLL':>7s} {'ECE':>7s} {'OOD AUROC':>9s}")
    for k, row in report["summary"].items():
        lines.append(
            f"{k:12s} {_f(row.get('acc'), 4):>7s} {_f(row.get('nll'), 4):>7s} {_f(row.get('cnll'), 4):>7s} "
            f"{_f(row.get('ece'), 4):>7s} {_f(row.get('ood_auroc/primary'), 4):>9s}"
        )
    members = report["models"].get("members", {}).get("per_member")
    if members:
        lines.append("members' acc: " + ", ".join(_f(m.get("acc"), 4) for m in members) + "  (goal >= 0.93)")
    return lines


def spread_lines(out: Path) -> list[str]:
    """Step 3: the teacher with its members spread over processes, beside the one-process teacher of step 2 (the
    ratio only when both trained the same members)."""
    spread = _load(out / "spread" / "summary.json")
    if spread is None:
        return []
    t = spread.get("epoch_time_s_median")
    line = f"members spread over {spread.get('processes')} processes: teacher epoch {_f(t)} s"
    one = _load(out / "fast" / "teacher" / "summary.json") or {}
    same = (_load(out / "spread" / "model.json") or {}).get("spec") == (
        _load(out / "fast" / "teacher" / "model.json") or {}
    ).get("spec")
    if same and t and one.get("epoch_time_s_median"):
        line += f" vs {_f(one['epoch_time_s_median'])} s on one process ({one['epoch_time_s_median'] / t:.2f}x)"
    return [line]


def main(out: Path) -> None:
    env = _load(out / "env.json") or {}
    print(f"== device check: {env.get('gpu') or 'CPU (no GPU)'}, torch {env.get('torch')}, {env.get('date')}")
    steps = out / "steps.txt"
    if steps.is_file():
        print(steps.read_text().strip())
    for line in [*bench_lines(_load(out / "bench" / "bench.json")), *pipeline_lines(out / "fast"), *spread_lines(out)]:
        print(line)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/device_table.py OUT")
    main(Path(sys.argv[1]))
