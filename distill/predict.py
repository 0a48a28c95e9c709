"""Inference over a whole split: member logits in eval mode, batch by batch, gathered on the CPU."""

from __future__ import annotations

import torch

from distill.data.batches import eval_batches
from distill.models.contract import DistillModel
from distill.models.ensemble import eval_mode
from distill.parallel import gather_predictions


def rows_per_batch(model: DistillModel, batch_size: int) -> int:
    """The input batch that makes ``batch_size`` rows through the network: a kind that tiles its input M times (a
    BatchEnsemble) takes ``batch_size // M`` images. At 512 images (2,048 rows) a BatchEnsemble's CIFAR-10 CPU
    validation was 2x slower per image than at 128 (results/cifar10_cpu_budget/eval_layout.txt); a plain network
    is fastest at 512."""
    return max(1, batch_size // model.size) if model.tiles_input else batch_size


@torch.no_grad()
def predict_logits(
    model: DistillModel, x: torch.Tensor, batch_size: int = 512, device: torch.device | str | None = None
) -> torch.Tensor:
    """Member logits ``(M, N, K)`` (float32, CPU) of uint8 images ``x: (N, C, H, W)``, ``batch_size`` rows through
    the network at a time (:func:`rows_per_batch`). A share of the members (run.parallel: members) predicts its
    own members and returns every member's, gathered from the other processes (each must call it too)."""
    device = device or next(model.parameters()).device
    out = []
    with eval_mode(model):
        for xb in eval_batches(x, rows_per_batch(model, batch_size), device):
            logits, _ = model(xb)
            out.append(logits.float().cpu())
    return gather_predictions(model, torch.cat(out, dim=1))
