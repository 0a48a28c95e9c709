"""A frozen teacher whose members are spread over processes, for a student trained data-parallel
(``run.parallel: members`` in the student stage).

Each of the W processes keeps only its share of the teacher's M members (:func:`distill.parallel.share_members`:
the others' weights are freed), so the teacher's parameter memory is split W ways, while the student trains as
under ``run.parallel: data``: DDP, each process its shard of every batch. Every step each process needs all M
members' logits on its own shard, and the perturbation search (ODS, ConfODS, disagreement ascent) needs the
input gradient through them. :class:`SpreadTeacher` is a module that returns ``logits (M, B, K)`` on this
process's shard ``x (B, C, H, W)`` and is differentiable in ``x``, so the student objective and every
perturbation call it exactly as they call a whole teacher.

The collective behind it (:class:`_SpreadLogits`):

* forward: all-gather the shards' inputs to ``X (N, C, H, W)`` (``N`` = the shards' rows, in rank order), run
  this process's members on all of ``X`` -> ``(M_own, N, K)``, all-gather over the processes -> ``(M, N, K)``
  in member order, and return this shard's rows ``(M, B, K)``;
* backward: all-gather the output gradient ``(M, B, K)`` -> ``(M, N, K)``, take this process's members' rows,
  vector-Jacobian product through them at ``X`` -> ``dX (N, C, H, W)`` (this process's members' part of every
  row's gradient), all-reduce (sum) over the processes and return this shard's rows.

Why this shape: the members are the heavy part, the images and logits are small, so moving inputs and logits
(``N x C x H x W`` and ``M x N x K``) costs far less than moving weights, and each process runs its members once
per call on every shard (the same member-rows of work as a whole teacher on one shard, W times fewer members
on W times more rows). The forward's graph through the own members is kept only when the input requires grad
(the perturbation's search): the backward then needs no second forward. The backward's sum uses an all-reduce
rather than a reduce-scatter because gloo (the CPU backend) has no reduce-scatter; the all-reduce moves W
times more bytes, still images only.

Shards of unequal size (the training loader drops the last uneven batch, so its shards are equal; a caller
may still pass others) are padded with zero rows to the largest for the collectives and cut back: one
all-gather of the sizes per forward makes every process agree on them.

Every process must call the teacher the same number of times, with grad or without, in the same order (these
are collectives): the student objective and the perturbations do (a fixed number of calls per step, decided by
the recipe, never by the data). Equality with the whole teacher: the same members on the same rows, so the
logits equal the whole teacher's up to the conv kernels' rounding on a batch of N rows instead of B; the input
gradient's sum over members is grouped by process (``(a + b) + (c + d)`` instead of ``((a + b) + c) + d``).
Measured on the CPU (gloo, 2 processes, tests/test_spread_student.py): the logits equal the whole teacher's bit for
bit, the input gradient within 1.2e-8 (values up to 0.04), and kd, ConfODS, BatchEnsemble (one-to-one) and
Dirichlet (EnD²) students trained 2 epochs against the spread teacher end with the weights of the same students
against the whole teacher under ``run.parallel: data``, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from distill.models.contract import DistillModel
from distill.parallel import MemberSpread, share_members, spread_of


def _own_logits(share: DistillModel, x: Tensor) -> Tensor:
    """This process's members on ``x (N, C, H, W)`` -> ``(M_own, N, K)``."""
    logits, _ = share(x)  # the model contract: (M_own, N, K) and the CAM features, unused here
    return logits


