"""Teacher objectives: deep ensembles and their diversity-regularised variants.

Each objective maps ``(model, batch) -> (loss, terms)``; ``model`` is the (possibly DDP-wrapped) ensemble (a
:class:`~distill.models.contract.DistillModel`) and ``batch.x`` is ``(V, B, C, H, W)`` with V = M when members see their
own shuffled batches (``same_batch: false``) and V = 1 otherwise. Every call to the model goes through
its ``forward`` so that DistributedDataParallel sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.batches import Batch
from distill.models.ensemble import eval_mode, log_mean_probs
from distill.objectives.base import ObjectiveBase, Terms, register_objective
from distill.objectives.diversity import DiversityTerm, DiversityView, make_terms, resolve_terms
from distill.objectives.diversity.adp import EnsembleEntropy, EntropyParams, LogDet, LogDetParams
from distill.objectives.diversity.cam import CamParams, CamSimilarity
from distill.objectives.diversity.igd import IGDParams, InputGradientCosine
from distill.objectives.diversity.ncl import NCLParams, NCLTerm
from distill.objectives.diversity.oe import OEParams, OutlierExposure
from distill.parallel import MemberSpread, spread_of


def member_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each member: ``logits (M, B, K)``, ``y (M, B)`` or ``(1, B)`` -> ``(M,)``."""
    m, b, k = logits.shape
    y = y.expand(m, b)
    return F.cross_entropy(logits.reshape(m * b, k).float(), y.reshape(-1), reduction="none").view(m, b).mean(1)


def _views(batch: Batch) -> torch.Tensor:
    """The model input: one shared batch ``(B, ...)`` or one per member ``(M, B, ...)``."""
    return batch.x[0] if batch.x.shape[0] == 1 else batch.x


def _reduce(ce: torch.Tensor, how: str) -> torch.Tensor:
    return ce.sum() if how == "sum" else ce.mean()


# --- DE, the composite: CE + sum_k lam_k D_k --------------------------------------------------------


@dataclass(frozen=True)
class DEParams:
    same_batch: bool = True
    # "sum": each member gets exactly the gradient it would get trained alone. "mean": the official SDDE
    # code's scaling (its DE baseline is the SDDE trainer with lambda = 0); use it to compare with SDDE.
    ce_reduction: Literal["sum", "mean"] = "sum"
    # The diversity terms D_k (distill/objectives/diversity/), each {name, lam, ...}: e.g.
    # [{name: cam, lam: 0.005}, {name: ncl, lam: 0.1}]. Empty: a plain deep ensemble.
    diversity: list[dict[str, Any]] = field(default_factory=list)
    # How BatchNorm normalises a separate diversity batch: "eval" (running statistics, the official SDDE code)
    # or "train" (batch statistics, as the CE sees them); see SDDEParams.
    diversity_bn: Literal["eval", "train"] = "eval"


