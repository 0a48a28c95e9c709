"""BatchEnsemble (Wen et al. 2020) as the student of Nam et al. (2021): M members sharing one network's weights.

Every ``Conv2d`` and ``Linear`` of a registered architecture is wrapped in place by :class:`BEConv2d` /
:class:`BELinear`, which keep the layer's weight ``W`` shared (a slow weight) and add per-member rank-1 fast
weights: an input scale ``r_m`` and an output scale ``s_m``, both drawn from ``N(1, 0.5^2)``, and, for a layer that
had a bias, a per-member bias ``b_m`` (zeros) that replaces the shared one. Member m's layer computes

    y = (W * (x o r_m)) o s_m + b_m        (* : the conv or matmul; o : per-channel / per-feature scaling)

The input batch ``(B, C, H, W)`` is tiled M times; rows ``m*B .. (m+1)*B - 1`` of every layer's input belong to
member m, so one forward of the tiled batch runs all members.

Choices, following the official code of Nam et al. (cs-giung/giung2, ``Conv2d_BatchEnsemble``,
``Linear_BatchEnsemble``, ``configs/C10_R32_BE4.yaml``):

* BatchNorm is shared across members (a plain ``BatchNorm2d`` over the whole tiled batch, ``NORM_LAYERS:
  BatchNorm2d``), so in training its batch statistics pool all members.
* Per-member biases only where the original layer has a bias (``USE_ENSEMBLE_BIAS`` deletes the shared bias
  and adds a zero-initialised per-member one; a bias-free conv before BatchNorm gets none).
* Optimisation (``BASE_LR_BE: 0.05`` vs ``BASE_LR: 0.1``, ``WEIGHT_DECAY_BE: 0``, ``SUFFIX_BE: [alpha_be,
  gamma_be]``): the fast weights ``r`` and ``s`` get half the learning rate and no weight decay; everything else,
  the per-member biases included, is a slow weight. See :meth:`BatchEnsemble.param_groups`.

Grad-CAM: the per-member feature maps returned by ``forward`` are slices of one tensor computed before the head,
so ``autograd.grad`` of the logits with respect to a slice fails (the slice is not on the logits' path); take
gradients with respect to the whole map instead (not needed by the student objective).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.base import DatasetMeta
from distill.models import register_kind
from distill.models.contract import DistillModel
from distill.models.registry import build_arch

FAST_STD = 0.5  # r_m, s_m ~ N(1, FAST_STD^2), as in the official configs (ALPHA/GAMMA_INITIALIZER: normal [1, 0.5])


class _BELayer(nn.Module):
    """Shared (slow) layer + per-member fast weights ``r (M, in)``, ``s (M, out)``, optional ``bias (M, out)``."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, members: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.members = members
        has_bias = layer.bias is not None
        self.layer = layer
        if has_bias:
            layer.bias = None  # replaced by the per-member bias
        self.r = nn.Parameter(torch.empty(members, n_in, device=layer.weight.device))
        self.s = nn.Parameter(torch.empty(members, n_out, device=layer.weight.device))
        self.bias = nn.Parameter(torch.zeros(members, n_out, device=layer.weight.device)) if has_bias else None
        self.reset_fast_weights()

    @torch.no_grad()
    def reset_fast_weights(self, std: float = FAST_STD) -> None:
        """``r, s ~ N(1, std^2)``, ``bias = 0``."""
        self.r.normal_(1.0, std)
        self.s.normal_(1.0, std)
        if self.bias is not None:
            self.bias.zero_()

    def _per_member(self, x: torch.Tensor, v: torch.Tensor, add: bool = False) -> torch.Tensor:
        """Rows of member m times (or plus) ``v[m]`` along dim 1: ``x (M*n, D, ...)``, ``v (M, D)``."""
        m = self.members
        if x.shape[0] % m:
            raise ValueError(f"a batch of {x.shape[0]} rows is not a multiple of {m} members")
        xm = x.reshape(m, x.shape[0] // m, *x.shape[1:])
        vm = v.view(m, 1, v.shape[1], *([1] * (x.dim() - 2))).to(x.dtype)
        return (xm + vm if add else xm * vm).reshape(x.shape)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._per_member(self._shared(self._per_member(x, self.r)), self.s)
        return out if self.bias is None else self._per_member(out, self.bias, add=True)

    def extra_repr(self) -> str:
        return f"members={self.members}, member_bias={self.bias is not None}"

    def fast_parameters(self) -> Iterator[nn.Parameter]:
        yield self.r
        yield self.s


class BEConv2d(_BELayer):
    """``y_m = conv(x_m o r_m; W) o s_m + b_m``, with the wrapped ``Conv2d``'s weight and settings."""

    def __init__(self, conv: nn.Conv2d, members: int) -> None:
        super().__init__(conv, members, conv.in_channels, conv.out_channels)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer._conv_forward(x, self.layer.weight, None)


class BELinear(_BELayer):
    """``y_m = (x_m o r_m) W^T o s_m + b_m``, with the wrapped ``Linear``'s weight."""

    def __init__(self, linear: nn.Linear, members: int) -> None:
        super().__init__(linear, members, linear.in_features, linear.out_features)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.layer.weight)


