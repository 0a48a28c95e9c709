"""Ensembles: M members in one module, predicting ``logits (M, B, K)``; the prediction is the mean of the
members' probabilities (never of their logits). A single network is an ensemble of one, so teachers,
single-model baselines and students share one interface."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class Ensemble(nn.Module):
    """Members with independent initialisation; possibly of different architectures (heterogeneous).

    ``forward(x)`` takes one batch for all members, ``x: (B, C, H, W)``, or one per member,
    ``x: (M, B, C, H, W)``, and returns ``(logits (M, B, K), cam_features: list of M (B, C_m, H_m, W_m))``.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def size(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        per_member = x.dim() == 5
        if per_member and x.shape[0] != len(self.members):
            raise ValueError(f"got {x.shape[0]} member batches for {len(self.members)} members")
        logits, feats = [], []
        # A plain loop over members: measured fastest on the CPU for small CNNs (see docs/performance.md).
        for m, member in enumerate(self.members):
            z, a = member(x[m] if per_member else x)
            logits.append(z)
            feats.append(a)
        return torch.stack(logits), feats


def mean_probs(logits: torch.Tensor) -> torch.Tensor:
    """``logits (M, B, K)`` -> the ensemble's predictive distribution ``(B, K)``: the mean member softmax."""
    return logits.float().softmax(dim=-1).mean(dim=0)


def log_mean_probs(logits: torch.Tensor) -> torch.Tensor:
    """``logits (M, B, K)`` -> log of the mean member softmax ``(B, K)``, computed stably."""
    m = logits.shape[0]
    return torch.logsumexp(logits.float().log_softmax(dim=-1), dim=0) - torch.log(torch.tensor(float(m)))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Temporarily put every submodule in eval mode (BatchNorm uses running statistics), then restore
    each module's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
