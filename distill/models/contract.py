"""The model contracts: what a built model kind provides (:class:`DistillModel`), what a member network provides, and
the one adapter that makes any ``nn.Module`` a member.

A member network maps a float batch ``x: (B, C, H, W)`` to either

* ``logits (B, K)``: any user module; features for Grad-CAM come from a forward hook on one of its layers
  (:class:`Member`), or
* ``(logits (B, K), features (B, D, h, w))``: the registered architectures' fast path, which returns the Grad-CAM
  feature map from ``forward`` itself (no hook).

:func:`as_member` decides which by one probe forward on a dummy batch of the dataset's shape when the model is
built, so a module that returns anything else is a one-line :class:`~distill.UserError` then, never a traceback in
the middle of training. Nothing here checks a concrete class: the probe looks at what the module returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn

from distill import UserError

PROBE_BATCH = 2  # images in the build-time probe; 2, so BatchNorm-like layers and (B, K) shapes are unambiguous


class MemberNet(Protocol):
    """What a member (or student) network is: ``forward(x: (B, C, H, W) float) -> logits (B, K)`` or
    ``(logits (B, K), features (B, D, h, w))``. Inputs are what the network was trained on: the builders put a
    per-channel standardisation in front (:class:`~distill.models.registry.Normalized`), so callers pass [0, 1]
    pixels."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


CompileWhen = Literal["always", "train", "never"]


def last_linear(module: nn.Module) -> nn.Module:
    """The last ``nn.Linear`` of ``module`` (definition order); ValueError naming the module where it has none."""
    plain = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not plain:
        raise ValueError(f"{type(module).__name__} has no linear layer to take features from")
    return plain[-1]


class DistillModel(nn.Module):
    """What every built model kind is (teachers, single networks, students): the one interface through which
    training, prediction, the report and the analyses treat every kind alike, so a new kind is one file.

    ``forward(x)``: ``x (B, C, H, W)``, [0, 1] pixels (the kind standardises inside), or ``(M, B, C, H, W)``, one
    batch per member -> ``(logits (M, B, K), features)``: every member's logits, and the Grad-CAM feature maps,
    indexable by member (``features[m]``: ``(B, D, h, w)``). ``size``: M, the members.

    The members below describe how the kind runs; the defaults fit a model that is one network of its own, and a
    kind overrides what differs. None of them adds a parameter or buffer, so ``state_dict`` keys are the kind's own.
    """

    tiles_input: bool = False
    """Whether the members run as M copies of the batch in one network (a BatchEnsemble): a batch of B images is
    M * B rows through it, so inference feeds it M times fewer images at a time."""

    separable_cams: bool = False
    """Whether each member's feature map is its own differentiable tensor, so Grad-CAM of member m's logits is
    taken with respect to ``features[m]`` alone (not a slice of one tensor computed before the members split)."""

    separate_members: bool = False
    """Whether the members share no parameter: :meth:`member_modules` are networks of their own holding every
    parameter, so they can be studied one at a time (loss landscapes) and spread over processes
    (``run.parallel: members``, :meth:`member_share`)."""

    @property
    def size(self) -> int:
        """M, the number of members (``logits.shape[0]``)."""
        raise NotImplementedError(f"{type(self).__name__} does not say its size")

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups at base learning rate ``lr`` and ``weight_decay``. Default: one group of
        every parameter at the optimizer's own settings (which are ``lr`` and ``weight_decay``)."""
        return [{"params": list(self.parameters())}]

    def member_modules(self) -> list[nn.Module]:
        """The member networks, one module each, for per-member weight analyses and features. Default: the model
        itself, one network."""
        return [self]

    def last_linears(self) -> list[nn.Module]:
        """The layer whose input is each member's penultimate feature vector (for CKA), one per member, or one for
        all when the kind :attr:`tiles_input` (its input rows are then member-major, ``(M * B, D)``). Default: the
        last ``nn.Linear`` of each of :meth:`member_modules`."""
        return [last_linear(m) for m in self.member_modules()]

    def set_member_mode(self, mode: str) -> None:
        """Run the members as ``run.member_mode`` says (``loop``, ``vmap``, ``auto``); ValueError saying why a
        mode cannot run. Default: the kind has one way to run, and ignores it."""

    def member_mode_used(self, device: torch.device | str) -> str | None:
        """The member mode a forward on ``device`` runs, for the run's summary; None where the kind has none."""
        return None

    def compile_members(self, when: CompileWhen) -> str:
        """Compile the members with ``torch.compile`` as ``when`` allows; returns what was done, for the log.
        Default: not applicable, the model runs eager."""
        return f"eager (not applicable to {type(self).__name__})"

    def member_share(self, owned: range, spread: Any) -> DistillModel:  # spread: a distill.parallel.MemberSpread
        """The members ``owned`` as a model of their own, for one process under ``run.parallel: members``; only
        kinds with :attr:`separate_members` can be spread."""
        raise NotImplementedError(f"{type(self).__name__}: its members share parameters; they cannot be spread")


@dataclass(frozen=True)
class DataMeta:
    """What a model factory (``Callable[[DataMeta], nn.Module]``) is told about the data. A full
    :class:`~distill.data.DatasetMeta` has the same three fields, so a factory may be given either."""

    channels: int
    num_classes: int
    size: tuple[int, int]  # (H, W)


