"""The perturbation seam: ``perturb(teacher, x, y, generator) -> PerturbResult`` (unpacks as ``(x_tilde, stats)``).

A method is a function ``fn(teacher, x, y, params, generator) -> PerturbResult`` registered by name with a
frozen parameter dataclass (its ranges as ``distill.recipe.ranged`` fields); :func:`make_perturbation` checks a
recipe's ``params`` key by key, type and range, and binds them.
``y`` (labels ``(B,)``) is part of the seam for label-aware methods; the methods here do not use it.

The teacher is frozen. Methods call it only inside :func:`frozen_teacher`, which puts every submodule in eval
mode (BatchNorm uses its running statistics and updates nothing) and turns ``requires_grad`` off on its
parameters for the duration (restoring each flag afterwards), so gradients are taken with respect to the input
only (``torch.autograd.grad(..., x)``): nothing is written to ``.grad`` and no weight-gradient work is done.
Every step runs one forward of all members (the teacher returns ``logits (M, B, K)`` at once); no graph is kept
across steps.

Every method reports, per batch (detached 0-d float tensors, no host sync):

* ``mi_clean`` / ``mi_perturbed``: the members' mutual information ``H(p_bar) - (1/M) sum_m H(p_m)``, mean over
  the batch, on ``x`` and on ``x_tilde``;
* ``disagree_clean`` / ``disagree_perturbed``: the pairwise label-disagreement rate, the mean over member pairs
  ``i < j`` of the fraction of samples whose argmax differ (0 for a single member);
* ``delta_rms``: ``sqrt(mean((x_tilde - x)^2))`` over every pixel of the batch, in [0, 1] pixel units.

These come from at most one clean and one perturbed forward of all members, and the logits of those forwards are
returned in :class:`PerturbResult`, so the student objective needs no second teacher forward on ``x_tilde``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from distill.metrics import log_mean_exp
from distill.models.contract import DistillModel
from distill.models.ensemble import eval_mode
from distill.registry import Registry

Stats = dict[str, Tensor]


@dataclass
class PerturbResult:
    """What a perturbation returns; ``x_tilde, stats = result`` unpacks it as the seam ``(x_tilde, stats)``.

    ``x``: the perturbed batch ``(B, C, H, W)`` in [0, 1], detached. ``stats``: detached 0-d tensors (see the
    module docstring). ``teacher_logits_clean`` / ``teacher_logits_perturbed``: the teacher's detached logits
    ``(M, B, K)`` on the clean and the perturbed batch, from forwards the method ran anyway (temperature 1, as
    the teacher returned them); reuse them instead of calling the teacher again. ``None`` when not computed.
    """

    x: Tensor
    stats: Stats = field(default_factory=dict)
    teacher_logits_clean: Tensor | None = None
    teacher_logits_perturbed: Tensor | None = None

    def __iter__(self) -> Iterator[Any]:
        yield self.x
        yield self.stats


PerturbFn = Callable[[nn.Module, Tensor, Tensor, Any, "torch.Generator | None"], PerturbResult]


PERTURBATIONS: Registry[PerturbFn] = Registry("perturbation")


def register_perturbation(name: str, params: type) -> Callable[[PerturbFn], PerturbFn]:
    """Register ``fn(teacher, x, y, params, generator)`` under ``name`` with its frozen params dataclass."""
    return PERTURBATIONS.register(name, params=params)


@dataclass(frozen=True)
class Perturbation:
    """A method bound to its checked parameters: ``perturbation(teacher, x, y, generator=None)``."""

    name: str
    params: Any
    fn: PerturbFn

    def __call__(
        self, teacher: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> PerturbResult:
        return self.fn(teacher, x, y, self.params, generator)


def make_perturbation(name: str, params: dict | None = None, key: str = "student.perturb") -> Perturbation:
    """Look up method ``name`` and check ``params`` against its dataclass; errors name the recipe key."""
    fn = PERTURBATIONS.lookup(name, f"recipe key '{key}.name'")
    return Perturbation(name, PERTURBATIONS.build_params(name, params, f"{key}.params"), fn)


# ---------------------------------------------------------------------------------------------------------------
# the frozen teacher


@contextlib.contextmanager
def frozen_teacher(teacher: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on every teacher parameter for the duration; both restored after."""
    params = [p for p in teacher.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with eval_mode(teacher):
            yield
    finally:
        for p in params:
            p.requires_grad_(True)


def teacher_logits(teacher: DistillModel, x: Tensor) -> Tensor:
    """One forward of all members: ``logits (M, B, K)``, what every model kind returns first
    (:class:`distill.models.contract.DistillModel`)."""
    logits, _ = teacher(x)
    return logits


def forward_no_grad(teacher: nn.Module, x: Tensor) -> Tensor:
    with frozen_teacher(teacher), torch.no_grad():
        return teacher_logits(teacher, x)


# ---------------------------------------------------------------------------------------------------------------
# random draws with an optional generator (which may live on another device than x)


def _device(generator: torch.Generator | None, like: Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """U[0, 1) of ``shape`` on ``like``'s device, in float32."""
    return torch.rand(shape, generator=generator, device=_device(generator, like)).to(like.device)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=generator, device=_device(generator, like)).to(like.device)


def randint(high: int, generator: torch.Generator | None, like: Tensor) -> int:
    return int(torch.randint(high, (1,), generator=generator, device=_device(generator, like)).item())


# ---------------------------------------------------------------------------------------------------------------
# directions


def unit_rms(g: Tensor) -> Tensor:
    """Per sample ``sqrt(D) * g / ||g||_2`` with ``D = C * H * W``: every pixel has unit RMS (0 where g = 0)."""
    flat = g.flatten(1).float()
    d = flat.shape[1]
    norm = flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (flat * (math.sqrt(d) / norm)).view_as(g).to(g.dtype)


def random_output_gradient(
    logits: Tensor, x: Tensor, generator: torch.Generator | None, temperature: float
) -> tuple[Tensor, Tensor]:
    """The ODS gradient of Tashiro et al. (2020) for one member drawn uniformly from the teacher's M.

    ``logits (M, B, K)`` from one forward on ``x`` (which requires grad). Draws member k, then
    ``w ~ U(-1, 1)^(B x K)`` (in that order, from ``generator``), and returns ``g = d(sum_bc w_bc p_bc)/dx`` with
    ``p = softmax(z_k / T)``, and ``p`` (detached, ``(B, K)``). Frees the graph.
    """
    k = randint(logits.shape[0], generator, x)
    p = (logits[k].float() / temperature).softmax(dim=-1)
    w = rand(tuple(p.shape), generator, p) * 2 - 1
    (g,) = torch.autograd.grad((w * p).sum(), x)
    return g, p.detach()


# ---------------------------------------------------------------------------------------------------------------
# disagreement of the members (differentiable, per sample) and the stats


def mutual_information(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``(M, B, K)`` logits -> ``(B,)``: ``H(p_bar) - (1/M) sum_m H(p_m)``, ``p_m = softmax(z_m / T)``, in nats.

    Computed from log-softmax (stable, differentiable); 0 when the members agree or M = 1.
    """
    logp = (logits.float() / temperature).log_softmax(dim=-1)
    log_pbar = log_mean_exp(logp)
    h_mean = -(log_pbar.exp() * log_pbar).sum(dim=-1)
    h_members = -(logp.exp() * logp).sum(dim=-1).mean(dim=0)
    return h_mean - h_members


def pairwise_kl(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``(M, B, K)`` -> ``(B,)``: the mean over ordered pairs ``i != j`` of ``KL(p_i || p_j)`` (0 when M = 1)."""
    logp = (logits.float() / temperature).log_softmax(dim=-1)
    m = logp.shape[0]
    if m < 2:
        return logp.new_zeros(logp.shape[1])
    p = logp.exp()
    # sum_{i != j} sum_c p_i (log p_i - log p_j) = sum_c [M sum_i p_i log p_i - (sum_i p_i)(sum_j log p_j)]
    total = m * (p * logp).sum(dim=(0, 2)) - (p.sum(dim=0) * logp.sum(dim=0)).sum(dim=-1)
    return total / (m * (m - 1))


def prob_std(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``(M, B, K)`` -> ``(B,)``: the population std over members of each class probability, mean over classes.

    ``sqrt(var + 1e-12)`` keeps the gradient finite where all members agree.
    """
    p = (logits.float() / temperature).softmax(dim=-1)
    return (p.var(dim=0, correction=0) + 1e-12).sqrt().mean(dim=-1)


# the objectives of the disagreement search (DisagreeParams.objective): (M, B, K) logits, T -> (B,)
DISAGREEMENT: Registry[Callable[[Tensor, float], Tensor]] = Registry("disagreement objective")
DISAGREEMENT.register("mi", mutual_information)
DISAGREEMENT.register("kl", pairwise_kl)
DISAGREEMENT.register("std", prob_std)


def label_disagreement(logits: Tensor) -> Tensor:
    """``(M, B, K)`` -> 0-d: the mean over pairs ``i < j`` of the fraction of samples whose argmax differ."""
    m = logits.shape[0]
    if m < 2:
        return logits.new_zeros((), dtype=torch.float32)
    pred = logits.argmax(dim=-1)  # (M, B)
    differ = (pred[:, None, :] != pred[None, :, :]).float().mean(dim=-1)  # (M, M)
    iu = torch.triu_indices(m, m, offset=1, device=logits.device)
    return differ[iu[0], iu[1]].mean()


@torch.no_grad()
def disagreement_stats(x: Tensor, x_tilde: Tensor, logits_clean: Tensor, logits_perturbed: Tensor) -> Stats:
    return {
        "mi_clean": mutual_information(logits_clean).mean().clamp_min(0),
        "mi_perturbed": mutual_information(logits_perturbed).mean().clamp_min(0),
        "disagree_clean": label_disagreement(logits_clean),
        "disagree_perturbed": label_disagreement(logits_perturbed),
        "delta_rms": (x_tilde.float() - x.float()).pow(2).mean().sqrt(),
    }


def finish(
    x: Tensor, x_tilde: Tensor, logits_clean: Tensor, logits_perturbed: Tensor, extra: Stats | None = None
) -> PerturbResult:
    """Package a method's output: detach everything and compute the stats from the forwards already run."""
    x_tilde, logits_clean, logits_perturbed = x_tilde.detach(), logits_clean.detach(), logits_perturbed.detach()
    stats = disagreement_stats(x, x_tilde, logits_clean, logits_perturbed)
    stats.update({k: v.detach() for k, v in (extra or {}).items()})
    return PerturbResult(x_tilde, stats, logits_clean, logits_perturbed)
