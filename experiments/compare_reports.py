"""Two gap reports of the same runs, compared outside what may differ: timing fields and the runs' paths.

    python experiments/compare_reports.py BEFORE/report AFTER/report

Prints the differences of ``report.json`` (every key, in order, except timing keys), of ``report.md`` outside
the inference-cost section, and whether that section is equal with its timing cells masked. Used to show that a
refactor left the digits pipeline's report unchanged (results/refactor_equality.md).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

TIMING = re.compile(r"(time|latency|_s$|seconds|_ms$|images_per_s|throughput|date)", re.IGNORECASE)


def json_diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}: keys differ {sorted(set(a) ^ set(b))} or their order"] if list(a) != list(b) else []
        for k in a:
            if k in b and not TIMING.search(k):
                out += json_diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = [f"{path}: length {len(a)} != {len(b)}"] if len(a) != len(b) else []
        for i, (x, y) in enumerate(zip(a, b)):
            out += json_diff(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def markdown_outside_cost(path: Path) -> list[str]:
    lines, skip = [], False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            skip = line.startswith("## Inference cost")
        if not skip:
            lines.append(line)
    return lines


def cost_rows(path: Path) -> list[str]:
    """The inference-cost section with its timing columns (ms, images/s, latency ratio) masked."""
    section = path.read_text().split("## Inference cost")[1].split("\n## ")[0].splitlines()
    out = []
    for line in section:
        cells = line.split(" | ")
        if len(cells) > 8 and not line.startswith("| model"):
            cells = cells[:5] + ["T"] * 4 + cells[9:10] + ["T"] + cells[11:]
        out.append(re.sub(r"\d+ CPU thread", "N CPU thread", " | ".join(cells)))
    return out


def main(before: Path, after: Path) -> None:
    d = json_diff(json.loads((before / "report.json").read_text()), json.loads((after / "report.json").read_text()))
    print(f"report.json: {len(d)} differences outside timing fields")
    print("\n".join(d[:40]))
    a, b = markdown_outside_cost(before / "report.md"), markdown_outside_cost(after / "report.md")
    lines = [f"- {x}\n+ {y}" for x, y in zip(a, b) if x != y]
    if len(a) != len(b):
        lines.append(f"line count {len(a)} != {len(b)}")
    print(f"report.md: {len(lines)} differing lines outside the inference-cost section")
    print("\n".join(lines[:20]))
    ca, cb = cost_rows(before / "report.md"), cost_rows(after / "report.md")
    print(f"report.md inference-cost section, timing cells masked: {'identical' if ca == cb else 'DIFFERENT'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
