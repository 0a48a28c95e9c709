"""A population of teacher ensembles from one declarative recipe, for the design-diversity study.

A population recipe is an ordinary teacher recipe (the base; it parses and trains like any other) with an
``x-population`` section, which the recipe loader ignores (``x-`` keys), naming variants as ``--set`` overrides of
the base and the seeds to train each with::

    x-population:
      seeds: [0, 1]
      variants:
        de: {}                                                    # the base as it is
        sdde_0.4: {teacher.objective: {name: sdde, lam: 0.4}}     # dotted key: value, as --set key=value
        hetero: {teacher.arch: [small_cnn, small_cnn, tiny_cnn, tiny_cnn]}
      analysis: {corruption_limit: 359}                          # options of analyze_diversity

Run ``python -m distill.analysis.population RECIPE --out OUT``: every variant and seed trains into
``OUT/<variant>/seed<k>`` (finished runs are reused, interrupted ones resumed), then
:func:`distill.analysis.design.analyze_diversity` writes ``OUT/diversity``. ``--print`` only lists the equivalent
``python -m distill teacher`` commands. Values are data (YAML), never code.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from distill import UserError
from distill.pipeline import say
from distill.recipe import Recipe

SECTION = "x-population"


@dataclass(frozen=True)
class PopulationRun:
    name: str  # variant name
    seed: int
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE strings, the seed last
    out: Path = Path()
    recipe: Recipe | None = None  # the base with the overrides applied, checked (distill.resolve.load_checked)

    def command(self, recipe: Path) -> str:
        args = ["python", "-m", "distill", "teacher", "--recipe", str(recipe), "--out", str(self.out)]
        for o in self.overrides:
            args += ["--set", o]
        return shlex.join(args)


def read_population(recipe: str | Path) -> dict[str, Any]:
    """The ``x-population`` section of ``recipe``, checked: ``{"seeds", "variants", "analysis"}``."""
    path = Path(recipe)
    if not path.is_file():
        raise UserError(f"{path}: population recipe not found")
    tree = yaml.safe_load(path.read_text()) or {}
    pop = tree.get(SECTION) if isinstance(tree, dict) else None
    if not isinstance(pop, dict):
        raise UserError(f"{path}: no '{SECTION}' mapping (variants as --set overrides of this recipe)")
    unknown = sorted(set(pop) - {"seeds", "variants", "analysis"})
    if unknown:
        raise UserError(f"{path}: '{SECTION}.{unknown[0]}' is unknown; expected seeds, variants, analysis")
    seeds = pop.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"{path}: '{SECTION}.seeds' must be a list of integers, got {seeds!r}")
    variants = pop.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise UserError(f"{path}: '{SECTION}.variants' must map variant names to overrides")
    for name, sets in variants.items():
        if not isinstance(sets, dict) and sets is not None:
            raise UserError(f"{path}: '{SECTION}.variants.{name}' must be a mapping of dotted keys to values")
        if "/" in str(name) or str(name).startswith("."):
            raise UserError(f"{path}: variant name {name!r} must be a plain folder name")
    analysis = pop.get("analysis") or {}
    if not isinstance(analysis, dict):
        raise UserError(f"{path}: '{SECTION}.analysis' must be a mapping of analyze_diversity options")
    return {"seeds": seeds, "variants": {str(k): dict(v or {}) for k, v in variants.items()}, "analysis": analysis}


def population_runs(
    recipe: str | Path, out: str | Path, seeds: list[int] | None = None, only: list[str] | None = None
) -> list[PopulationRun]:
    """Every (variant, seed) of the population, each with its ``--set`` overrides, run directory and recipe; each
    recipe is loaded and checked as every command checks one, so a wrong key or name fails before anything trains."""
    from distill.resolve import load_checked

    pop = read_population(recipe)
    variants = pop["variants"]
    if only:
        missing = [n for n in only if n not in variants]
        if missing:
            raise UserError(f"--only {missing[0]}: no such variant; the recipe has: {', '.join(variants)}")
        variants = {n: variants[n] for n in only}
    runs = []
    for seed in seeds if seeds is not None else pop["seeds"]:
        for name, sets in variants.items():
            overrides = [f"{k}={json.dumps(v)}" for k, v in sets.items()] + [f"seed={seed}"]
            checked = load_checked(str(recipe), overrides)
            runs.append(PopulationRun(name, seed, overrides, Path(out) / name / f"seed{seed}", checked))
    return runs


def train_population(
    recipe: str | Path, out: str | Path, seeds: list[int] | None = None, only: list[str] | None = None
) -> list[Path]:
    """Train every run of the population (reusing finished ones trained from the same recipe, resuming interrupted
    ones); returns the run directories. A run trained from another recipe is refused, every run checked before any
    trains, as ``distill run`` refuses a stale stage."""
    from distill.reuse import Stage, check_stage
    from distill.stages import run_stage
    from distill.train import train_ensemble

    runs = population_runs(recipe, out, seeds, only)
    remedy = "use a new --out, or move the old run aside to train it again"
    stages = [Stage(f"{r.name}/seed{r.seed}", r.out, "teacher") for r in runs]
    for run, stage in zip(runs, stages):
        check_stage(run.recipe, stage, Path(out), remedy)
    for run, stage in zip(runs, stages):
        say(f"== {run.name} seed {run.seed} -> {run.out}")
        run_stage(run.recipe, stage, partial(train_ensemble, run.recipe, run.out), Path(out), remedy=remedy)
    return [r.out for r in runs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m distill.analysis.population",
        description="Train a population of teachers (x-population of a recipe), then the design-diversity study.",
    )
    ap.add_argument("recipe", type=Path, help="population recipe, e.g. recipes/analysis_population_digits.yaml")
    ap.add_argument(
        "--out", type=Path, required=True, help="runs go to OUT/<variant>/seed<k>, the study to OUT/diversity"
    )
    ap.add_argument("--seeds", type=int, nargs="+", help="override the recipe's seeds")
    ap.add_argument("--only", nargs="+", help="train only these variants")
    ap.add_argument("--print", dest="dry", action="store_true", help="print the equivalent teacher commands and stop")
    ap.add_argument("--no-analyze", action="store_true", help="train only")
    args = ap.parse_args(argv)
    try:
        if args.dry:
            for run in population_runs(args.recipe, args.out, args.seeds, args.only):
                print(run.command(args.recipe))
            return 0
        dirs = train_population(args.recipe, args.out, args.seeds, args.only)
        if not args.no_analyze:
            from distill.analysis.design import analyze_diversity

            names = [f"{d.parent.name}/{d.name}" for d in dirs]
            opts = {"groups": [d.parent.name for d in dirs], **read_population(args.recipe)["analysis"]}
            analyze_diversity(dirs, args.out / "diversity", names=names, **opts)
            print((args.out / "diversity" / "diversity.md").read_text())
    except UserError as err:
        print(f"distill: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
