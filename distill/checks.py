"""What a stage checks, and sets, on its models and data before it trains: a diversity term's feature maps, the
member mode, a teacher trained on the data the student's recipe describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill import UserError
from distill.data import Splits
from distill.data.identity import data_differences
from distill.models.contract import DistillModel, missing_features
from distill.objectives.diversity import term_name
from distill.recipe import DataCfg, to_dict


def require_features(objective: Any, model: torch.nn.Module, key: str) -> None:
    """A diversity term that reads feature maps (SDDE's Grad-CAM) with a member that has none is an error when the
    model is built, naming the term and the member, not a failure in the first step."""
    needs = [t for t in getattr(objective, "terms", ()) if getattr(t, "needs_features", False)]
    why = missing_features(model) if needs else None
    if why is not None:
        term = term_name(needs[0])
        raise UserError(
            f"{key}: the diversity term '{term}' needs Grad-CAM feature maps, but {why}; register the architecture "
            "with cam_layer=<a layer giving (B, D, h, w)>, or drop the term"
        )


def set_member_mode(model: DistillModel, mode: str, what: str) -> None:
    """Run an ensemble's members as ``run.member_mode`` says; other models have one forward and ignore it."""
    try:
        model.set_member_mode(mode)
    except ValueError as err:
        raise UserError(f"run.member_mode {mode}: {what}: {err}") from None


def check_teacher_matches(teacher_info: dict, splits: Splits | None, data: DataCfg, teacher_dir: Path) -> None:
    """A teacher trained on other data than the student's recipe describes is an error before any training
    (:mod:`distill.data.identity`): another split seed, say, would let the student select and report on
    images the teacher was trained on. Without ``splits`` only the recipe's cut is compared."""
    teacher = {"meta": teacher_info.get("meta", {}), "data": teacher_info.get("recipe", {}).get("data", {})}
    if splits is None:
        teacher["meta"] = {}
    mine = {"meta": splits.meta.to_json() if splits is not None else {}, "data": to_dict(data)}
    diffs = data_differences(mine, teacher, ref_label="recipe's data", cand_label="teacher")
    if diffs:
        raise UserError(f"--teacher {teacher_dir}: trained on other data: {'; '.join(diffs)}")
