"""Teacher objectives: deep ensembles and their diversity-regularised variants.

Each objective maps ``(model, batch) -> (loss, terms)``; ``model`` is the (possibly DDP-wrapped)
:class:`~distill.models.Ensemble` and ``batch.x`` is ``(V, B, C, H, W)`` with V = M when members see their
own shuffled batches (``same_batch: false``) and V = 1 otherwise. Every call to the model goes through
its ``forward`` so that DistributedDataParallel sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.batches import Batch
from distill.models.ensemble import eval_mode, log_mean_probs
from distill.objectives.base import ObjectiveBase, Terms, register_objective
from distill.saliency import cam_similarity, gradcam, input_gradients, pairwise_cosine


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


# --- DE ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DEParams:
    same_batch: bool = True
    # "sum": each member gets exactly the gradient it would get trained alone. "mean": the official SDDE
    # code's scaling (its DE baseline is the SDDE trainer with lambda = 0); use it to compare with SDDE.
    ce_reduction: Literal["sum", "mean"] = "sum"


class DE(ObjectiveBase):
    """Deep ensemble (Lakshminarayanan et al. 2017): L = sum_m CE(f_m(x_m), y_m).

    Members differ only by initialisation and, with ``same_batch: false``, by data order.
    """

    per_member_batches: bool
    needs_outliers = False

    def __init__(self, p: DEParams) -> None:
        self.p = p
        self.per_member_batches = not p.same_batch

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        logits, _ = model(_views(batch))
        ce = member_ce(logits, batch.y)
        return _reduce(ce, self.p.ce_reduction), {"ce": ce.mean().detach()}


register_objective("de", DEParams)(DE)


# --- SDDE ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SDDEParams:
    lam: float = 0.005  # 0.005 is the official CIFAR value; 0.1 for MNIST-sized data
    same_batch: bool = False  # the official code gives each member its own shuffled batch
    ce_reduction: Literal["sum", "mean"] = "mean"  # the official code averages member CEs
    crop: int = 1  # border pixels removed from each CAM
    outlier_weight: float = 0.0  # > 0: SDDE_OOD, outlier exposure on data.outlier (0.5 in the paper)
    # How BatchNorm normalises the separate diversity batch: "eval" (running statistics) is the official code;
    # "train" (batch statistics, as the CE sees them) is our departure, see the class docstring.
    diversity_bn: Literal["eval", "train"] = "eval"


class SDDE(ObjectiveBase):
    """Saliency-diversified deep ensemble (Dereka et al. 2023), after the official implementation.

    L = reduce_m CE(f_m(x_m), y_m) + lam * L_div, where L_div is the mean over samples and member pairs
    i < j of the cosine between standardised Grad-CAM maps (:func:`distill.saliency.cam_similarity`)
    computed with double backprop, so the maps themselves are pushed apart.

    Diversity batch: with ``same_batch: false``, one member's batch chosen at random each step is
    forwarded through all members in eval mode (BatchNorm running statistics); with ``same_batch: true``
    the training forward is reused, as the official code does.

    ``diversity_bn: train`` departs from the official code: the diversity batch is normalised with batch
    statistics, like the CE's. Why: with the eval-mode pass, the diversity gradient flows through BatchNorm's
    running statistics (constants in that pass), so the cheapest way to decorrelate the maps is to make the
    eval-mode network differ from the train-mode one. On MNIST (lam 0.1, 6 epochs) eval-mode validation
    accuracy fell to 0.2-0.5 until the learning rate annealed while the training CE was low
    (docs/results.md). The train-mode pass also updates the running statistics once more per step with a
    batch from the same distribution.

    SDDE_OOD (``outlier_weight > 0``): the diversity batch is the outlier batch instead, with pseudo-labels
    argmax of the members' mean logits, and the outlier-exposure term
    ``outlier_weight * mean_m mean_b (logsumexp_c z_mbc - mean_c z_mbc)`` on it.
    """

    def __init__(self, p: SDDEParams) -> None:
        self.p = p
        self.per_member_batches = not p.same_batch
        self.needs_outliers = p.outlier_weight > 0
        # The CAMs need double backprop through the model they are taken from. With a separate diversity
        # forward (its own batch, or the outliers) only the CE's training forward may be compiled; reusing the
        # training forward for the CAMs (same_batch, no outliers) rules compilation out.
        self.compile_when = "train" if (self.per_member_batches or self.needs_outliers) else "never"

    def _diversity_forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.p.diversity_bn == "train":
            return model(x)
        with eval_mode(model):
            return model(x)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        x = _views(batch)
        logits, feats = model(x)  # (M, B, K), M x (B, C, H, W)
        ce = member_ce(logits, batch.y)
        terms: Terms = {"ce": ce.mean().detach()}
        loss = _reduce(ce, self.p.ce_reduction)
        if self.needs_outliers:
            if batch.outlier is None:
                raise ValueError("sdde_ood needs an outlier batch: set data.outlier")
            d_logits, d_feats = self._diversity_forward(model, batch.outlier)
            d_labels = d_logits.detach().mean(0).argmax(1)
            z = d_logits.float()
            oe = (torch.logsumexp(z, dim=2) - z.mean(dim=2)).mean()
            loss = loss + self.p.outlier_weight * oe
            terms["oe"] = oe.detach()
        elif batch.x.shape[0] == 1:
            d_logits, d_feats, d_labels = logits, feats, batch.y[0]
        else:
            k = int(torch.randint(batch.x.shape[0], ()).item())
            d_logits, d_feats = self._diversity_forward(model, batch.x[k])
            d_labels = batch.y[k]
        div = cam_similarity(gradcam(d_logits, d_feats, d_labels, create_graph=True), self.p.crop)
        terms["div"] = div.detach()
        return loss + self.p.lam * div, terms


register_objective("sdde", SDDEParams)(SDDE)


@dataclass(frozen=True)
class SDDEOODParams(SDDEParams):
    outlier_weight: float = 0.5


register_objective("sdde_ood", SDDEOODParams)(SDDE)


# --- baselines that need every member on the same inputs ------------------------------------------


@dataclass(frozen=True)
class NCLParams:
    lam: float = 0.1


class NCL(ObjectiveBase):
    """Negative correlation learning (Liu and Yao 1999; Shui et al. 2018):
    L = sum_m CE_m + lam * mean_b mean_{i != j} <p_i - p_bar, p_j - p_bar>, with p_bar detached.
    """

    def __init__(self, p: NCLParams) -> None:
        self.p = p

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        logits, _ = model(batch.x[0])
        ce = member_ce(logits, batch.y)
        p = logits.float().softmax(-1)  # (M, B, K)
        dev = p - p.mean(0, keepdim=True).detach()
        m = p.shape[0]
        gram = torch.einsum("ibk,jbk->bij", dev, dev)  # (B, M, M)
        off = gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)
        ncl = (off / max(m * (m - 1), 1)).mean()
        return ce.sum() + self.p.lam * ncl, {"ce": ce.mean().detach(), "ncl": ncl.detach()}


register_objective("ncl", NCLParams)(NCL)


@dataclass(frozen=True)
class ADPParams:
    alpha: float = 2.0
    beta: float = 0.5
    log_det_eps: float = 1e-5


class ADP(ObjectiveBase):
    """Adaptive diversity promoting (Pang et al. 2019):
    L = sum_m CE_m + alpha * (-H(p_bar)) + beta * (-log det(G + eps I)), where G (M x M) is the Gram matrix
    of the members' L2-normalised non-true-class probability vectors; both terms averaged over samples.
    """

    def __init__(self, p: ADPParams) -> None:
        self.p = p

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        logits, _ = model(batch.x[0])
        y = batch.y[0]
        ce = member_ce(logits, batch.y)
        p = logits.float().softmax(-1)  # (M, B, K)
        m, b, k = p.shape
        p_bar = p.mean(0)
        entropy = -(p_bar * p_bar.clamp_min(1e-12).log()).sum(-1).mean()
        keep = torch.ones(b, k, dtype=torch.bool, device=p.device)
        keep[torch.arange(b, device=p.device), y] = False
        non_true = F.normalize(p[:, keep].view(m, b, k - 1), dim=-1)  # (M, B, K-1)
        gram = torch.einsum("ibk,jbk->bij", non_true, non_true)
        # float64: with eps = 1e-5 the Gram matrix is near-singular and float32 logdet loses digits
        eye = torch.eye(m, device=p.device, dtype=torch.float64)
        log_det = torch.logdet(gram.double() + self.p.log_det_eps * eye).mean().float()
        loss = ce.sum() - self.p.alpha * entropy - self.p.beta * log_det
        return loss, {"ce": ce.mean().detach(), "entropy": entropy.detach(), "log_det": log_det.detach()}


register_objective("adp", ADPParams)(ADP)


@dataclass(frozen=True)
class IGDParams:
    lam: float = 0.1


class InputGradientDiversity(ObjectiveBase):
    """Input-gradient diversity (Ross et al. 2020, as in the SDDE paper's baselines):
    L = sum_m CE_m + lam * mean_b mean_{i<j} cos(g_i, g_j), g_m = d(sum_k z_mk)/dx (double backprop).
    """

    compile_when = "never"  # double backprop through the training forward itself

    def __init__(self, p: IGDParams) -> None:
        self.p = p

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        x0 = batch.x[0]
        m = (model.module if hasattr(model, "module") else model).size
        x = x0.unsqueeze(0).expand(m, *x0.shape).clone().requires_grad_(True)  # a copy per member
        logits, _ = model(x)
        ce = member_ce(logits, batch.y)
        g = input_gradients(logits, x).flatten(2)  # (M, B, D)
        sim = pairwise_cosine(F.normalize(g.float(), dim=2))
        return ce.sum() + self.p.lam * sim, {"ce": ce.mean().detach(), "grad_cos": sim.detach()}


register_objective("igd", IGDParams)(InputGradientDiversity)


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
