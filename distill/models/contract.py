"""The model contract: what a member network provides, and the one adapter that makes any ``nn.Module`` provide it.

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
from typing import Any, Protocol

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
