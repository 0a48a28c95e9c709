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
# (generated file, the file that quotes it, its section ("" = the whole file), the text the quoted part starts after)
DOCS = "docs/results.md"
QUOTED = [
    ("results/cifar10_cpu_power/headline.md", DOCS, "## 1. ", None),
    ("results/cifar10_cpu_nam/headline.md", DOCS, "## 2. ", None),
    ("results/cifar10_cpu_sdde_holdout/headline.md", DOCS, "## 3. ", None),
    ("results/cifar10_cpu_analyses/landscape.md", DOCS, "## 4. ", "## Across seeds"),
    ("results/cifar10_cpu_nam/headline.md", "results/cifar10_cpu_nam/README.md", "", None),
    ("results/cifar10_cpu_sdde_holdout/headline.md", "results/cifar10_cpu_sdde_holdout/README.md", "", None),
]


def _section(text: str, head: str) -> str:
    if not head:
        return text
    start = text.index("\n" + head)
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


@pytest.mark.parametrize(("generated", "quoting", "head", "after"), QUOTED, ids=[f"{q[1]}{q[2]}" for q in QUOTED])
def test_docs_quote_the_generated_tables(generated: str, quoting: str, head: str, after: str | None):
    text = (ROOT / generated).read_text()
    if after is not None:
        text = text[text.index(after) :]
    rows = _table_rows(text)
    assert rows, f"{generated}: no table"
    section = _section((ROOT / quoting).read_text(), head)
    missing = [r for r in rows if r not in section.splitlines()]
    assert not missing, f"{quoting} {head.strip()} does not quote {generated}: first missing row {missing[0]}"


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
