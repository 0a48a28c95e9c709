"""``report.json["subsets"]``: every test subset the report drew, with its size, seed and class counts.

Each draw is :func:`distill.data.subsets.eval_subset` of the test labels with ``evaluate.subset_seed``: the
sweep's images (``corruption``), the CAM / attribution / CKA images (``diversity``) and the Grad-CAM grid's
(``cam_grid``). With the released CIFAR-10-C, ``corruption`` counts the release's drawn labels and
``corruption_clean`` the test images of severity 0, a draw of their own.
"""

from __future__ import annotations

from typing import Any

from distill.data.subsets import eval_subset, subset_record
from distill.recipe import EvalCfg
from distill.report.corruption import CorruptedImages
from distill.report.runs import Runs


def report_subsets(
    cfg: EvalCfg, runs: Runs, source: CorruptedImages | None, figures: dict[str, str | None]
) -> dict[str, Any]:
    """The subsets used: the sweep's when it ran, diversity's when a model has several members, the CAM grid's
    when it was drawn (``figures``: the report's figure files)."""
    y, k, seed = runs.splits.test_y, runs.splits.meta.num_classes, cfg.subset_seed
    out: dict[str, Any] = {}
    if source is not None:
        out["corruption"] = subset_record(source.y, seed, k)
        if cfg.cifar10c is not None:
            out["corruption_clean"] = subset_record(y[source.clean], seed, k)
    if any(r.size > 1 for r in runs.all):
        out["diversity"] = subset_record(y[eval_subset(y, cfg.diversity_images, seed)], seed, k)
    if figures.get("cam_grid"):
        out["cam_grid"] = subset_record(y[eval_subset(y, cfg.cam_images, seed)], seed, k)
    return out
