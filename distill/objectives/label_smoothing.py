"""Label smoothing (Szegedy et al. 2016), the ``label_smoothing`` control of a recipe's ``controls``: the student's
network trained alone on smoothed labels, a teacher-free regulariser of the kind a distilled student's soft targets
are sometimes said to amount to (Yuan et al. 2020).

L = sum_m CE(f_m(x), (1 - eps) onehot(y) + eps / K), torch's ``label_smoothing`` (the smoothed mass spread over
all K classes, the true one included, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.batches import Batch
from distill.objectives.base import ObjectiveBase, Terms, register_objective
from distill.recipe import FRACTION, ranged


@dataclass(frozen=True)
class LabelSmoothingParams:
    smoothing: float = ranged(FRACTION, 0.1)


class LabelSmoothing(ObjectiveBase):
    def __init__(self, p: LabelSmoothingParams) -> None:
        self.smoothing = p.smoothing

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        logits, _ = model(batch.x[0])  # (M, B, K)
        m, b, k = logits.shape
        y = batch.y[0].expand(m, b).reshape(-1)
        flat = logits.reshape(m * b, k).float()
        ce = F.cross_entropy(flat, y, reduction="none", label_smoothing=self.smoothing).view(m, b).mean(1)  # (M,)
        # the summed members' loss, as DE's default: each member gets the gradient it would get trained alone
        return ce.sum(), {"ce_smoothed": ce.mean().detach()}


register_objective("label_smoothing", LabelSmoothingParams)(LabelSmoothing)
