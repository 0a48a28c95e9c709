"""The teacher's members as one row: every number averaged over members, with its standard deviation.

A member's results are a nested dict like any model's; :func:`mean_std` walks the members' dicts in step and
gives two dicts of the same shape: the mean and the sample standard deviation (``ddof = 1``; 0 for one member)
of each number. A number missing (None) for any member is None in both; a flag (bool) is True if any member
has it; text is kept when every member agrees.
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def _leaf(values: list[Any]) -> tuple[Any, Any]:
    if any(v is None for v in values):
        return None, None
    if all(isinstance(v, bool) for v in values):
        return any(values), None
    if all(isinstance(v, (int, float)) for v in values):
        finite = [float(v) for v in values]
        if not all(math.isfinite(v) for v in finite):
            return None, None
        return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0
    return (values[0], None) if all(v == values[0] for v in values) else (None, None)


def mean_std(trees: list[Any]) -> tuple[Any, Any]:
    """Mean and std of same-shaped nested dicts (see the module docstring)."""
    if not trees:
        raise ValueError("no members")
    if all(isinstance(t, dict) for t in trees):
        keys = list(trees[0])
        pairs = {k: mean_std([t.get(k) for t in trees]) for k in keys}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    return _leaf(trees)
