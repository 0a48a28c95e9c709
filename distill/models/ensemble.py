"""Ensembles: M members in one module, predicting ``logits (M, B, K)``; the prediction is the mean of the
members' probabilities (never of their logits). A single network is an ensemble of one, so teachers,
single-model baselines and students share one interface.

Member execution modes (``Ensemble(members, mode=...)``, changeable at any time through ``ensemble.mode``):

* ``"loop"``: a Python loop over the members; each member's Grad-CAM map is its own tensor (a list).
* ``"vmap"``: the members' parameters and buffers are stacked on every call (``torch.stack`` is
  differentiable, so gradients reach each member's own parameters and the optimizer, DDP and checkpoints
  see the usual per-member tensors) and one ``torch.func.vmap`` of ``functional_call`` runs all members
  (``randomness="different"``: each member draws its own dropout masks). BatchNorm running statistics are
  stacked too and written back after a training-mode call, so evaluation after training matches the loop.
  The Grad-CAM maps come back stacked, ``(M, B, C, H, W)`` (:func:`distill.saliency.gradcam` takes
  either). Homogeneous ensembles only (same architecture for every member).
* ``"auto"`` (default): ``loop`` on the CPU, where it was measured fastest (docs/performance.md: vmap steps
  are 1.02-1.31x slower for the digits-sized teacher there); on CUDA, :data:`AUTO_CUDA_MODE` for homogeneous
  members.

The mode is not part of the state: ``state_dict`` keys are the same in every mode, so a checkpoint
written in one mode loads in another.

GPU options (functions the loop calls on a built model when the recipe's ``run`` asks; see docs/performance.md):
:func:`to_channels_last`, and :func:`compile_ensemble` with its fallback for double backprop.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from distill.metrics.classification import log_mean_exp
from distill.models.contract import CompileWhen, DistillModel

if TYPE_CHECKING:
    from distill.parallel import MemberSpread

Mode = Literal["loop", "vmap", "auto"]
MODES: tuple[str, ...] = ("loop", "vmap", "auto")
# What "auto" runs on CUDA for homogeneous members. The choice must come from measurement and none has been
# made on a GPU yet (no GPU in the sessions so far), so "auto" stays on the loop, the mode every test and
# result used; `python -m distill bench --device cuda` reports vmap / loop: switch to "vmap" if it wins.
AUTO_CUDA_MODE = "loop"


def _structure(module: nn.Module) -> tuple:
    """What must agree between members for vmap: module types, parameter and buffer names, shapes, dtypes."""
    return (
        tuple(type(m).__name__ for m in module.modules()),
        tuple((n, tuple(p.shape), p.dtype) for n, p in module.named_parameters()),
        tuple((n, tuple(b.shape), b.dtype) for n, b in module.named_buffers()),
    )


class Ensemble(DistillModel):
    """Members with independent initialisation; possibly of different architectures (heterogeneous).

    ``forward(x)`` takes one batch for all members, ``x: (B, C, H, W)``, or one per member,
    ``x: (M, B, C, H, W)``, and returns ``(logits (M, B, K), cam_features)``: in ``loop`` mode a list of M
    ``(B, C_m, H_m, W_m)`` maps, in ``vmap`` mode one stacked ``(M, B, C, H, W)`` tensor (indexing either
    with ``[m]`` gives member m's map).
    """

    separable_cams = True  # each member's map is its own tensor (vmap: an index of the stacked result)
    separate_members = True

    def __init__(self, members: list[nn.Module], mode: Mode = "auto") -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.mode = mode
        self._compiled: list[Callable] | None = None  # set by compile_ensemble; not a submodule (state_dict)
        self._compile_train_only = False
        self._homogeneous: bool | None = None  # cached by the property

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"Ensemble mode {value!r}: expected one of {', '.join(MODES)}")
        if value == "vmap" and not self.homogeneous:
            raise ValueError("Ensemble mode 'vmap' needs members of one architecture (a homogeneous ensemble)")
        self._mode = value

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def homogeneous(self) -> bool:
        """Whether every member has the first one's module types, parameter and buffer shapes (cached)."""
        if getattr(self, "_homogeneous", None) is None:
            first = _structure(self.members[0])
            self._homogeneous = all(_structure(m) == first for m in self.members[1:])
        return self._homogeneous

    def resolved_mode(self, device: torch.device | str) -> str:
        """The mode a forward on ``device`` runs: ``loop`` or ``vmap``."""
        if self._mode != "auto":
            return self._mode
        if torch.device(device).type == "cuda" and len(self.members) > 1 and self.homogeneous:
            return AUTO_CUDA_MODE
        return "loop"

    # --- the model contract (distill.models.contract.DistillModel) ---

    def member_modules(self) -> list[nn.Module]:
        return list(self.members)

    def set_member_mode(self, mode: str) -> None:
        self.mode = mode

    def member_mode_used(self, device: torch.device | str) -> str | None:
        return self.resolved_mode(device)

    def compile_members(self, when: CompileWhen) -> str:
        return compile_ensemble(self, when)

    def member_share(self, owned: range, spread: MemberSpread) -> MemberShare:
        return MemberShare([self.members[i] for i in owned], self.mode, spread)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | torch.Tensor]:
        per_member = x.dim() == 5
        if per_member and x.shape[0] != len(self.members):
            raise ValueError(f"got {x.shape[0]} member batches for {len(self.members)} members")
        if self.resolved_mode(x.device) == "vmap":
            return self._forward_vmap(x, per_member)
        members: list[Callable] = list(self.members)
        if self._compiled is not None and (self.training or not self._compile_train_only):
            members = self._compiled
        logits, feats = [], []
        for m, member in enumerate(members):
            out = member(x[m] if per_member else x)
            # a logits-only module put in directly (builders wrap it, distill.models.contract.Member): no features
            z, a = (out, None) if isinstance(out, torch.Tensor) else out
            logits.append(z)
            feats.append(a)
        return torch.stack(logits), feats

    def _forward_vmap(self, x: torch.Tensor, per_member: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.func import functional_call, vmap

        base = self.members[0]
        named_params = [dict(m.named_parameters()) for m in self.members]
        named_bufs = [dict(m.named_buffers()) for m in self.members]
        params = {n: torch.stack([p[n] for p in named_params]) for n in named_params[0]}
        bufs = {n: torch.stack([b[n] for b in named_bufs]) for n in named_bufs[0]}

        def one(p: dict, b: dict, xm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return functional_call(base, (p, b), (xm,), tie_weights=False)

        logits, feats = vmap(one, in_dims=(0, 0, 0 if per_member else None), randomness="different")(params, bufs, x)
        if bufs and any(m.training for m in base.modules()):
            # training-mode BatchNorm updated the stacked running statistics in place: write them back
            with torch.no_grad():
                for n, stacked in bufs.items():
                    torch._foreach_copy_([b[n] for b in named_bufs], list(stacked.unbind(0)))
        return logits, feats


class MemberShare(Ensemble):
    """The members one process owns under ``run.parallel: members``, as an ensemble of its own (its ``forward``
    takes one batch or one per owned member, and returns only their logits); ``member_spread`` says where they sit
    in the whole (:mod:`distill.parallel`)."""

    def __init__(self, members: list[nn.Module], mode: Mode, spread: MemberSpread) -> None:
        super().__init__(members, mode)
        self.member_spread = spread


def mean_probs(logits: torch.Tensor) -> torch.Tensor:
    """``logits (M, B, K)`` -> the ensemble's predictive distribution ``(B, K)``: the mean member softmax."""
    return logits.float().softmax(dim=-1).mean(dim=0)


def log_mean_probs(logits: torch.Tensor) -> torch.Tensor:
    """``logits (M, B, K)`` -> log of the mean member softmax ``(B, K)``, computed stably."""
    return log_mean_exp(logits.float().log_softmax(dim=-1))


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


# --- GPU options ---------------------------------------------------------------------------------


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store every 4-d parameter and buffer (conv weights) channels-last, in place; returns ``model``.

    On CUDA (cuDNN, tensor cores) channels-last convolutions avoid layout transposes, most of all under
    bf16/fp16 autocast. cuDNN picks the channels-last kernels when the weight is channels-last, so inputs need
    no conversion. On the CPU (oneDNN) it depends on the input size: 1.4-1.6x faster steps for the 32x32 airnet
    (docs/performance.md), a slower SDDE step for small_cnn at 8x8.
    """
    return model.to(memory_format=torch.channels_last)


def compile_ensemble(
    model: Ensemble,
    when: CompileWhen = "always",
    probe: Callable[[], object] | None = None,
    **compile_kwargs: object,
) -> str:
    """Run each member through ``torch.compile`` (loop mode); returns what was done, for the log.

    ``when``:

    * ``"always"``: every call runs the compiled members (DE, NCL, ADP, the KD student, inference);
    * ``"train"``: only training-mode calls; eval-mode calls stay eager. This is the fallback for SDDE with
      ``same_batch: false`` (and SDDE_OOD): compiled graphs (AOTAutograd) do not support double backward,
      and the Grad-CAM loss needs it, but SDDE takes its CAMs from the eval-mode diversity forward only, so
      the training forward (and its first-order backward) can still be compiled;
    * ``"never"``: uncompiled. Use it where the training forward itself is double-differentiated (SDDE with
      ``same_batch: true``, input-gradient diversity): there compile cannot help.

    ``probe``: an optional function running one representative step (forward, loss, backward); it is called
    once after compiling, and if it raises, the members are uncompiled again (eager fallback) and the reason
    is returned and warned. Give it a throw-away copy's step or restore the state afterwards: it trains.

    The compiled callables are kept outside the module tree, so ``state_dict`` keys do not change. Compilation
    happens on first use, per member; ``vmap`` mode ignores the compiled members.
    """
    if when == "never":
        model._compiled = None
        return "eager (compile not used)"
    model._compiled = [torch.compile(m, **compile_kwargs) for m in model.members]
    model._compile_train_only = when == "train"
    if probe is not None:
        try:
            probe()
        except Exception as err:  # compile failures surface as many exception types
            model._compiled = None
            msg = f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); running eager"
            warnings.warn(msg, stacklevel=2)
            return msg
    return f"compiled ({when})"
