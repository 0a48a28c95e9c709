"""One stage runner for every orchestrator (``distill run``, the population study, the teacher study): a finished
stage is reused only when it was trained from the recipe given now, a half-finished one is resumed, and anything
else trains.

Reusing a run trained from another recipe would report a stale model under the new recipe's name, so the stored
recipe is compared first (:func:`distill.reuse.check_stage`); recipes come from
:func:`distill.resolve.load_checked`, as every command reads them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.recipe import Recipe
from distill.reuse import Stage, check_stage


def finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run trained to the end and tested (its summary has a test section)."""
    summary = run_dir / "summary.json"
    return summary.is_file() and "test" in json.loads(summary.read_text())


class StageTimes:
    """Wall time of each stage this invocation ran, written to ``out/stages.json`` as stages finish (a reused
    stage keeps the time recorded when it ran)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "stages.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, name: str, seconds: float) -> None:
        from distill.checkpoint import atomic_write_text

        self.times[name] = round(seconds, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.times, indent=2))


def run_stage(
    recipe: Recipe,
    stage: Stage,
    train: Callable[..., dict[str, Any]],
    out: Path,
    times: StageTimes | None = None,
    remedy: str | None = None,
) -> dict[str, Any]:
    """Reuse ``stage`` when it is finished, else ``train(resume=...)`` it (resuming what a killed run left); returns
    its summary. Either way its directory must not hold a model trained from a recipe that differs from ``recipe``
    in what decides this stage: that raises a UserError ending with ``remedy`` (default: a new ``--out`` or
    ``--rerun``). ``out``: the orchestrator's output folder, named in the message; ``times`` records the stage's
    training time under ``stage.name``."""
    check_stage(recipe, stage, out, remedy)
    if finished(stage.run_dir):
        print(f"[reuse] {stage.run_dir}")
        return json.loads((stage.run_dir / "summary.json").read_text())
    start = time.perf_counter()
    summary = train(resume=(stage.run_dir / "state.safetensors").exists())
    if times is not None:
        times.record(stage.name, time.perf_counter() - start)
    return summary
