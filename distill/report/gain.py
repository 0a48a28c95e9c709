"""How much of the teacher's gain over a single network did each student keep?

For a metric ``f``: ``share = (f(student) - f(single)) / (f(teacher) - f(single))``. The ratio needs no sign
convention: 1 = the student matches the teacher, 0 = no better than a single network, between 0 and 1 = that
share of the gain kept, above 1 = better than the teacher, below 0 = worse than the single network, whether
higher or lower is better for ``f``. It is None when the teacher's gain is ~0 (below ``tol``, relative to the
values' scale) or when a value is missing.
"""

from __future__ import annotations

import math


def gain_share(student: float | None, single: float | None, teacher: float | None, tol: float = 1e-6) -> float | None:
    values = (student, single, teacher)
    if any(v is None or isinstance(v, bool) or not math.isfinite(v) for v in values):
        return None
    gain = teacher - single
    if abs(gain) <= tol * max(1.0, abs(teacher), abs(single)):
        return None
    return (student - single) / gain


def gain_table(summary: dict[str, dict], reference: str, students: list[str]) -> dict[str, dict]:
    """``{student: {metric: share}}`` for every metric of the teacher's summary row, with ``reference`` (the
    single model, or the teacher's mean member) as the baseline."""
    t, b = summary["teacher"], summary[reference]
    return {s: {k: gain_share(summary[s].get(k), b.get(k), t[k]) for k in t} for s in students}


def teacher_gain(summary: dict[str, dict], reference: str) -> dict[str, float | None]:
    """The teacher's improvement over the baseline per metric, signed so that positive = better (a share is
    only meaningful where this is clearly positive)."""
    from distill.report.evaluate import higher_is_better

    t, b = summary["teacher"], summary[reference]
    out: dict[str, float | None] = {}
    for k, tv in t.items():
        bv = b.get(k)
        out[k] = None if tv is None or bv is None else (tv - bv) * (1 if higher_is_better(k) else -1)
    return out
