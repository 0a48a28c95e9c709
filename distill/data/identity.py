"""One definition of "the same data", used by every stage that pairs two runs (a student and its teacher; a
report's runs and its teacher).

Two runs hold the same data when they agree on

- what the model predicts and from what (``model.json``'s ``meta``): dataset name, classes, image format,
  the normalisation statistics measured on the training split, and the training subset drawn; and
- how the dataset was cut (the recipe's ``data`` keys in :data:`SPLIT_KEYS`): split seed, fractions,
  subset size and held-out classes.

A student on another split seed is the case this exists for: its validation (and, for datasets without an
official test split, its test) images may be images its teacher was trained on, so every number it reported
would be quietly optimistic.
"""

from __future__ import annotations

import math
from typing import Any

META_KEYS = ("name", "num_classes", "channels", "size", "class_names", "mean", "std", "subset")
SPLIT_KEYS = ("split_seed", "val_fraction", "test_fraction", "limit_train", "holdout_classes")
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
    return diffs
