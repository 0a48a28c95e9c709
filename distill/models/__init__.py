"""Models: an architecture registry, ensembles, and building a model from its JSON spec.

A model spec is plain JSON stored beside the weights, e.g. ``{"kind": "ensemble", "archs": ["small_cnn",
"small_cnn"]}``; :func:`build_model` turns a spec plus the dataset's meta back into a module.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from distill import UserError
from distill.data.base import DatasetMeta
from distill.models.contract import DistillModel
from distill.models.ensemble import Ensemble, eval_mode, log_mean_probs, mean_probs
from distill.models.registry import ARCHS, Normalized, build_arch, register_arch
from distill.registry import Registry, discover

KindBuilder = Callable[[dict, DatasetMeta], DistillModel]
MODEL_KINDS: Registry[KindBuilder] = Registry("kind")


def register_kind(name: str) -> Callable[[KindBuilder], KindBuilder]:
    return MODEL_KINDS.register(name)


def ensemble_of(members: list[nn.Module]) -> DistillModel:
    """An ensemble of ``members``, each mapping ``x (B, C, H, W)`` to ``(logits (B, K), features)`` (built
    architectures, :func:`build_arch` / :func:`~distill.models.registry.wrap_arch`), or logits only (then without
    Grad-CAM features): ``forward(x) -> (logits (M, B, K), features)``. One member makes one network a model."""
    return Ensemble(members)


@register_kind("ensemble")
def _ensemble(spec: dict, meta: DatasetMeta) -> DistillModel:
    """``{"kind": "ensemble", "archs": [...], "normalization": {"mean": [...], "std": [...]}}``; the inputs are
    standardised with the dataset's statistics unless ``normalization`` gives the ones the members were trained
    with (an imported teacher's)."""
    norm = spec.get("normalization") or {}
    mean, std = tuple(norm.get("mean", meta.mean)), tuple(norm.get("std", meta.std))
    return Ensemble([build_arch(a, meta.channels, meta.num_classes, meta.size, mean, std) for a in spec["archs"]])


def ensemble_spec(arch: str | list[str], members: int, key: str = "arch") -> dict:
    """The spec of an ensemble from a recipe's ``arch`` (one name, or one per member) and ``members``: the one
    check of the names and their count (:func:`distill.resolve.check_recipe` calls it); errors name ``key``."""
    listed = isinstance(arch, list)
    if listed and len(arch) != members:
        raise UserError(f"recipe key '{key}': {len(arch)} names for {members} members; give one or {members}")
    archs = list(arch) if listed else [arch] * members
    for i, a in enumerate(archs):
        ARCHS.lookup(a, f"recipe key '{key}.{i}'" if listed else f"recipe key '{key}'")
    return {"kind": "ensemble", "archs": archs}


def build_model(spec: dict, meta: DatasetMeta) -> DistillModel:
    kind = spec.get("kind")
    model = MODEL_KINDS.lookup(kind, "model spec")(spec, meta)
    if not isinstance(model, DistillModel):  # the contract, not a concrete class: the rest relies on its members
        raise UserError(
            f"model spec kind '{kind}': its builder returned a {type(model).__name__}; a model kind builds a "
            "distill.models.contract.DistillModel"
        )
    return model


__all__ = [
    "ARCHS",
    "MODEL_KINDS",
    "DistillModel",
    "Ensemble",
    "Normalized",
    "build_arch",
    "build_model",
    "ensemble_of",
    "ensemble_spec",
    "eval_mode",
    "log_mean_probs",
    "mean_probs",
    "register_arch",
    "register_kind",
]

# every file here registers what it defines (architectures, model kinds) when imported
discover(__name__, __path__)
