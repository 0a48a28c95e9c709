"""Why ensembles work: loss-landscape / function-space analyses (Fort, Hu & Lakshminarayanan 2019) and the
design-diversity study of a population of ensembles (Rosales, Munoz & Paulitsch 2023).

- :mod:`~distill.analysis.trajectory`: the per-epoch recorder (an epoch callback) and its reader;
- :mod:`~distill.analysis.samplers`: subspace samplers on flattened weights, BatchNorm recomputation;
- :mod:`~distill.analysis.plane`: the diversity-accuracy plane and its reference curves;
- :mod:`~distill.analysis.landscape`: :func:`analyze_landscape` (one teacher run), built from
  :mod:`~distill.analysis.similarity` (weight / function similarity, t-SNE), :mod:`~distill.analysis.subspace`
  (subspace ensembles) and :mod:`~distill.analysis.interpolation`;
- :mod:`~distill.analysis.design`: :func:`analyze_diversity` (a population of teacher runs), its statistics in
  :mod:`~distill.analysis.correlation` (Pearson with a Fisher-z interval, Spearman, within-design correlation);
- :mod:`~distill.analysis.population`: training that population from one declarative recipe.

Submodules are imported on use (plotting and scikit-learn load only when an analysis runs).
"""

from __future__ import annotations

from typing import Any


def analyze_landscape(*args: Any, **kwargs: Any) -> dict:
    from distill.analysis.landscape import analyze_landscape as run

    return run(*args, **kwargs)


def analyze_diversity(*args: Any, **kwargs: Any) -> dict:
    from distill.analysis.design import analyze_diversity as run

    return run(*args, **kwargs)


__all__ = ["analyze_diversity", "analyze_landscape"]
