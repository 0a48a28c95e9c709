"""Models: an architecture registry, ensembles, and building a model from its JSON spec.

A model spec is plain JSON stored beside the weights, e.g. ``{"kind": "ensemble", "archs": ["small_cnn",
"small_cnn"]}``; :func:`build_model` turns a spec plus the dataset's meta back into a module.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from distill import UserError, unknown
from distill.data.base import DatasetMeta
from distill.models import airnet, resnet, small  # noqa: F401  (registers architectures)
from distill.models.ensemble import Ensemble, eval_mode, log_mean_probs, mean_probs
from distill.models.registry import ARCHS, Normalized, build_arch, register_arch

KindBuilder = Callable[[dict, DatasetMeta], nn.Module]
MODEL_KINDS: dict[str, KindBuilder] = {}


def register_kind(name: str) -> Callable[[KindBuilder], KindBuilder]:
    def deco(fn: KindBuilder) -> KindBuilder:
        MODEL_KINDS[name] = fn
        return fn

    return deco


@register_kind("ensemble")
def _ensemble(spec: dict, meta: DatasetMeta) -> nn.Module:
    """``{"kind": "ensemble", "archs": [...], "normalization": {"mean": [...], "std": [...]}}``; the inputs are
    standardised with the dataset's statistics unless ``normalization`` gives the ones the members were trained
    with (an imported teacher's)."""
    norm = spec.get("normalization") or {}
    mean, std = tuple(norm.get("mean", meta.mean)), tuple(norm.get("std", meta.std))
    return Ensemble([build_arch(a, meta.channels, meta.num_classes, meta.size, mean, std) for a in spec["archs"]])


def ensemble_spec(arch: str | list[str], members: int) -> dict:
    """The spec of an ensemble from a recipe's ``arch`` (one name, or one per member) and ``members``."""
    if isinstance(arch, list):
        if len(arch) != members:
            raise UserError(f"arch: {len(arch)} architectures listed for members={members}; give one or {members}")
        archs = list(arch)
    else:
        archs = [arch] * members
    for a in archs:
        if a not in ARCHS:
            raise unknown("arch", "architecture", a, ARCHS)
    return {"kind": "ensemble", "archs": archs}


def build_model(spec: dict, meta: DatasetMeta) -> nn.Module:
    kind = spec.get("kind")
    if kind not in MODEL_KINDS:
        raise unknown("model spec", "kind", kind, MODEL_KINDS)
    return MODEL_KINDS[kind](spec, meta)


__all__ = [
    "ARCHS",
    "MODEL_KINDS",
    "Ensemble",
    "Normalized",
    "build_arch",
    "build_model",
    "ensemble_spec",
    "eval_mode",
    "log_mean_probs",
    "mean_probs",
    "register_arch",
    "register_kind",
]

# registers the "batchensemble", "dirichlet" and "hydra" kinds
from distill.models import batchensemble, dirichlet, hydra  # noqa: E402, F401