class _Rows:
    """Where each process's shard sits in the gathered rows (rank order)."""

    def __init__(self, spread: MemberSpread, rows: int, device: torch.device) -> None:
        self.spread = spread
        size = torch.tensor([rows], dtype=torch.int64, device=spread.device)
        sizes = [torch.empty_like(size) for _ in range(spread.world)]
        dist.all_gather(sizes, size)
        self.sizes = [int(s[0]) for s in sizes]
        self.start = sum(self.sizes[: spread.rank])
        self.rows = rows
        self.device = device

    def gather(self, local: Tensor, dim: int) -> Tensor:
        """Every process's ``local`` (its rows along ``dim``), concatenated in rank order along ``dim``."""
        local = local.detach().to(self.spread.device)
        pad = max(self.sizes) - local.shape[dim]
        if pad:
            shape = list(local.shape)
            shape[dim] = pad
            local = torch.cat([local, local.new_zeros(shape)], dim)
        parts = [torch.empty_like(local) for _ in range(self.spread.world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, self.sizes)], dim).to(self.device)

    def mine(self, whole: Tensor, dim: int) -> Tensor:
        """This shard's rows of ``whole`` (rows along ``dim``)."""
        return whole.narrow(dim, self.start, self.rows)


class _SpreadLogits(torch.autograd.Function):
    """``x (B, C, H, W)`` -> every member's logits on it ``(M, B, K)``, differentiable in ``x``; see the module
    docstring for the collectives."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, share: DistillModel) -> Tensor:
        spread = share.member_spread
        rows = _Rows(spread, x.shape[0], x.device)
        xs = rows.gather(x, 0)  # (N, C, H, W)
        with torch.enable_grad():  # the forward of a Function runs without grad: the input gradient needs a graph
            xs.requires_grad_(True)
            own = _own_logits(share, xs)  # (M_own, N, K)
        ctx.rows, ctx.owned, ctx.xs, ctx.own = rows, spread.owned, xs, own
        return rows.mine(spread.gather_detached(own.detach()), 1)  # (M, B, K)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        rows: _Rows = ctx.rows
        g_own = rows.gather(grad, 1)[ctx.owned]  # (M_own, N, K): the gradient of this process's members' rows
        (dx,) = torch.autograd.grad(ctx.own, ctx.xs, g_own.to(ctx.own.dtype))  # (N, C, H, W); frees the graph
        ctx.xs = ctx.own = None
        dx = dx.to(rows.spread.device).contiguous()
        dist.all_reduce(dx)  # every process's members' part of every row's gradient, summed
        return rows.mine(dx, 0).to(rows.device), None


class SpreadTeacher(nn.Module):
    """This process's share of a frozen teacher's members, called as the whole teacher: ``x (B, C, H, W)`` on
    this process's shard -> ``(logits (M, B, K), None)`` of all M members (a collective: every process calls it)."""

    def __init__(self, share: DistillModel) -> None:
        super().__init__()
        self.share = share

    @property
    def spread(self) -> MemberSpread:
        spread = spread_of(self.share)
        assert spread is not None  # share_members gives every share its spread
        return spread

    @property
    def size(self) -> int:
        return self.spread.total

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        """``(logits (M, B, K), None)``: the model contract's output, without CAM features (a frozen teacher's
        are never read)."""
        return self._logits(x), None

    def _logits(self, x: Tensor) -> Tensor:
        if self.spread.world == 1:
            return _own_logits(self.share, x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _SpreadLogits.apply(x, self.share)
        with torch.no_grad():  # no graph kept: a clean or perturbed forward, not the search's
            rows = _Rows(self.spread, x.shape[0], x.device)
            own = _own_logits(self.share, rows.gather(x, 0))  # (M_own, N, K)
            return rows.mine(self.spread.gather_detached(own), 1)


def spread_teacher(teacher: nn.Module, rank: int, world: int, device: torch.device, what: str) -> SpreadTeacher:
    """``teacher`` (an ensemble of separate members) spread over ``world`` processes: this process keeps its share
    of the members, the others' weights move to the meta device (freed). Refused with a :class:`UserError` where
    the teacher has fewer members than processes or is not an ensemble of separate members."""
    return SpreadTeacher(share_members(teacher, rank, world, device, what))


def parameter_bytes(module: nn.Module) -> int:
    """The bytes of ``module``'s parameters that hold memory (on a device other than meta)."""
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.device.type != "meta")
