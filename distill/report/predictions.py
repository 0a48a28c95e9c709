"""Member logits of a model on each image set the report uses (val, test, OOD sets, corrupted test images),
computed once per model and kept in memory; and its penultimate features, for CKA.

Sets are named by a key (``"val"``, ``"test"``, ``"ood/<name>"``, ``"corrupt/<name>/<severity>"``); the first call
with a key runs the model, later calls read the cache. A member of an ensemble is a model of its own that reads
its slice of the ensemble's cache, so the members' metrics cost no extra forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.data.batches import eval_batches
from distill.metrics import log_mean_exp
from distill.models.contract import DistillModel
from distill.models.ensemble import eval_mode
from distill.predict import predict_logits, rows_per_batch
from distill.students.readout import MEMBERS, Readout


def mean_probs64(logits: Tensor) -> Tensor:
    """``(M, B, K)`` logits -> the mean member softmax ``(B, K)`` in float64."""
    return logits.double().softmax(dim=-1).mean(dim=0)


def log_mean_probs64(logits: Tensor) -> Tensor:
    """``(M, B, K)`` logits -> ``log((1/M) sum_m softmax(z_m))`` ``(B, K)`` in float64, computed stably."""
    return log_mean_exp(logits.double().log_softmax(dim=-1))


class Predictions:
    """The cached member logits ``(M, N, K)`` of one model, by set key; ``readout``: how its kind's logits are read
    (uncertainties, OOD scores; :mod:`distill.students.readout`)."""

    def __init__(self, model: DistillModel, batch_size: int, device: torch.device, readout: Readout = MEMBERS) -> None:
        self.model, self.batch_size, self.device, self.readout = model, batch_size, device, readout
        self._cache: dict[str, Tensor] = {}
        self._features: list[Tensor] | None = None

    @property
    def size(self) -> int:
        return int(self.model.size)

    def logits(self, key: str, x: Tensor | None = None) -> Tensor:
        if key not in self._cache:
            if x is None:
                raise KeyError(f"no predictions cached for '{key}' and no images given")
            self._cache[key] = predict_logits(self.model, x, self.batch_size, self.device)
        return self._cache[key]

    def features(self, x: Tensor) -> list[Tensor]:
        """Penultimate features of each member on ``x`` (computed on the first call only)."""
        if self._features is None:
            self._features = penultimate_features(self.model, x, self.batch_size, self.device)
        return self._features

    def member(self, m: int) -> MemberPredictions:
        return MemberPredictions(self, m)


class MemberPredictions:
    """Member ``m`` of an ensemble as a one-member model, read from the ensemble's cache."""

    size = 1
    readout = MEMBERS  # a member (ensemble member, head) is one softmax network

    def __init__(self, parent: Predictions, m: int) -> None:
        self.parent, self.m = parent, m

    def logits(self, key: str, x: Tensor | None = None) -> Tensor:
        return self.parent.logits(key, x)[self.m : self.m + 1]


@torch.no_grad()
def penultimate_features(model: DistillModel, x: Tensor, batch_size: int, device: torch.device) -> list[Tensor]:
    """The input of each member's last linear layer on uint8 images ``x``: ``M`` tensors ``(N, D_m)`` (CPU),
    captured with forward pre-hooks. A kind that tiles its input (a BatchEnsemble) runs its members as one batch
    through one head, whose input ``(M * B, D)`` is cut into the members' rows."""
    tiled = model.tiles_input
    layers = model.last_linears()
    seen: list[list[Tensor]] = [[] for _ in layers]

    def hook(i: int):
        return lambda _mod, args: seen[i].append(args[0].detach().float().flatten(1).cpu())

    handles = [layer.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        with eval_mode(model):
            for xb in eval_batches(x, rows_per_batch(model, batch_size), device):
                model(xb)
    finally:
        for h in handles:
            h.remove()
    if tiled:  # each batch's rows are member-major: (M * B, D) -> (M, B, D)
        return list(torch.cat([s.reshape(model.size, -1, s.shape[1]) for s in seen[0]], dim=1).unbind(0))
    return [torch.cat(s) for s in seen]
