"""Each model's uncertainties as its kind reads them (:mod:`distill.students.readout`): the mean total, data and
knowledge uncertainty (nats) on the in-distribution test split and on every OOD set. Knowledge uncertainty is
what carries an ensemble's OOD advantage (the members disagree off the data); it is None for one softmax
network, whose knowledge uncertainty is identically 0.
"""

from __future__ import annotations

from distill.report.evaluate import Source
from distill.report.ood import OODSet
from distill.students.readout import UNCERTAINTIES


def _means(src: Source, key: str) -> dict[str, float | None]:
    u = src.readout.uncertainty(src.logits(key))
    return {k: None if u.get(k) is None else float(u[k].mean()) for k in UNCERTAINTIES}


def uncertainty_results(src: Source, sets: list[OODSet]) -> dict[str, dict[str, float | None]]:
    """``{"test": {total, data, knowledge}, <OOD set>: {...}}``: means over each set's inputs."""
    return {"test": _means(src, "test"), **{s.name: _means(src, s.key) for s in sets}}
