"""Hydra (Tran et al. 2020, "Hydra: Preserving Ensemble Diversity for Model Distillation"): one shared body and M
light heads; head m is distilled from teacher member m, so the heads keep the members' disagreement.

Built from any registered architecture whose ``forward`` runs its top-level children as a chain (every
architecture in the registry does; :class:`Hydra` checks it numerically when it is built):

* ``split`` names the top-level child where the heads begin. The body is the input standardisation plus every
  child before ``split``, run once per forward; each head is its own copy of the architecture with the body's
  children replaced by ``nn.Identity``, so a head's ``forward`` is the architecture's own (pooling, logit scale,
  Grad-CAM layer) applied to the body's output. Default: the second-to-last child with parameters, i.e. the last
  feature stage plus the classifier (``cam_layer`` for small_cnn / tiny_cnn / lenet, ``last`` for airnet_cpu,
  ``layer3`` / ``layer4`` for the ResNets, ``bn`` for the WRNs).
* ``head_width`` scales the channel widths of the heads' convolutions and hidden linear layers (1 = the
  architecture's own widths; the classifier keeps its K outputs). Only heads that are a plain chain of
  conv / BatchNorm / linear layers can be narrowed (not residual stages); other splits need ``head_width: 1``.
* ``head_lr_scale`` (s): the heads' optimizer group takes learning rate ``s * lr`` and weight decay
  ``weight_decay / s`` (:meth:`Hydra.param_groups`). The student's loss is the mean of the M heads' losses (the
  paper's average KL), so each head gets 1/M of the gradient it would get as a network trained alone, while the
  body gets the heads' mean. Under SGD (momentum and Nesterov included), s = M makes every head's update exactly
  that of a network trained alone on its own loss, at the recipe's lr and decay; s = 1 (the default) keeps the
  plain mean. Adam is invariant to the 1/M, so it wants s = 1.

``forward(x)``: ``x (B, C, H, W)`` or ``(M, B, C, H, W)`` (one batch per head; the body then runs M times) ->
``(logits (M, B, K), cam_features: list of M maps)``, like :class:`~distill.models.ensemble.Ensemble`.

Departures from the paper: the paper's heads are a few small layers on a ResNet body and its training has two
phases (a single "Hinton" head distilled from the ensemble mean, then copied to M heads trained one-to-one).
Here the head is the architecture's tail, optionally narrowed, and the two phases are optional
(``identical_heads`` in the spec starts every head as a copy of head 0; the objective's ``hinton_phase`` trains
them on the ensemble mean first, :mod:`distill.students.hydra`), because the heads' size is a recipe option to
be measured rather than fixed.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from distill import UserError
from distill.data.base import DatasetMeta
from distill.models import register_kind
from distill.models.contract import DistillModel
from distill.models.ensemble import eval_mode
from distill.models.registry import Normalized, build_arch

_PROBE = 2  # images in the construction-time check


def stage_names(net: nn.Module) -> list[str]:
    """The top-level children of an architecture, in definition order (the order its chain runs)."""
    return [name for name, _ in net.named_children()]


def default_split(net: nn.Module) -> str:
    """The second-to-last top-level child with parameters: heads = the last feature stage and the classifier."""
    with_params = [name for name, child in net.named_children() if any(True for _ in child.parameters())]
    if len(with_params) < 2:
        raise UserError(f"hydra: {type(net).__name__} has fewer than two stages with parameters to split")
    return with_params[-2]


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, leaf = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


def narrow_head(head: nn.Module, channels_in: int, width: float) -> None:
    """Scale the widths of ``head``'s conv / BatchNorm / hidden linear layers by ``width`` in place (fresh weights);
    ``channels_in``: the channels of the body's output. The last linear layer keeps its outputs (the classes).

    Raises UserError where the head is not a plain chain (a layer whose input channels are not the previous
    layer's outputs, grouped convolutions)."""
    layers = [(n, m) for n, m in head.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    c_orig, c_new = channels_in, channels_in  # channels flowing into the next layer: as built, and narrowed

    def refuse(why: str) -> UserError:
        return UserError(f"hydra: head_width {width} needs a head that is a plain conv/BN/linear chain; {why}")

    for name, m in layers:
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.in_channels != c_orig:
                raise refuse(f"{name} takes {m.in_channels} channels where the chain carries {c_orig}")
            out = max(1, round(width * m.out_channels))
            new: nn.Module = nn.Conv2d(
                c_new, out, m.kernel_size, m.stride, m.padding, m.dilation, bias=m.bias is not None
            )
            c_orig, c_new = m.out_channels, out
        elif isinstance(m, nn.BatchNorm2d):
            if m.num_features != c_orig:
                raise refuse(f"{name} normalises {m.num_features} channels where the chain carries {c_orig}")
            new = nn.BatchNorm2d(c_new, m.eps, m.momentum, m.affine, m.track_running_stats)
        else:
            if m.in_features % c_orig:
                raise refuse(f"{name} takes {m.in_features} features, not a multiple of {c_orig} channels")
            spatial = m.in_features // c_orig
            out = m.out_features if name == linears[-1] else max(1, round(width * m.out_features))
            new = nn.Linear(c_new * spatial, out, bias=m.bias is not None)
            c_orig, c_new = m.out_features, out
        _replace(head, name, new)


class Hydra(DistillModel):
    """A shared body and M heads from M freshly built copies of one architecture (see the module docstring).

    ``image_shape``: ``(C, H, W)`` of the inputs, for the construction-time check of the split."""

    separable_cams = True  # each head computes its own map from the body's output

    def __init__(
        self,
        nets: list[Normalized],
        image_shape: tuple[int, int, int],
        split: str | None = None,
        head_width: float = 1.0,
        identical_heads: bool = False,
        head_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not nets:
            raise ValueError("hydra needs at least one head")
        if head_width <= 0:
            raise UserError(f"hydra: head_width must be positive, got {head_width}")
        if head_lr_scale <= 0:
            raise UserError(f"hydra: head_lr_scale must be positive, got {head_lr_scale}")
        self.head_lr_scale = head_lr_scale
        inner = [n.net for n in nets]
        names = stage_names(inner[0])
        split = default_split(inner[0]) if split is None else split
        if split not in names:
            raise UserError(
                f"hydra: split '{split}' is not a stage of {type(inner[0]).__name__}; expected one of: "
                f"{', '.join(names)}"
            )
        self.split, self.head_width = split, head_width
        self.register_buffer("mean", nets[0].mean.clone())
        self.register_buffer("std", nets[0].std.clone())
        body_names = names[: names.index(split)]
        # a fixed probe from its own generator: checking the split must not move the global RNG (initialisation)
        probe = torch.rand(_PROBE, *image_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), eval_mode(nets[0]):
            reference = nets[0](probe)[0]
        self.body = nn.Sequential(OrderedDict((n, getattr(inner[0], n)) for n in body_names))
        for net in inner:
            for n in body_names:
                setattr(net, n, nn.Identity())
        self.heads = nn.ModuleList(inner)
        self._check_chain(probe, reference)
        if head_width != 1.0:
            with torch.no_grad(), eval_mode(self):
                channels = self.body(self._standardise(probe)).shape[1]
            for head in self.heads:
                narrow_head(head, channels, head_width)
            try:
                with torch.no_grad(), eval_mode(self):
                    self(probe)
            except RuntimeError as err:
                raise UserError(
                    f"hydra: head_width {head_width} does not fit split '{split}' of {type(inner[0]).__name__} "
                    f"(the head is not a plain chain): {str(err).splitlines()[0][:160]}"
                ) from None
        if identical_heads:
            for head in self.heads[1:]:
                head.load_state_dict(self.heads[0].state_dict())

    def _check_chain(self, probe: torch.Tensor, reference: torch.Tensor) -> None:
        """Head 0 on the body's output must reproduce the unsplit network: otherwise the architecture's forward is
        not the chain of its children that the split assumes."""
        with torch.no_grad(), eval_mode(self):
            got = self.heads[0](self.body(self._standardise(probe)))[0]
        if got.shape != reference.shape or not torch.allclose(got, reference, rtol=1e-4, atol=1e-5):
            raise UserError(
                f"hydra: {type(self.heads[0]).__name__}.forward is not a chain of its stages, so it cannot be split at "
                f"'{self.split}'"
            )

    @property
    def size(self) -> int:
        return len(self.heads)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups: the body (and the standardisation) at ``(lr, weight_decay)``, the heads at
        ``(s * lr, weight_decay / s)`` with ``s = head_lr_scale`` (see the module docstring). One group when s = 1,
        so the optimizer state of a plain Hydra is laid out as before the option existed."""
        s = self.head_lr_scale
        if s == 1.0:
            return [{"params": list(self.parameters()), "lr": lr, "weight_decay": weight_decay}]
        head_ids = {id(p) for p in self.heads.parameters()}
        body = [p for p in self.parameters() if id(p) not in head_ids]
        return [
            {"params": body, "lr": lr, "weight_decay": weight_decay, "name": "body"},
            {"params": list(self.heads.parameters()), "lr": lr * s, "weight_decay": weight_decay / s, "name": "heads"},
        ]

    @property
    def members(self) -> nn.ModuleList:
        """The heads, under the name the report's feature hooks use for an ensemble's members."""
        return self.heads

    def member_modules(self) -> list[nn.Module]:
        """The heads (the shared body is no member's own)."""
        return list(self.heads)

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if x.dim() == 5:
            if x.shape[0] != len(self.heads):
                raise ValueError(f"got {x.shape[0]} head batches for {len(self.heads)} heads")
            feats = [self.body(self._standardise(x[m])) for m in range(len(self.heads))]
        else:
            shared = self.body(self._standardise(x))  # (B, C', H', W'): computed once for all heads
            feats = [shared] * len(self.heads)
        outs = [head(f) for head, f in zip(self.heads, feats)]
        return torch.stack([o[0] for o in outs]), [o[1] for o in outs]


@register_kind("hydra")
def _hydra(spec: dict, meta: DatasetMeta) -> nn.Module:
    """``{"kind": "hydra", "arch": "small_cnn", "heads": 4, "split": "cam_layer" | null, "head_width": 1.0,
    "identical_heads": false, "head_lr_scale": 1.0}``."""
    nets = [
        build_arch(spec["arch"], meta.channels, meta.num_classes, meta.size, meta.mean, meta.std)
        for _ in range(int(spec["heads"]))
    ]
    shape = (meta.channels, *meta.size)
    return Hydra(
        nets,
        shape,
        spec.get("split"),
        float(spec.get("head_width", 1.0)),
        bool(spec.get("identical_heads", False)),
        float(spec.get("head_lr_scale", 1.0)),
    )
