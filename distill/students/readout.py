"""Readouts: how a model kind's output ``logits (M, B, K)`` is read as a predictive distribution, uncertainties and
OOD scores, by the report and by the exported file.

The default, :data:`MEMBERS`, is for every kind whose outputs are member logits (ensembles, single networks,
BatchEnsembles, Hydra heads), with ``p_m = softmax(z_m)`` and ``p_bar = (1/M) sum_m p_m``:

* predictive distribution ``p_bar``;
* total uncertainty ``H[p_bar]``, data uncertainty ``(1/M) sum_m H[p_m]``, knowledge uncertainty (the mutual
  information) ``H[p_bar] - (1/M) sum_m H[p_m]``; knowledge is None for one member (identically 0);
* OOD scores: :data:`distill.metrics.OOD_SCORES`; the ensemble-only ones are None for one member.

A kind with other outputs registers its own readout under its model spec kind (``dirichlet``). Every readout
keeps one contract that lets the rest of the report stay generic: the mean softmax of its ``logits`` IS its
predictive distribution, so accuracy, NLL, calibration, DEE, corruption and selective metrics need no per-kind
code; only the uncertainties and scores differ.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from distill.metrics import ENSEMBLE_ONLY, OOD_SCORES, entropy, log_mean_exp
from distill.registry import Registry

"""Scores constant for one network (the members' mutual information is 0): None for M = 1 unless a readout
provides them."""
UNCERTAINTIES = ("total", "data", "knowledge")
EXPORT_OUTPUTS = ("log_probs", *UNCERTAINTIES)


class Readout:
    """Member logits (the default readout; see the module docstring). Subclasses override what differs."""

    name = "members"

    def log_predictive(self, logits: Tensor) -> Tensor:
        """``(M, B, K)`` -> ``log p_bar (B, K)`` float64."""
        return log_mean_exp(logits.double().log_softmax(dim=-1))

    def uncertainty(self, logits: Tensor) -> dict[str, Tensor | None]:
        """``{"total", "data", "knowledge"}``, each ``(B,)`` float64 or None where meaningless."""
        p = logits.detach().double().softmax(dim=-1)  # (M, B, K)
        total = entropy(p.mean(dim=0))
        data = entropy(p).mean(dim=0)
        return {"total": total, "data": data, "knowledge": total - data if p.shape[0] > 1 else None}

    def primary_score(self, size: int) -> str:
        """The OOD score this kind declares before any evaluation, the one its OOD column, gain share and verdict
        read: max-softmax (Hendrycks & Gimpel 2017) for one network, the members' mutual information (the
        knowledge uncertainty; Malinin & Gales 2018, as in SDDE's and Nam et al.'s tables) for several."""
        return "msp" if size == 1 else "neg_mi"

    def score(self, name: str, logits: Tensor) -> Tensor | None:
        """OOD score ``name`` (higher = more in-distribution) ``(B,)`` float64, or None where meaningless."""
        if name in ENSEMBLE_ONLY and logits.shape[0] == 1:
            return None
        return OOD_SCORES[name](logits)

    def export_outputs(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """What the exported file returns, from ``logits (M, B, K)``, in float32 with ONNX-exportable operations:
        ``(log p_bar (B, K), total (B,), data (B,), knowledge (B,))``; knowledge is 0 for one member."""
        log_p = logits.float().log_softmax(dim=-1)  # (M, B, K)
        log_mean = log_mean_exp(log_p)
        total = -(log_mean.exp() * log_mean).sum(-1)
        data = -(log_p.exp() * log_p).sum(-1).mean(0)
        return log_mean, total, data, total - data


MEMBERS = Readout()
READOUTS: Registry[Readout] = Registry("readout")  # model spec kind -> its readout (one instance)


def register_readout(spec_kind: str) -> Callable[[type[Readout]], type[Readout]]:
    def deco(cls: type[Readout]) -> type[Readout]:
        READOUTS.register(spec_kind, cls())
        return cls

    return deco


def readout_for(spec: dict | str | None) -> Readout:
    """The readout of a model spec (or its kind); :data:`MEMBERS` for kinds that register none."""
    kind = spec.get("kind") if isinstance(spec, dict) else spec
    return READOUTS.get(str(kind), MEMBERS)
