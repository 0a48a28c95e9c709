"""One definition of "the same data", used by every stage that pairs two runs (a student and its teacher; a
report's runs and its teacher).

Two runs hold the same data when they agree on

- what the model predicts and from what (``model.json``'s ``meta``): dataset name, classes, image format,
  the normalisation statistics measured on the training split, and the training subset drawn; and
- how the dataset was cut (the recipe's ``data`` keys in :data:`SPLIT_KEYS`): split seed, fractions,
  subset size and held-out classes; and
- how its pixels were made (:data:`PIXEL_KEYS`): ``data.image_size``, the size every image was resized and
  centre-cropped to as it was decoded. A run without it kept its images' own size, which its ``meta.size`` says,
  so ``image_size: [32, 32]`` over 32x32 images (nothing resized, the same pixels) is the same data as no
  ``image_size``; over 40x40 images it is not.

Not compared, as they do not change the images a run is trained and tested on: augmentation, ``cache_dir``, and a
student's ``transfer`` images (extra inputs only it sees; its summary.json names them).

A student on another split seed is the case this exists for: its validation (and, for datasets without an
official test split, its test) images may be images its teacher was trained on, so every number it reported
would be quietly optimistic.
"""

from __future__ import annotations

import math
from typing import Any

META_KEYS = ("name", "num_classes", "channels", "size", "class_names", "mean", "std", "subset")
SPLIT_KEYS = ("split_seed", "val_fraction", "test_fraction", "limit_train", "holdout_classes")
PIXEL_KEYS = ("image_size",)
# The normalisation is measured on the training split: equal data gives equal floats, but allow for a
# JSON round trip or another machine's summation order.
_STAT_KEYS = ("mean", "std")
_STAT_RTOL = 1e-5


def _norm(v: Any) -> Any:
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def _equal(key: str, a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if key in _STAT_KEYS and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(math.isclose(float(x), float(y), rel_tol=_STAT_RTOL) for x, y in zip(a, b))
    return a == b


def data_differences(
    reference: dict, candidate: dict, ref_label: str = "teacher", cand_label: str | None = None
) -> list[str]:
    """Every way ``candidate``'s data differs from ``reference``'s, one phrase each (empty: the same data):
    ``"<key> <candidate's> vs <reference's> (<ref_label>)"``, or with ``cand_label`` both sides labelled.

    Both are ``{"meta": DatasetMeta.to_json(), "data": the recipe's data section as a dict}``; a key missing
    from both counts as equal, so runs written before a key existed still compare on the rest.
    """
    mine = f" ({cand_label})" if cand_label else ""
    r_meta, c_meta = reference.get("meta", {}), candidate.get("meta", {})
    r_data, c_data = reference.get("data", {}), candidate.get("data", {})
    diffs = [
        f"meta.{k} {_norm(c_meta.get(k))}{mine} vs {_norm(r_meta.get(k))} ({ref_label})"
        for k in META_KEYS
        if not _equal(k, c_meta.get(k), r_meta.get(k))
    ]
    diffs += [
        f"data.{k} {_norm(c_data.get(k))}{mine} vs {_norm(r_data.get(k))} ({ref_label})"
        for k in SPLIT_KEYS
        if not _equal(k, c_data.get(k), r_data.get(k))
    ]
    diffs += [
        f"data.{k} {c}{mine} vs {r} ({ref_label})"
        for k in PIXEL_KEYS
        if (c := _pixels(k, c_data, c_meta)) is not None
        and (r := _pixels(k, r_data, r_meta)) is not None
        and not _equal(k, c, r)
    ]
    return diffs


def _pixels(key: str, data: dict, meta: dict) -> list[int] | None:
    """The effective ``data.image_size`` as [H, W]: the recipe's, else the size the images kept (``meta.size``);
    None where neither is known yet (compared before the data is loaded)."""
    size = data.get(key)
    if size is None:
        size = meta.get("size")
    if size is None:
        return None
    return [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]