def convert(module: nn.Module, members: int) -> nn.Module:
    """Replace every ``Conv2d`` / ``Linear`` under ``module`` in place by its BatchEnsemble version."""
    for name, child in module.named_children():
        if isinstance(child, _BELayer):
            continue
        if isinstance(child, nn.Conv2d):
            setattr(module, name, BEConv2d(child, members))
        elif isinstance(child, nn.Linear):
            setattr(module, name, BELinear(child, members))
        else:
            convert(child, members)
    return module


class BatchEnsemble(DistillModel):
    """M members in one network. ``forward(x)``: ``x (B, C, H, W)`` (tiled M times) or ``(M, B, C, H, W)`` (one
    batch per member) -> ``(logits (M, B, K), cam_features: list of M (B, ...))``, like :class:`Ensemble`.

    ``net`` (usually a ``Normalized``-wrapped architecture) is converted in place.
    """

    tiles_input = True

    def __init__(self, net: nn.Module, members: int) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.num_members = members
        self.net = convert(net, members)

    @property
    def size(self) -> int:
        return self.num_members

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        m = self.num_members
        if x.dim() == 5:
            if x.shape[0] != m:
                raise ValueError(f"got {x.shape[0]} member batches for {m} members")
            b = x.shape[1]
            tiled = x.reshape(m * b, *x.shape[2:])
        else:
            b = x.shape[0]
            tiled = x.repeat(m, *([1] * (x.dim() - 1)))
        logits, cam = self.net(tiled)
        return logits.reshape(m, b, *logits.shape[1:]), list(cam.reshape(m, b, *cam.shape[1:]).unbind(0))

    def last_linears(self) -> list[nn.Module]:
        """The last :class:`BELinear` (its wrapped ``nn.Linear`` is never called): one head for all members, whose
        input rows are member-major, ``(M * B, D)``."""
        wrapped = [m for m in self.net.modules() if isinstance(m, BELinear)]
        if not wrapped:
            raise ValueError(f"{type(self.net).__name__} has no linear layer to take features from")
        return [wrapped[-1]]

    def be_layers(self) -> Iterator[_BELayer]:
        return (mod for mod in self.modules() if isinstance(mod, _BELayer))

    def fast_weight_parameters(self) -> list[nn.Parameter]:
        """The rank-1 factors ``r`` and ``s`` of every BatchEnsemble layer."""
        return [p for layer in self.be_layers() for p in layer.fast_parameters()]

    def slow_weight_parameters(self) -> list[nn.Parameter]:
        """Everything else: shared weights, BatchNorm, per-member biases."""
        fast = {id(p) for p in self.fast_weight_parameters()}
        return [p for p in self.parameters() if id(p) not in fast]

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups as in Nam et al.'s code: slow weights at ``(lr, weight_decay)``, fast weights at
        ``(lr / 2, 0)``. Schedulers scale each group's lr, so the ratio holds throughout training."""
        return [
            {"params": self.slow_weight_parameters(), "lr": lr, "weight_decay": weight_decay, "name": "slow"},
            {"params": self.fast_weight_parameters(), "lr": lr / 2, "weight_decay": 0.0, "name": "fast"},
        ]


@register_kind("batchensemble")
def _batchensemble(spec: dict, meta: DatasetMeta) -> nn.Module:
    """``{"kind": "batchensemble", "arch": "small_cnn", "members": 4}``."""
    net = build_arch(spec["arch"], meta.channels, meta.num_classes, meta.size, meta.mean, meta.std)
    return BatchEnsemble(net, int(spec["members"]))
