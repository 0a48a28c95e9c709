"""The inference-cost table of a pipeline recipe's models, before (or without) training them.

    python tools/cost_table.py recipes/mnist.yaml --out runs/cost_mnist

Builds the recipe's teacher, single network and every student (their model specs, as ``distill run`` would) with
random weights, writes each as a run directory under ``--out`` and measures it with the report's own cost
section (:mod:`distill.report.cost`): parameters, size on disk, FLOPs per image, CPU latency / throughput in
PyTorch and in ONNX Runtime. Cost does not depend on the weights' values, so this table is the trained models'
(the trained pipeline's report has the same section). Writes ``--out/cost.json`` and ``--out/cost.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill import students
from distill.checkpoint import save_model
from distill.data.base import DatasetMeta
from distill.models import build_model, ensemble_spec
from distill.recipe import CostCfg, load_recipe
from distill.report.cost import measure_costs
from distill.report.markdown import cost_table
from distill.report.schema import Cost
from distill.runs import RunDir

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
SHAPES |= {"cifar100": (3, 32, 32), "svhn": (3, 32, 32)}
CLASSES = {"cifar100": 100}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--reps", type=int, default=None, help="timed calls per case (default: the recipe's)")
    p.add_argument("--no-onnx", action="store_true", help="PyTorch timings only")
    args = p.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    name = recipe.data.name
    c, h, w = SHAPES[name]
    meta = DatasetMeta(name, CLASSES.get(name, 10), c, (h, w), (0.5,) * c, (0.25,) * c)
    specs = {"teacher": ensemble_spec(recipe.teacher.arch, recipe.teacher.members)}
    if recipe.single is not None:
        specs["single"] = ensemble_spec(recipe.single.arch, recipe.single.members)
    for s in [*([recipe.student] if recipe.student else []), *recipe.students]:
        specs[s.name] = students.student_spec(s, recipe.teacher.members)
    runs = []
    for key, spec in specs.items():
        torch.manual_seed(0)
        model = build_model(spec, meta).eval()
        info = {"spec": spec, "meta": meta.to_json(), "role": key}
        save_model(args.out / key, model, info)
        role = "student" if key not in ("teacher", "single") else key
        runs.append(RunDir(key, role, args.out / key, model, info, None))
    cfg = recipe.evaluate.cost
    cfg = CostCfg(
        enabled=True,
        reps=args.reps or cfg.reps,
        warmup=cfg.warmup,
        batches=list(cfg.batches),
        onnx=cfg.onnx and not args.no_onnx,
    )
    cost, notes = measure_costs(runs, (c, h, w), cfg, args.out, "single" if "single" in specs else None)
    (args.out / "cost.json").write_text(json.dumps({"recipe": args.recipe, "cost": cost, "notes": notes}, indent=2))
    from distill.report.build import CONVENTIONS

    kinds = {k: specs[k]["kind"] for k in specs}
    md = "\n".join(cost_table(Cost.from_json(cost), CONVENTIONS["cost"], kinds)) + "".join(f"\n- {n}" for n in notes)
    (args.out / "cost.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
