"""The diversity-term seam: a teacher objective is ``CE + sum_k lam_k D_k``.

Every term reads one :class:`DiversityView`, the members' forward on the same diversity inputs, which the
objective computes once for all its terms (:class:`distill.objectives.teacher.DE`). A term declares what that
forward must provide (input gradients, outliers) and whether its gradient needs double backprop, and returns
its weighted contribution ``lam * D`` plus the values it logs. A new term is one file here plus its
``register_term`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import torch

from distill.objectives.base import Terms
from distill.parallel import MemberSpread
from distill.registry import Registry


@dataclass(frozen=True)
class DiversityView:
    """The members on the diversity inputs: the training forward when members share one batch, else one
    separate forward (one member's batch, or the outlier batch)."""

    logits: torch.Tensor  # (M, B, K)
    feats: list[torch.Tensor]  # M x (B, C, H, W): each member's CAM-layer activations
    labels: torch.Tensor  # (B,): the true labels, or pseudo-labels (argmax of the mean logits) on outliers
    x: torch.Tensor | None = None  # (M, B, C, H, W) requiring grad: set when a term needs input gradients
    # Under run.parallel: members (distill/parallel.py) this process holds some members only: ``logits`` are every
    # member's, gathered (this process's rows differentiable, the others' constants); ``feats``, ``x`` and
    # ``own_logits`` (M_own, B, K) are this process's members'. A term computes per-member things (CAMs, input
    # gradients) from the own tensors, then reads the whole through :meth:`members`; every process computes the
    # same term, its gradient reaching its own members.
    own_logits: torch.Tensor | None = None
    spread: MemberSpread | None = None

    @cached_property
    def probs(self) -> torch.Tensor:
        """``(M, B, K)`` float32 softmax, computed once for every term that reads it."""
        return self.logits.float().softmax(-1)

    @property
    def local_logits(self) -> torch.Tensor:
        """The logits of the members whose ``feats`` and ``x`` this view holds (all of them in one process)."""
        return self.logits if self.own_logits is None else self.own_logits

    def members(self, local: torch.Tensor) -> torch.Tensor:
        """A per-member tensor of this view's own members ``(M_own, ...)`` -> every member's ``(M, ...)``."""
        return local if self.spread is None else self.spread.gather(local)

    def map_size(self, cams: list[torch.Tensor] | torch.Tensor) -> tuple[int, int] | None:
        """The common CAM size over every member, when some are on other processes (else None: the maps')."""
        return None if self.spread is None else self.spread.smallest_map(cams)


class DiversityTerm:
    """Defaults: no input gradients, no outliers, no double backprop."""

    needs_input_grad: bool = False  # the view's x is a per-member copy of the inputs that requires grad
    needs_outliers: bool = False  # the view is the outlier batch (outlier exposure)
    double_backprop: bool = False  # the term's gradient differentiates a gradient (CAMs, input gradients)
    needs_features: bool = False  # reads each member's feature map (view.feats): refused for members without one

    def __call__(self, view: DiversityView) -> tuple[torch.Tensor, Terms]:
        raise NotImplementedError


# name -> make(params) -> term, each with its params dataclass
DIVERSITY_TERMS: Registry[Callable[[Any], DiversityTerm]] = Registry("diversity term")


def register_term(name: str, params: type) -> Callable:
    return DIVERSITY_TERMS.register(name, params=params)


def term_name(term: DiversityTerm) -> str:
    """The name ``term`` was registered under (its class's name if it was built otherwise), for messages."""
    return next((n for n, make in DIVERSITY_TERMS.items() if make is type(term)), type(term).__name__)


def resolve_terms(specs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Each ``{name, **params}`` checked and completed with its defaults; errors name ``key.<i>.<field>``."""
    out = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        name = spec.pop("name", None)
        DIVERSITY_TERMS.entry(name, f"recipe key '{key}.{i}.name'")
        out.append({"name": name, **asdict(DIVERSITY_TERMS.build_params(name, spec, f"{key}.{i}"))})
    return out


def make_terms(resolved: list[dict[str, Any]]) -> list[DiversityTerm]:
    """Terms from :func:`resolve_terms`' output."""
    terms = []
    for spec in resolved:
        spec = dict(spec)
        entry = DIVERSITY_TERMS.entry(spec.pop("name"), "diversity term")
        terms.append(entry.value(entry.params(**spec)))
    return terms
