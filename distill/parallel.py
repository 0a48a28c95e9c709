"""Members spread over processes (``run.parallel: members``): each process owns a contiguous share of an
ensemble's members and trains only those, on Accelerate over torch.distributed.

Under ``run.parallel: data`` (the default) every process holds all M members and DDP all-reduces their
gradients over shards of each batch. Under ``members``, rank r of W owns members ``[r*M//W, (r+1)*M//W)``
(:func:`owned_members`), at least one each, so parameters and optimiser state are split W ways. Nothing is
all-reduced between members (they share no parameters): each process steps its own optimiser.

What keeps the run equal to one process:

* **data**: every process draws the batches one process draws (``DeviceLoader`` with rank 0 of 1, all M
  views, augmented together so the augmentation's random draws are the same), and each trains its members
  on their own views (``same_batch: false``) or on the shared batch;
* **cross-member terms** (SDDE's CAM similarity, NCL, ADP, OE, IGD) read the other members' outputs through
  :meth:`MemberSpread.gather`: every process computes the same term on the same gathered values, and its own
  members' rows keep their autograd graph, so the term's gradient reaching a member is the one-process gradient
  (see :meth:`MemberSpread.gather` for why not torch.distributed.nn.functional.all_gather);
* **checkpoints** are gathered to the main process and written in the one-process format
  (:meth:`MemberSpread.whole_state`), so a spread run loads in one process and resumes at any world size
  (:meth:`MemberSpread.own_state` takes this process's share of a one-process state).

On the CPU (gloo, 2 processes) DE, SDDE, NCL, ADP and IGD teachers train bit for bit as in one process
(tests/test_member_parallel.py). Randomness inside the members' forward (dropout) is drawn per process, so with
dropout a spread run is a valid run but not the one-process run's numbers. Tensors travel point to point with a
JSON header (names, shapes, dtypes), never pickled. Validation and the test metrics gather every member's
predictions (:func:`gather_predictions`, called by ``predict_logits``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from distill import UserError
from distill.models.contract import DistillModel


def owned_members(rank: int, world: int, members: int) -> range:
    """The members rank ``rank`` of ``world`` owns: ``[rank*M//W, (rank+1)*M//W)``, contiguous, nearly even."""
    return range(rank * members // world, (rank + 1) * members // world)


def check_world(world: int, members: int, what: str) -> None:
    """A process without a member would idle while the others train; refuse rather than fall back to data
    parallelism behind the user's back."""
    if world > members:
        raise UserError(
            f"run.parallel: members: {world} processes for the {members} members of {what}; each process needs "
            f"at least one member: launch at most {members} processes, or use run.parallel: data"
        )


def launched_processes() -> int:
    """The world size a launcher (accelerate launch, torchrun) set, before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_members_mode(members: int, supported: bool, what: str, world: int | None = None) -> None:
    """Everything ``run.parallel: members`` can refuse before data is loaded: too many processes, or an
    objective that cannot read the other members across processes."""
    if not supported:
        raise UserError(
            f"run.parallel: members: {what}'s objective cannot spread its members over processes (the teacher "
            "objectives built on 'de' can: de, sdde, sdde_ood, ncl, adp, igd); use run.parallel: data"
        )
    check_world(launched_processes() if world is None else world, members, what)


# --- the state, one-process format <-> this process's share -----------------------------------------------

_MEMBER_KEY = re.compile(r"^model\.members\.(\d+)\.(.*)$")
_OPTIM_KEY = re.compile(r"^optim\.(\d+)\.(.*)$")


@dataclass(frozen=True)
class Share:
    """Where this process's members sit in the whole ensemble: member and parameter index ranges."""

    first_member: int
    members: int
    first_param: int  # the optimizer state's index of this share's first parameter in the one-process run
    params: int


def globalise(tensors: dict[str, torch.Tensor], optim_meta: dict, share: Share) -> tuple[dict, dict]:
    """This process's state (its own member and parameter numbering) -> the one-process names."""
    out = {}
    for k, v in tensors.items():
        if m := _MEMBER_KEY.match(k):
            k = f"model.members.{int(m[1]) + share.first_member}.{m[2]}"
        elif m := _OPTIM_KEY.match(k):
            k = f"optim.{int(m[1]) + share.first_param}.{m[2]}"
        out[k] = v
    meta = {
        "param_groups": [
            {**g, "params": [i + share.first_param for i in g["params"]]} for g in optim_meta["param_groups"]
        ],
        "scalars": {str(int(i) + share.first_param): s for i, s in optim_meta.get("scalars", {}).items()},
    }
    return out, meta


def localise(tensors: dict[str, torch.Tensor], optim_meta: dict, share: Share) -> tuple[dict, dict]:
    """The inverse of :func:`globalise`: from a one-process state, this share's tensors in its own numbering
    (other members' tensors dropped; RNG and other non-member tensors kept)."""
    members = range(share.first_member, share.first_member + share.members)
    params = range(share.first_param, share.first_param + share.params)
    out = {}
    for k, v in tensors.items():
        if m := _MEMBER_KEY.match(k):
            if int(m[1]) not in members:
                continue
            k = f"model.members.{int(m[1]) - share.first_member}.{m[2]}"
        elif m := _OPTIM_KEY.match(k):
            if int(m[1]) not in params:
                continue
            k = f"optim.{int(m[1]) - share.first_param}.{m[2]}"
        out[k] = v
    groups = [
        {**g, "params": [i - share.first_param for i in g["params"] if i in params]} for g in optim_meta["param_groups"]
    ]
    scalars = {str(int(i) - share.first_param): s for i, s in optim_meta.get("scalars", {}).items() if int(i) in params}
    return out, {"param_groups": groups, "scalars": scalars}


def merge_optim_meta(parts: Sequence[dict]) -> dict:
    """The one-process optimizer meta from every process's globalised one, in rank order: each param group's
    indices concatenated (hyper-parameters are the same on every process), the per-parameter scalars united."""
    groups = [
        {**g, "params": [i for p in parts for i in p["param_groups"][n]["params"]]}
        for n, g in enumerate(parts[0]["param_groups"])
    ]
    scalars = {k: v for p in parts for k, v in p["scalars"].items()}
    return {"param_groups": groups, "scalars": scalars}


# --- the spread --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberSpread:
    """Who owns which members, and the collectives between the processes."""

    rank: int
    world: int
    total: int  # M, the whole ensemble's members
    device: torch.device  # where collectives run (the process's device: CUDA under NCCL, the CPU under gloo)
    share: Share

    @property
    def owned(self) -> slice:
        r = owned_members(self.rank, self.world, self.total)
        return slice(r.start, r.stop)

    @property
    def counts(self) -> list[int]:
        return [len(owned_members(r, self.world, self.total)) for r in range(self.world)]

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """``local (M_own, ...)`` -> ``(M, ...)``, every process's members in member order; this process's rows
        are ``local`` itself (differentiable), the others' are constants.

        Every process computes the same cross-member term from the same gathered values, so the term's gradient
        for this process's rows, computed here, is already the one-process gradient. This departs from the
        issue's torch.distributed.nn.functional.all_gather, whose backward sums every process's gradient for
        each row: with a replicated term that is W equal copies, to be divided by W (exact only for W = 2), and
        one collective more in every backward, in an order the autograd engine picks. Here the backward is local
        and exact for any W; a term may also read ``local`` directly (its members' CAMs) without double counting.
        """
        if self.world == 1:
            return local
        parts = self._all_gather(local.detach())
        parts[self.rank] = local
        return torch.cat(parts)

    @torch.no_grad()
    def _all_gather(self, local: torch.Tensor) -> list[torch.Tensor]:
        """Every process's rows, unpadded, on ``local``'s device."""
        padded = self._padded(local.to(self.device))
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return [p[:n].to(local.device) for p, n in zip(parts, self.counts)]

    @torch.no_grad()
    def gather_detached(self, local: torch.Tensor) -> torch.Tensor:
        """:meth:`gather` without autograd, for predictions; returns the tensor on ``local``'s device."""
        return local if self.world == 1 else torch.cat(self._all_gather(local))

    def _padded(self, local: torch.Tensor) -> torch.Tensor:
        # all_gather needs one shape on every process; M = 5 over 2 processes owns 2 and 3
        pad = max(self.counts) - local.shape[0]
        if pad:
            local = torch.cat([local, local.new_zeros(pad, *local.shape[1:])])
        return local.contiguous()

    def smallest_map(self, cams: Sequence[torch.Tensor] | torch.Tensor) -> tuple[int, int]:
        """The smallest CAM size over every member (heterogeneous members' maps are resized to it)."""
        hw = torch.tensor([min(c.shape[-2] for c in cams), min(c.shape[-1] for c in cams)], device=self.device)
        if self.world > 1:
            dist.all_reduce(hw, op=dist.ReduceOp.MIN)
        return int(hw[0]), int(hw[1])

    def same_everywhere(self, value: int) -> int:
        """Rank 0's ``value`` on every process: for a draw from torch's global RNG (the member whose batch is the
        diversity batch) that random ops in the members' forward (dropout) can make differ between processes."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return int(t[0])

    def sync_rng(self) -> None:
        """Every process continues from rank 0's torch RNG (the CPU's, and this process's CUDA device's).

        Each process draws every member's augmentation and the diversity batch from the global RNG, which must
        agree across processes for the gathered terms to be one term; a member's dropout draws on its own
        process only. Called after every step: a no-op in effect when the members draw nothing (the states are
        already equal), else the processes go on from one state (the run is then valid, not bit-identical to one
        process: its dropout masks differ)."""
        if self.world == 1:
            return
        cpu = torch.get_rng_state().to(self.device)
        dist.broadcast(cpu, src=0)
        torch.set_rng_state(cpu.cpu())
        if self.device.type == "cuda":
            gpu = torch.cuda.get_rng_state(self.device).to(self.device)
            dist.broadcast(gpu, src=0)
            torch.cuda.set_rng_state(gpu.cpu(), self.device)

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every process (so that an error is raised by all of them, not one)."""
        if self.world == 1:
            return flag
        t = torch.tensor([0 if flag else 1], device=self.device)
        dist.all_reduce(t)
        return int(t[0]) == 0

    # --- checkpoints ---

    def whole_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> tuple[dict, dict] | None:
        """This process's state (``loop.state_parts``) -> the one-process state on the main process (None
        elsewhere): every process's members sent there; RNG and schedule are the main process's."""
        tensors, optim = globalise(tensors, meta["optimizer"], self.share)
        if self.rank != 0:
            _send({k: v for k, v in tensors.items() if not k.startswith("rng.")}, optim, self.device)
            return None
        parts = [optim]
        for src in range(1, self.world):
            more, more_optim = _recv(src, self.device)
            tensors.update(more)
            parts.append(more_optim)
        meta = {**meta, "optimizer": merge_optim_meta(parts), "parallel": {"mode": "members", "processes": self.world}}
        return tensors, meta

    def own_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Any) -> tuple[dict, dict]:
        """This process's share of a one-process state (written by one process or by a spread run of any size)."""
        done = meta.get("parallel", {})
        if done.get("mode", "data") == "data" and done.get("processes", 1) > 1:
            raise UserError(
                f"--resume {path}: written by {done['processes']} processes under run.parallel: data (each drew a "
                f"shard of every batch); run.parallel: members on {self.world} processes draws other batches: "
                "resume it under run.parallel: data"
            )
        tensors, optim = localise(tensors, meta["optimizer"], self.share)
        return tensors, {**meta, "optimizer": optim}