def last_conv(module: nn.Module) -> str | None:
    """The dotted name of the last ``nn.Conv2d`` in ``module.named_modules()`` (definition order), or None."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    return names[-1] if names else None


class Member(nn.Module):
    """Any ``nn.Module`` returning ``logits (B, K)`` as a member: ``forward(x) -> (logits (B, K), features)``.

    ``features`` is the output of the layer named ``cam_layer`` (default: the last ``nn.Conv2d``), ``(B, D, h, w)``,
    taken by a forward hook that exists only during this forward: the hook is looked up by name each call, so it
    survives ``copy.deepcopy`` and layer replacement, and holds no activation between calls. The tensor is the
    graph's own (not detached), so Grad-CAM can differentiate through it, twice for SDDE. Without a conv layer and
    without ``cam_layer``, ``features`` is None; the terms that need features refuse such a member when the model
    is built (:func:`missing_features`).

    The wrapped module's ``state_dict`` keys appear under ``module.``.
    """

    def __init__(self, module: nn.Module, cam_layer: str | None = None) -> None:
        super().__init__()
        self.module = module
        if cam_layer is not None:
            try:
                module.get_submodule(cam_layer)
            except AttributeError:
                raise UserError(
                    f"cam_layer {cam_layer!r}: {type(module).__name__} has no such layer; expected one of the names "
                    f"in its named_modules(), e.g. {last_conv(module) or 'a conv layer'}"
                ) from None
        self.cam_layer = cam_layer if cam_layer is not None else last_conv(module)

    @property
    def provides_features(self) -> bool:
        return self.cam_layer is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.cam_layer is None:
            return self.module(x), None
        seen: list[Any] = []
        handle = self.module.get_submodule(self.cam_layer).register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            logits = self.module(x)
        finally:
            handle.remove()
        return logits, (seen[-1] if seen else None)  # a layer called twice: its last call feeds the head


def describe(out: Any) -> str:
    """A short description of what a forward returned, for error messages: ``a tensor (2, 7)``, ``a tuple of
    (tensor (2, 10), tensor (2, 64))``."""
    if isinstance(out, torch.Tensor):
        return f"a tensor {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        inner = ", ".join(f"tensor {tuple(o.shape)}" if isinstance(o, torch.Tensor) else type(o).__name__ for o in out)
        return f"a {type(out).__name__} of ({inner})"
    return f"a {type(out).__name__}"


def _probe(module: nn.Module, shape: tuple[int, ...], name: str) -> Any:
    """One eval-mode, no-grad forward of zeros ``(PROBE_BATCH, *shape)``; parameters' training flags and the
    global RNG are restored, so building stays bit-for-bit what it was without the probe."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            module.eval()
            return module(torch.zeros(PROBE_BATCH, *shape))
    except UserError:
        raise
    except Exception as err:  # a user's forward may raise anything: name the module and the shape
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"{name}: {type(module).__name__} failed on a probe batch {(PROBE_BATCH, *shape)} (the data's shape): "
            f"{type(err).__name__}: {first}"
        ) from None
    finally:
        for m, flag in flags:
            m.training = flag


def _is_logits(t: Any, num_classes: int) -> bool:
    return isinstance(t, torch.Tensor) and tuple(t.shape) == (PROBE_BATCH, num_classes)


def _is_features(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[0] == PROBE_BATCH


def as_member(
    module: nn.Module,
    channels: int,
    size: tuple[int, int],
    num_classes: int,
    *,
    name: str,
    cam_layer: str | None = None,
) -> nn.Module:
    """``module`` in the ``(logits, features)`` form an ensemble runs, checked by one probe forward.

    A module returning ``(logits (B, K), features (B, D, h, w))`` is returned as it is (the fast path); one
    returning ``logits (B, K)`` is wrapped in :class:`Member`; anything else is a UserError naming ``name``, the
    module and what it returned. ``cam_layer``: the layer whose output the hook takes (logits-only modules)."""
    shape = (channels, *size)
    logits = f"logits {(PROBE_BATCH, num_classes)}"
    want = f"{logits} or a tuple ({logits}, features ({PROBE_BATCH}, D, h, w))"
    out = _probe(module, shape, name)
    if isinstance(out, tuple) and len(out) == 2 and _is_logits(out[0], num_classes) and _is_features(out[1]):
        if cam_layer is not None:
            raise UserError(
                f"{name}: cam_layer {cam_layer!r} given, but {type(module).__name__} returns its own features; "
                "drop cam_layer or return logits only"
            )
        return module
    if not _is_logits(out, num_classes):
        raise UserError(
            f"{name}: {type(module).__name__} returned {describe(out)} for a probe batch {(PROBE_BATCH, *shape)}; "
            f"expected {want}"
        )
    member = Member(module, cam_layer)
    if member.cam_layer is not None:
        _, feats = _probe(member, shape, name)
        if not _is_features(feats):
            got = "nothing (the layer did not run)" if feats is None else describe(feats)
            raise UserError(
                f"{name}: cam_layer {member.cam_layer!r} of {type(module).__name__} gave {got}; expected a feature "
                f"map ({PROBE_BATCH}, D, h, w): name a conv layer or block with cam_layer"
            )
    return member


def missing_features(model: nn.Module) -> str | None:
    """Why ``model`` cannot give Grad-CAM feature maps (naming the first member that has none), or None when it
    can. Duck-typed: a module that says ``provides_features = False`` (a :class:`Member` without a conv layer)."""
    for path, m in model.named_modules():
        if getattr(m, "provides_features", True) is False:
            inner = getattr(m, "module", m)
            return f"{path or 'the model'} ({type(inner).__name__}) has no nn.Conv2d layer and returns no feature map"
    return None