class DE(ObjectiveBase):
    """A deep ensemble (Lakshminarayanan et al. 2017) with optional diversity terms:
    L = reduce_m CE(f_m(x_m), y_m) + sum_k lam_k D_k.

    Without terms, members differ only by initialisation and, with ``same_batch: false``, by data order.
    All terms read one :class:`~distill.objectives.diversity.DiversityView`, as the official SDDE code sums
    its weighted terms over one diversity forward:

    - members share one batch (``same_batch: true``) and no term needs outliers: the training forward
      itself (its input a per-member copy that requires grad when a term needs input gradients);
    - each member has its own batch: one member's batch, chosen at random each step, forwarded through all
      members with BatchNorm in ``diversity_bn`` mode (the official code's choice);
    - a term needs outliers (``oe``): the outlier batch, with pseudo-labels argmax of the mean logits.

    Terms are added in the order listed, so a preset (``sdde``, ``ncl``, ...) gives bit-for-bit the
    numbers of its former stand-alone implementation.
    """

    def __init__(
        self,
        terms: Sequence[DiversityTerm] = (),
        same_batch: bool = True,
        ce_reduction: str = "sum",
        diversity_bn: str = "eval",
    ) -> None:
        self.terms = list(terms)
        self.ce_reduction = ce_reduction
        self.diversity_bn = diversity_bn
        self.per_member_batches = not same_batch
        self.member_parallel = True  # reads other members through the DiversityView: run.parallel members works
        self.needs_outliers = any(t.needs_outliers for t in self.terms)
        self.input_grad = any(t.needs_input_grad for t in self.terms)
        # The training forward doubles as the diversity forward only when members share one batch.
        self.shared_view = same_batch and not self.needs_outliers
        if not any(t.double_backprop for t in self.terms):
            self.compile_when = "always"
        else:
            # Double backprop through a compiled graph is unsupported: with a separate diversity forward only
            # the CE's training forward may be compiled; reusing the training forward rules compilation out.
            self.compile_when = "never" if self.shared_view else "train"

    def _diversity_forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.diversity_bn == "train":
            return model(x)
        with eval_mode(model):
            return model(x)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        spread = spread_of(model)  # run.parallel: members: the model is this process's share of the members
        x, y = _views(batch), batch.y
        if spread is not None and self.per_member_batches:
            x, y = x[spread.owned], y[spread.owned]  # the batch holds every member's view, as in one process
        if self.shared_view and self.input_grad:
            x = _grad_copies(model, x)
        logits, feats = model(x)  # (M, B, K), M x (B, C, H, W); M = this process's members when spread
        ce = member_ce(logits, y)
        if spread is None:
            loss = _reduce(ce, self.ce_reduction)
            terms: Terms = {"ce": ce.mean().detach()}
        else:
            # the loss to differentiate: this process's members' part of the CE, plus every term (whose gradient
            # reaches only this process's members: MemberSpread.gather); "loss", logged: the whole ensemble's,
            # the one-process value on every process (all stop together on a non-finite one)
            every_ce = spread.gather(ce.detach())  # (M,)
            loss = ce.sum() if self.ce_reduction == "sum" else ce.sum() / spread.total
            terms = {"ce": every_ce.mean(), "loss": _reduce(every_ce, self.ce_reduction)}
        if not self.terms:
            return loss, terms
        if self.shared_view:
            view = self._view(logits, feats, y[0], x if self.input_grad else None, spread)
        else:
            view = self._separate_view(model, batch, spread)
        for term in self.terms:
            part, logged = term(view)
            loss = loss + part
            if spread is not None:
                terms["loss"] = terms["loss"] + part.detach()
            terms.update(logged)
        return loss, terms

    @staticmethod
    def _view(
        logits: torch.Tensor,
        feats: Any,
        labels: torch.Tensor | None,
        x: torch.Tensor | None,
        spread: MemberSpread | None,
    ) -> DiversityView:
        """Labels None: pseudo-labels, the argmax of every member's mean logits."""
        every = logits if spread is None else spread.gather(logits)  # (M, B, K)
        if labels is None:
            labels = every.detach().mean(0).argmax(1)
        if spread is None:
            return DiversityView(logits, feats, labels, x)
        return DiversityView(every, feats, labels, x, own_logits=logits, spread=spread)

    def _separate_view(self, model: nn.Module, batch: Batch, spread: MemberSpread | None = None) -> DiversityView:
        if self.needs_outliers:
            if batch.outlier is None:
                raise ValueError("this objective needs an outlier batch: set data.outlier")
            xd, labels = batch.outlier, None
        else:
            k = int(torch.randint(batch.x.shape[0], ()).item())
            if spread is not None:  # one diversity batch for every process (dropout may have moved their RNGs)
                k = spread.same_everywhere(k)
            xd, labels = batch.x[k], batch.y[k]
        if self.input_grad:
            xd = _grad_copies(model, xd)
        d_logits, d_feats = self._diversity_forward(model, xd)
        return self._view(d_logits, d_feats, labels, xd if self.input_grad else None, spread)