def _send(tensors: dict[str, torch.Tensor], extra: dict, device: torch.device) -> None:
    names = sorted(tensors)
    header = json.dumps(
        {
            "extra": extra,
            "tensors": [[n, list(tensors[n].shape), str(tensors[n].dtype).removeprefix("torch.")] for n in names],
        }
    ).encode()
    dist.send(torch.tensor([len(header)], dtype=torch.int64, device=device), dst=0)
    dist.send(torch.frombuffer(bytearray(header), dtype=torch.uint8).to(device), dst=0)
    for n in names:
        dist.send(tensors[n].detach().to(device).contiguous(), dst=0)


def _recv(src: int, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    size = torch.empty(1, dtype=torch.int64, device=device)
    dist.recv(size, src=src)
    raw = torch.empty(int(size[0]), dtype=torch.uint8, device=device)
    dist.recv(raw, src=src)
    header = json.loads(bytes(raw.cpu().tolist()).decode())
    out = {}
    for name, shape, dtype in header["tensors"]:
        buf = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
        dist.recv(buf, src=src)
        out[name] = buf.cpu()
    return out, header["extra"]


# --- the model -----------------------------------------------------------------------------------------------


def spread_of(model: nn.Module) -> MemberSpread | None:
    """The spread of a model that holds a share of the members, None for a whole model."""
    return getattr(model, "member_spread", None)


def share_members(model: nn.Module, rank: int, world: int, device: torch.device, what: str) -> nn.Module:
    """This process's share of ``model``'s members (:meth:`~distill.models.contract.DistillModel.member_share`), for
    a kind whose members share no parameter.

    The other members' weights move to the meta device (freed): each process builds the whole ensemble from the
    seed, as one process does, so every member starts from its one-process initialisation."""
    if not isinstance(model, DistillModel) or not model.separate_members:  # the contract, not a class
        raise UserError(f"run.parallel: members: {what} is not an ensemble of separate members; use run.parallel: data")
    members = model.member_modules()
    check_world(world, len(members), what)
    own = owned_members(rank, world, len(members))
    counts = [len(list(m.parameters())) for m in members]
    share = Share(own.start, len(own), sum(counts[: own.start]), sum(counts[own.start : own.stop]))
    spread = MemberSpread(rank, world, len(members), torch.device(device), share)
    for i, m in enumerate(members):
        if i not in own:
            m.to("meta")
    return model.member_share(own, spread)


def gather_predictions(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """``logits (M_own, N, K)`` of a share of the members -> every member's ``(M, N, K)``; others unchanged."""
    spread = spread_of(model)
    return logits if spread is None else spread.gather_detached(logits)
