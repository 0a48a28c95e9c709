"""The collect step of issue 36's studies: copy each seed's report and summaries from the run directories into
results/, then rebuild the study's tables from what results/ holds.

    PYTHONPATH=. python experiments/collect.py STUDY [--runs RUNS_ROOT] [--out DIR]

STUDY is one of ``power`` (recipes/cifar10_cpu.yaml, results/cifar10_cpu_power), ``sdde``
(recipes/cifar10_cpu_sdde.yaml via tools/sdde_vs_de.sh, results/cifar10_cpu_sdde_holdout), ``nam``
(recipes/cifar10_cpu_nam.yaml, results/cifar10_cpu_nam) or ``analyses`` (issue 36 item 4, results/cifar10_cpu_analyses:
``RUNS_ROOT/holdout_diversity`` from ``distill analyze diversity`` and ``RUNS_ROOT/landscape_s<N>`` from ``distill
analyze landscape``; copied as ``holdout_diversity.json`` and ``landscape_s<N>.json``, then ``holdout_diversity.md``
and ``landscape.md`` are rendered from them).
For the others ``RUNS_ROOT`` holds one run directory per seed (``s0``, ``s1``, ...; for ``sdde`` one per arm inside
each). Without ``--runs`` only the tables are rebuilt, so the
tables of a results folder can always be remade from the files it keeps. ``power``, ``nam`` and ``sdde`` also
write ``headline.md``, the compact tables docs/results.md and the READMEs quote (experiments/headline_table.py;
``sdde_vs_de.headline`` for sdde).

Copied: ``report.json`` / ``report.md``, ``stages.json`` and every stage's ``summary.json`` (as
``summary_<stage>.json``); models and figures stay in the run directory. The runs root's path inside the copies is
replaced by the name the study's commands give it (``runs/c10``, ``runs/sdde``, ``runs/nam``), so the files do not
name a machine. For ``nam``, ``--runs`` also measures each seed's teacher with clean_disagreement.py (1,000 drawn
training images) into ``clean_disagreement.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts, run from anywhere

import clean_disagreement
import headline_table
import landscape_table
import sdde_vs_de
import seed_table

from distill.analysis import design
from distill.report.aggregate import aggregate, write

# study -> (results folder, title, the name its commands give the runs root: what machine paths become)
STUDIES = {
    "power": ("results/cifar10_cpu_power", "CIFAR-10 on the CPU: the powered re-check", "runs/c10"),
    "sdde": ("results/cifar10_cpu_sdde_holdout", "SDDE vs DE, de-confounded", "runs/sdde"),
    "nam": ("results/cifar10_cpu_nam", "Nam et al.'s regime: BatchEnsemble students of fitted members", "runs/nam"),
    "analyses": ("results/cifar10_cpu_analyses", "Fort et al. and Rosales et al. on CIFAR-10 CPU", "runs/analyses"),
}
# power: the controls, then kd (what each other student adds over plain distillation)
AGAINST = {"power": ["control:self_kd", "control:single_long", "control:label_smoothing", "kd"], "nam": ["be4_kd"]}


def _copy_text(src: Path, dst: Path, runs: Path, study: str) -> None:
    name = STUDIES[study][2]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(src.read_text().replace(str(runs.resolve()), name).replace(str(runs), name))


def copy_run(run: Path, dest: Path, runs: Path, study: str) -> None:
    """One pipeline run directory's report, stage record and summaries into ``dest``."""
    for name in ("report.json", "report.md"):
        if (run / "report" / name).is_file():
            _copy_text(run / "report" / name, dest / name, runs, study)
    if (run / "stages.json").is_file():
        _copy_text(run / "stages.json", dest / "stages.json", runs, study)
    stages = [("teacher", run / "teacher"), ("single", run / "single")]
    stages += [(p.name, p) for p in sorted((run / "students").glob("*"))]
    stages += [(f"control_{p.name}", p) for p in sorted((run / "controls").glob("*"))]
    for name, stage in stages:
        if (stage / "summary.json").is_file():
            _copy_text(stage / "summary.json", dest / f"summary_{name}.json", runs, study)


def _num(seed_dir: Path) -> int:
    return int(seed_dir.name[1:])


