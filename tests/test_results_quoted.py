"""The results page quotes generated tables, never retyped ones: every table row of each study's generated file
(``collect.py`` writes them from the kept per-seed files) appears verbatim in its section of docs/results.md, and the
generated file is what ``collect.py`` makes of the kept files today. Retyping a number, or rebuilding a study without
pasting its new tables, fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (generated file, the docs section that quotes it, the text its quoted part starts after: None = the title line)
QUOTED = [
    ("results/cifar10_cpu_power/headline.md", "## 1. ", None),
    ("results/cifar10_cpu_nam/headline.md", "## 2. ", None),
    ("results/cifar10_cpu_sdde_holdout/headline.md", "## 3. ", None),
    ("results/cifar10_cpu_analyses/landscape.md", "## 4. ", "## Across seeds"),
]


def _section(docs: str, head: str) -> str:
    start = docs.index("\n" + head)
    end = docs.find("\n## ", start + 1)
    return docs[start : end if end > 0 else None]


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


@pytest.mark.parametrize(("generated", "head", "after"), QUOTED, ids=[q[1].strip("# .") for q in QUOTED])
def test_docs_quote_the_generated_tables(generated: str, head: str, after: str | None):
    text = (ROOT / generated).read_text()
    if after is not None:
        text = text[text.index(after) :]
    rows = _table_rows(text)
    assert rows, f"{generated}: no table"
    section = _section((ROOT / "docs/results.md").read_text(), head)
    missing = [r for r in rows if r not in section.splitlines()]
    assert not missing, f"docs/results.md {head.strip()} does not quote {generated}: first missing row {missing[0]}"


@pytest.mark.parametrize("study", ["power", "nam", "sdde", "analyses"])
def test_generated_tables_are_what_collect_makes_of_the_kept_files(tmp_path, study):
    """collect.py without --runs rebuilds the tables from the files results/ keeps; rebuilt into a copy, they equal
    the committed ones byte for byte."""
    import shutil

    folders = {
        "power": "cifar10_cpu_power",
        "nam": "cifar10_cpu_nam",
        "sdde": "cifar10_cpu_sdde_holdout",
        "analyses": "cifar10_cpu_analyses",
    }
    src = ROOT / "results" / folders[study]
    out = tmp_path / folders[study]
    shutil.copytree(src, out)
    cmd = [sys.executable, "experiments/collect.py", study, "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)

    def rebuilt(name: str) -> str:  # the tables name their runs by path: the copy's, here
        return (out / name).read_text().replace(str(out), f"results/{folders[study]}")

    changed = [p.name for p in sorted(src.glob("*.md")) if p.read_text() != rebuilt(p.name)]
    assert not changed, f"results/{folders[study]}: {changed} differ from what collect.py {study} rebuilds"
