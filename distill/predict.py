"""Inference over a whole split: member logits in eval mode, batch by batch, gathered on the CPU."""

from __future__ import annotations

import torch
from torch import nn

from distill.data.batches import eval_batches
from distill.models.ensemble import eval_mode


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: torch.device | str | None = None
) -> torch.Tensor:
    """Member logits ``(M, N, K)`` (float32, CPU) of uint8 images ``x: (N, C, H, W)``."""
    device = device or next(model.parameters()).device
    out = []
    with eval_mode(model):
        for xb in eval_batches(x, batch_size, device):
            logits, _ = model(xb)
            out.append(logits.float().cpu())
    return torch.cat(out, dim=1)