def copy_analyses(runs: Path, out: Path) -> list[str]:
    """The analyses' JSON / markdown (figures stay in the run directories)."""
    copied = []
    src = runs / "holdout_diversity" / "diversity.json"
    if src.is_file():  # its teachers are the sdde study's: their paths become runs/sdde/<name> (s0/de/teacher)
        d = json.loads(src.read_text())
        for r in d["runs"]:
            r["run"] = f"{STUDIES['sdde'][2]}/{r['name']}"
        (out / "holdout_diversity.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "holdout_diversity.json").write_text(json.dumps(d, indent=1) + "\n")
        copied.append(str(out / "holdout_diversity.json"))
    for d in sorted(runs.glob("landscape_s[0-9]*")):
        if (d / "landscape.json").is_file():
            _copy_text(d / "landscape.json", out / f"{d.name}.json", runs, "analyses")
            copied.append(str(out / f"{d.name}.json"))
    return copied


def copy(study: str, runs: Path, out: Path) -> list[str]:
    if study == "analyses":
        return copy_analyses(runs, out)
    copied = []
    for seed in sorted((p for p in runs.glob("s[0-9]*") if p.is_dir() and p.name[1:].isdigit()), key=_num):
        arms = sorted(p for p in seed.iterdir() if p.is_dir()) if study == "sdde" else [seed]
        for run in arms:
            if not (run / "report" / "report.json").is_file():
                continue  # not finished: its stages may still be training
            dest = out / seed.name / (run.name if study == "sdde" else "")
            if dest.exists() and study != "sdde":
                shutil.rmtree(dest)
            copy_run(run, dest, runs, study)
            copied.append(str(dest))
    return copied


def tables(study: str, out: Path, title: str) -> None:
    if study == "analyses":
        div = out / "holdout_diversity.json"
        if div.is_file():  # the markdown again from the JSON (None where the study wrote NaN)
            d = json.loads(div.read_text())
            groups = [r.get("design") for r in d["runs"]]
            designs = design.design_means(d["runs"], groups) if None not in groups else None
            text = design.markdown(d["runs"], d["correlation"], designs, d.get("correlation_within_designs"))
            (out / "holdout_diversity.md").write_text(text)
        found = sorted(out.glob("landscape_s[0-9]*.json"), key=lambda p: int(p.stem.split("_s")[1]))
        if found:
            (out / "landscape.md").write_text(landscape_table.render(found))
        return
    if study == "sdde":
        text, data = sdde_vs_de.render(sdde_vs_de.collect(out, sdde_vs_de.ARMS), sdde_vs_de.ARMS)
        (out / "gap.md").write_text(f"# {title}\n\n{text}")
        sdde_vs_de.write_json(out / "gap.json", data)
        (out / "headline.md").write_text(f"# {title}\n\n{sdde_vs_de.headline(data)}")
        return
    reports = sorted(out.glob("s[0-9]*/report.json"), key=lambda p: _num(p.parent))
    if not reports:
        raise SystemExit(f"collect: no s<N>/report.json under {out}")
    agg = aggregate(reports, 0.95, AGAINST[study])
    write(agg, out / "gap.md", out / "gap.json", title)
    # the compact tables docs/results.md and the READMEs quote
    headline = headline_table.render(json.loads((out / "gap.json").read_text()), study)
    (out / "headline.md").write_text(f"# {title}\n\n{headline}")
    lines = seed_table.table(reports, ["acc", "cnll"])
    (out / "seeds.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=sorted(STUDIES))
    ap.add_argument("--runs", type=Path, help="the seeds' run directories (s0, s1, ...); omitted: tables only")
    ap.add_argument("--out", type=Path, help="the results folder (default: the study's)")
    a = ap.parse_args()
    default, title, _ = STUDIES[a.study]
    out = a.out or Path(default)
    if a.runs is not None:
        if not a.runs.is_dir():
            print(f"collect: --runs {a.runs}: not a directory", file=sys.stderr)
            raise SystemExit(2)
        for d in copy(a.study, a.runs, out):
            print(f"copied {d}")
        if a.study == "nam":  # Nam et al.'s precondition, on each seed's teacher (needs the models: --runs only)
            teachers = sorted(a.runs.glob("s[0-9]*/teacher/model.json"), key=lambda p: _num(p.parent.parent))
            rows = [clean_disagreement.measure(t.parent, 1000, 0, ["ods", "confods"]) for t in teachers]
            for r in rows:
                r["run"] = r["run"].replace(str(a.runs), STUDIES["nam"][2])
            (out / "clean_disagreement.json").write_text(json.dumps(rows, indent=1) + "\n")
    tables(a.study, out, title)
    print(f"tables rebuilt in {out}")


if __name__ == "__main__":
    main()
