"""Datasets as decoded uint8 tensors with fixed, seeded splits, and a registry of loaders by name.

A loader turns a user's files into :class:`RawData` (images ``(N, C, H, W)`` uint8, labels int64, and the
official test split when the dataset has one). :func:`load_dataset` does the rest the same way for every
dataset: held-out classes, the seeded val / test split, per-channel mean and std from the training split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

from distill import UserError
from distill.recipe import DataCfg
from distill.registry import Registry


@dataclass(frozen=True)
class DatasetMeta:
    name: str
    num_classes: int
    channels: int
    size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units, from the training split
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    # What a training subset drew, when one was asked for (see :func:`stratified_subset`); part of the data
    # identity that a student and its teacher must share.
    subset: dict | None = None

    def to_json(self) -> dict:
        out = {
            "name": self.name,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
        }
        if self.subset is not None:
            out["subset"] = self.subset
        return out

    @classmethod
    def from_json(cls, d: dict) -> DatasetMeta:
        return cls(
            name=d["name"],
            num_classes=int(d["num_classes"]),
            channels=int(d["channels"]),
            size=tuple(d["size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            class_names=tuple(d.get("class_names", ())),
            subset=d.get("subset"),
        )


@dataclass
class RawData:
    """What a loader returns: images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64."""

    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor | None = None  # the dataset's official test split, when it has one
    test_y: torch.Tensor | None = None
    class_names: tuple[str, ...] = ()


@dataclass
class Splits:
    meta: DatasetMeta
    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    heldout_x: torch.Tensor | None = None  # test images of held-out classes (an OOD set), if any


Loader = Callable[[Path | None], RawData]
# each entry's hint: how to get the dataset, said in the error when its files are missing
LOADERS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str, hint: str = "") -> Callable[[Loader], Loader]:
    return LOADERS.register(name, hint=hint)


def missing(name: str, root: Path | None, what: str) -> UserError:
    """The error for data that is not where the user said: names the path and how to provide it."""
    entry = LOADERS.get_entry(name)
    hint = "" if entry is None else entry.hint
    where = f"at {root}" if root is not None else "(no data.root given)"
    return UserError(f"dataset '{name}': {what} not found {where}. {hint}".strip())


def check_images(x: torch.Tensor, y: torch.Tensor, source: str) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise UserError(f"{source}: expected uint8 images (N, C, H, W), got {tuple(x.shape)} {x.dtype}")
    if y.shape != (x.shape[0],):
        raise UserError(f"{source}: {x.shape[0]} images but labels of shape {tuple(y.shape)}")


@dataclass(frozen=True)
class DecodeOptions:
    """What the recipe says of decoding, for the loaders that decode and cache (:mod:`distill.data.images`):
    ``data.image_size`` as (H, W) and ``data.cache_dir``. Set around a loader call by :func:`raw_data` (a context
    variable, so the loaders' one-argument signature stays); None: the defaults."""

    image_size: tuple[int, int] | None = None
    cache_dir: Path | None = None


_DECODE: ContextVar[DecodeOptions | None] = ContextVar("distill_decode", default=None)


def current_decode_options() -> DecodeOptions:
    return _DECODE.get() or DecodeOptions()


@contextmanager
def decode_options(options: DecodeOptions) -> Iterator[None]:
    token = _DECODE.set(options)
    try:
        yield
    finally:
        _DECODE.reset(token)


FIT_CHUNK = 1024  # images resized per call: a float copy of a whole dataset would take 4x its uint8 memory


def fit_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images ``(N, C, h, w)`` -> ``(N, C, H, W)``: scaled (bilinear, antialiased) so that they cover
    ``size``, i.e. the shorter side relative to ``size`` fits exactly, then centre-cropped; torchvision's
    ``Resize`` + ``CenterCrop``. Images already of ``size`` are returned as they are (the same pixels)."""
    (h, w), (th, tw) = x.shape[2:], size
    if (h, w) == (th, tw):
        return x
    scale = max(th / h, tw / w)
    sh, sw = max(th, round(h * scale)), max(tw, round(w * scale))
    top, left = (sh - th) // 2, (sw - tw) // 2
    out = []
    for i in range(0, len(x), FIT_CHUNK):
        xf = x[i : i + FIT_CHUNK].float()
        if (sh, sw) != (h, w):
            xf = torch.nn.functional.interpolate(xf, size=(sh, sw), mode="bilinear", antialias=True)
        out.append(xf[:, :, top : top + th, left : left + tw].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out) if out else x.new_empty((0, x.shape[1], th, tw))


def raw_data(
    name: str,
    root: str | Path | None,
    *,
    image_size: tuple[int, int] | None = None,
    cache_dir: str | Path | None = None,
) -> RawData:
    """What loader ``name`` reads from ``root``; with ``image_size``, every image fitted to it (:func:`fit_images`),
    per image by the decoding loaders (so mixed sizes load), here for the others."""
    loader = LOADERS.lookup(name, "data.name")
    options = DecodeOptions(image_size, Path(cache_dir).expanduser() if cache_dir else None)
    with decode_options(options):
        raw = loader(Path(root).expanduser() if root else None)
    if image_size is not None:
        raw.x = fit_images(raw.x, image_size)
        raw.test_x = fit_images(raw.test_x, image_size) if raw.test_x is not None else None
    check_images(raw.x, raw.y, f"dataset '{name}'")
    return raw


def _split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation cut in two: (kept indices, held-out indices), each sorted."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    k = round(n * fraction)
    return perm[k:].sort().values, perm[:k].sort().values


def stratified_subset(y: torch.Tensor, n: int, seed: int, seeded_ties: bool = False) -> torch.Tensor:
    """Sorted indices of ``n`` items of labels ``y`` drawn per class in proportion to the class sizes.

    Each class gets ``floor(n * share)`` items, and the largest remainders one more, so the count is exactly
    ``n`` and every class keeps at least one item when ``n`` is at least the number of classes. Which items
    of a class are kept is a seeded permutation, so the draw does not depend on the order of the files
    (a class-sorted folder cut at ``n`` would keep the first classes only).
    """
    classes, counts = y.unique(return_counts=True)
    if n >= len(y):
        return torch.arange(len(y))
    exact = counts.double() * n / len(y)
    take = exact.floor().long()
    order = (exact - take).argsort(descending=True, stable=True)
    if seeded_ties:
        # Ties of the remainders (balanced classes) broken by a seeded order, not by class index: 8 images of
        # CIFAR-10's 10 classes would otherwise never hold a ship or a truck. Off for training subsets, whose draws
        # (and so every trained run's data) stay those of earlier versions.
        tie = torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed + 1))
        order = tie[(exact - take)[tie].argsort(descending=True, stable=True)]
    take[order[: n - int(take.sum())]] += 1
    short = (take == 0) & (counts > 0)
    if short.any() and not (seeded_ties and n < len(classes)):  # give a class with no item one, from the largest
        for c in short.nonzero().flatten().tolist():
            take[int(take.argmax())] -= 1
            take[c] = 1
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = (y == c).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picked).sort().values


def check_classes(splits: dict[str, torch.Tensor], num_classes: int, dataset: str) -> None:
    """Refuse a split that lacks a class the model predicts: its metrics would be silently wrong."""
    for split, y in splits.items():
        if len(y) == 0:  # an empty split is asked for (val_fraction: 0), not a lost class
            continue
        absent = sorted(set(range(num_classes)) - set(y.unique().tolist()))
        if absent:
            shown = ", ".join(map(str, absent[:20])) + (", ..." if len(absent) > 20 else "")
            raise UserError(
                f"data: the {split} split of '{dataset}' has no images of class(es) {shown} "
                f"(of 0..{num_classes - 1}); give more images or a larger split fraction"
            )


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    xf = x.float().div_(255).transpose(0, 1).reshape(x.shape[1], -1)
    std = xf.std(dim=1).clamp_min(1e-3)
    return tuple(xf.mean(dim=1).tolist()), tuple(std.tolist())


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    limit_train: int | None = None,
    holdout_classes: list[int] | tuple[int, ...] = (),
    image_size: tuple[int, int] | None = None,
    cache_dir: str | Path | None = None,
) -> Splits:
    """Load a dataset by name and cut it into fixed train / val / test splits.

    Datasets without an official test split lose ``test_fraction`` of their images to a test split; then
    ``val_fraction`` of the remaining training images become the validation split. Both cuts are seeded by
    ``split_seed`` only, so every run and every model of one recipe sees the same split.
    ``holdout_classes`` are removed everywhere and their test images kept as ``heldout_x`` (an OOD set);
    the remaining labels are renumbered 0..K-1. ``limit_train`` keeps a seeded, class-stratified subset of
    the training split (:func:`stratified_subset`), recorded in ``meta.subset``. Every split must hold
    every class, or this is a :class:`UserError` naming the split and the classes. ``image_size`` and
    ``cache_dir``: :func:`raw_data`.
    """
    raw = raw_data(name, root, image_size=image_size, cache_dir=cache_dir)
    x, y = raw.x, raw.y
    if raw.test_x is None:
        keep, test = _split(len(y), test_fraction, split_seed)
        test_x, test_y, x, y = x[test], y[test], x[keep], y[keep]
    else:
        test_x, test_y = raw.test_x, raw.test_y
    keep, val = _split(len(y), val_fraction, split_seed + 1)
    val_x, val_y, x, y = x[val], y[val], x[keep], y[keep]
    x, y, subset = _train_subset(x, y, limit_train, split_seed)
    num_classes = int(max(y.max(), test_y.max())) + 1
    names = raw.class_names or tuple(str(c) for c in range(num_classes))
    heldout_x = None
    if holdout_classes:
        parts = ((x, y), (val_x, val_y), (test_x, test_y))
        heldout_x, ((x, y), (val_x, val_y), (test_x, test_y)), names = _hold_out(
            holdout_classes, num_classes, names, parts
        )
        num_classes = len(names)
    check_classes({"training": y, "validation": val_y, "test": test_y}, num_classes, name)
    if subset is not None and holdout_classes:
        subset["per_class"] = torch.bincount(y, minlength=num_classes).tolist()
    mean, std = channel_stats(x)
    meta = DatasetMeta(
        name=name,
        num_classes=num_classes,
        channels=x.shape[1],
        size=(x.shape[2], x.shape[3]),
        mean=mean,
        std=std,
        class_names=names,
        subset=subset,
    )
    return Splits(meta, x, y, val_x, val_y, test_x, test_y, heldout_x)


def _train_subset(
    x: torch.Tensor, y: torch.Tensor, limit_train: int | None, split_seed: int
) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """``limit_train``'s class-stratified subset of the training split, and its record for ``meta.subset``."""
    if limit_train is None or limit_train >= len(y):
        return x, y, None
    # Seeded by split_seed (not the model seed), so every model of a recipe trains on the same subset.
    idx = stratified_subset(y, limit_train, split_seed + 2)
    x, y = x[idx], y[idx]
    subset = {
        "limit_train": int(limit_train),
        "seed": split_seed + 2,
        "per_class": torch.bincount(y).tolist(),
        "indices_sha256": hashlib.sha256(idx.numpy().astype("<i8").tobytes()).hexdigest()[:16],
    }
    return x, y, subset


def _hold_out(
    holdout_classes: list[int] | tuple[int, ...],
    num_classes: int,
    names: tuple[str, ...],
    parts: tuple[tuple[torch.Tensor, torch.Tensor], ...],
) -> tuple[torch.Tensor, tuple[tuple[torch.Tensor, torch.Tensor], ...], tuple[str, ...]]:
    """``holdout_classes`` removed from every ``(x, y)`` of ``parts`` (train, val, test), the rest renumbered
    0..K-1: the held-out test images (the last part's), the kept parts and the kept class names."""
    bad = [c for c in holdout_classes if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"data.holdout_classes: {bad} not in 0..{num_classes - 1}")
    held = torch.tensor(sorted(set(holdout_classes)))
    kept = torch.tensor([c for c in range(num_classes) if c not in set(holdout_classes)])
    remap = torch.full((num_classes,), -1, dtype=torch.long)
    remap[kept] = torch.arange(len(kept))
    test_x, test_y = parts[-1]
    heldout_x = test_x[torch.isin(test_y, held)]

    def only_kept(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.isin(ys, kept)
        return xs[m], remap[ys[m]]

    return heldout_x, tuple(only_kept(xs, ys) for xs, ys in parts), tuple(names[int(c)] for c in kept)


def load_splits(data: DataCfg) -> Splits:
    """The splits a recipe's ``data`` section describes (:func:`load_dataset`): every stage and the report
    rebuild their data through this one function."""
    return load_dataset(
        data.name,
        data.root,
        split_seed=data.split_seed,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        limit_train=data.limit_train,
        holdout_classes=data.holdout_classes,
        image_size=data.image_hw(),
        cache_dir=data.cache_dir,
    )


def conform(x: torch.Tensor, like: DatasetMeta) -> torch.Tensor:
    """Convert uint8 images to ``like``'s channels and size (grey <-> RGB, antialiased resize)."""
    if x.shape[1] != like.channels:
        if like.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif like.channels == 1 and x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise UserError(f"cannot convert {x.shape[1]}-channel images to {like.channels} channels")
    if tuple(x.shape[2:]) != tuple(like.size):
        xf = torch.nn.functional.interpolate(x.float(), size=tuple(like.size), mode="bilinear", antialias=True)
        x = xf.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def load_ood(
    name: str, root: str | Path | None, like: DatasetMeta, cache_dir: str | Path | None = None
) -> torch.Tensor:
    """Images of an OOD dataset in ``like``'s format: its official test split, or all of it."""
    raw = raw_data(name, root, cache_dir=cache_dir)
    x = raw.test_x if raw.test_x is not None else raw.x
    return conform(x, like)