def _grad_copies(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x (B, ...)`` -> a copy per member ``(M, B, ...)`` that requires grad, for input gradients."""
    m = (model.module if hasattr(model, "module") else model).size  # DDP wraps the ensemble
    return x.unsqueeze(0).expand(m, *x.shape).clone().requires_grad_(True)


def _resolve_de(p: DEParams, key: str) -> DEParams:
    return replace(p, diversity=resolve_terms(p.diversity, f"{key}.diversity"))


def _make_de(p: DEParams) -> DE:
    return DE(make_terms(p.diversity), p.same_batch, p.ce_reduction, p.diversity_bn)


register_objective("de", DEParams, resolve=_resolve_de)(_make_de)


# --- presets: the named methods, each DE with its terms ---------------------------------------------


@dataclass(frozen=True)
class SDDEParams:
    lam: float = 0.005  # 0.005 is the official CIFAR value; 0.1 for MNIST-sized data
    same_batch: bool = False  # the official code gives each member its own shuffled batch
    ce_reduction: Literal["sum", "mean"] = "mean"  # the official code averages member CEs
    crop: int = 1  # border pixels removed from each CAM
    outlier_weight: float = 0.0  # > 0: SDDE_OOD, outlier exposure on data.outlier (0.5 in the paper)
    # How BatchNorm normalises the separate diversity batch: "eval" (running statistics) is the official code;
    # "train" (batch statistics, as the CE sees them) is our departure, see make_sdde.
    diversity_bn: Literal["eval", "train"] = "eval"


def make_sdde(p: SDDEParams) -> DE:
    """Saliency-diversified deep ensemble (Dereka et al. 2023), after the official implementation:
    L = reduce_m CE(f_m(x_m), y_m) + lam * D_cam (distill/objectives/diversity/cam.py), on one member's
    batch through all members in eval mode (``same_batch: false``) or on the training forward (``true``).

    ``diversity_bn: train`` departs from the official code: the diversity batch is normalised with batch
    statistics, like the CE's. Why: with the eval-mode pass, the diversity gradient flows through BatchNorm's
    running statistics (constants in that pass), so the cheapest way to decorrelate the maps is to make the
    eval-mode network differ from the train-mode one. On MNIST (lam 0.1, 6 epochs) eval-mode validation
    accuracy fell to 0.2-0.5 until the learning rate annealed while the training CE was low
    (docs/results.md). The train-mode pass also updates the running statistics once more per step with a
    batch from the same distribution.

    SDDE_OOD (``outlier_weight > 0``): the diversity batch is the outlier batch instead, with pseudo-labels,
    and the outlier-exposure term (diversity/oe.py) comes first.
    """
    terms: list[DiversityTerm] = [OutlierExposure(OEParams(p.outlier_weight))] if p.outlier_weight > 0 else []
    terms.append(CamSimilarity(CamParams(p.lam, p.crop)))
    return DE(terms, p.same_batch, p.ce_reduction, p.diversity_bn)


register_objective("sdde", SDDEParams)(make_sdde)


@dataclass(frozen=True)
class SDDEOODParams(SDDEParams):
    outlier_weight: float = 0.5


register_objective("sdde_ood", SDDEOODParams)(make_sdde)


@dataclass(frozen=True)
class ADPParams:
    alpha: float = 2.0
    beta: float = 0.5
    log_det_eps: float = 1e-5


def make_adp(p: ADPParams) -> DE:
    """Adaptive diversity promoting (Pang et al. 2019): L = sum_m CE_m - alpha H(p_bar) - beta log det(G + eps I)
    (distill/objectives/diversity/adp.py)."""
    return DE([EnsembleEntropy(EntropyParams(p.alpha)), LogDet(LogDetParams(p.beta, p.log_det_eps))])


register_objective("ncl", NCLParams)(lambda p: DE([NCLTerm(p)]))  # Liu and Yao 1999: diversity/ncl.py
register_objective("adp", ADPParams)(make_adp)
register_objective("igd", IGDParams)(lambda p: DE([InputGradientCosine(p)]))  # Ross et al. 2020: diversity/igd.py


# --- a different base loss -------------------------------------------------------------------------


@dataclass(frozen=True)
class BalancedParams:
    lam: float = 0.5


class Balanced(ObjectiveBase):
    """The balanced loss of Webb et al. 2020 / Rosales et al. 2023, trading independent training
    (lam = 0) against training the ensemble as one model (lam = 1):
    L = sum_m [(1 - lam) CE(f_m, y) + lam CE(f_bar, y)], f_bar = mean of member probabilities.
    """

    def __init__(self, p: BalancedParams) -> None:
        self.p = p

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        logits, _ = model(batch.x[0])
        ce = member_ce(logits, batch.y)
        joint = F.nll_loss(log_mean_probs(logits), batch.y[0])
        m = logits.shape[0]
        loss = (1 - self.p.lam) * ce.sum() + self.p.lam * m * joint
        return loss, {"ce": ce.mean().detach(), "ce_ensemble": joint.detach()}


register_objective("balanced", BalancedParams)(Balanced)
