"""How much of the teacher's gain over a single network did each student keep?

For a metric ``f``: ``share = (f(student) - f(single)) / (f(teacher) - f(single))``: 1 = the student matches
the teacher, 0 = no better than a single network, between 0 and 1 = that share of the gain kept, above 1 =
better than the teacher, below 0 = worse than the single network, whether higher or lower is better for ``f``.
That reading needs a gain: when the teacher is no better than the single network (its gain ~0, below ``tol``
relative to the values' scale, or of the wrong sign) the ratio would read a student worse than both as "more
than the whole gain kept", so the share is None, as it is when a value is missing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distill.report.intervals import Intervals


def gain_share(
    student: float | None,
    single: float | None,
    teacher: float | None,
    higher_is_better: bool | None = None,
    tol: float = 1e-6,
) -> float | None:
    """The share of the teacher's gain the student keeps. ``higher_is_better`` (None: unknown) makes a teacher
    that is *worse* than the single network give None too."""
    values = (student, single, teacher)
    if any(v is None or isinstance(v, bool) or not math.isfinite(v) for v in values):
        return None
    gain = teacher - single
    if abs(gain) <= tol * max(1.0, abs(teacher), abs(single)):
        return None
    if higher_is_better is not None and (gain > 0) != higher_is_better:
        return None
    return (student - single) / gain


def gain_table(summary: dict[str, dict], reference: str, students: list[str]) -> dict[str, dict]:
    """``{student: {metric: share}}`` for every metric of the teacher's summary row, with ``reference`` (the
    single model, or the teacher's mean member) as the baseline; None where the teacher does not improve on it."""
    from distill.report.evaluate import higher_is_better

    t, b = summary["teacher"], summary[reference]
    return {s: {k: gain_share(summary[s].get(k), b.get(k), t[k], higher_is_better(k)) for k in t} for s in students}


def teacher_gain(summary: dict[str, dict], reference: str) -> dict[str, float | None]:
    """The teacher's improvement over the baseline per metric, signed so that positive = better (the shares
    are None where this is not positive)."""
    from distill.report.evaluate import higher_is_better

    t, b = summary["teacher"], summary[reference]
    out: dict[str, float | None] = {}
    for k, tv in t.items():
        bv = b.get(k)
        out[k] = None if tv is None or bv is None else (tv - bv) * (1 if higher_is_better(k) else -1)
    return out


def within_noise(shares: dict[str, dict], ivals: Intervals, reference: str) -> dict[str, dict]:
    """``shares`` with None wherever the paired bootstrap says the teacher's own gain over ``reference`` is within
    the test set's noise (a share of a gain that may be 0 is no number: it printed as -4400% before)."""
    out = {}
    for s, row in shares.items():
        checked = ivals.shares.get(reference, {}).get(s, {})
        out[s] = {k: (None if k in checked and checked[k].value is None else v) for k, v in row.items()}
    return out
