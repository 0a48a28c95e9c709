"""The ensemble-to-student gap report: how much of the teacher ensemble each student kept.

:func:`evaluate_runs` loads the teacher, the single-model baseline and the students, predicts once per model
(val, test, OOD sets, corrupted test images), measures every model and writes ``report.json``, ``report.md`` and
PNG figures; :func:`format_gap_table` prints the gap as fixed-width text.

Modules, in the order of the work: ``runs`` (load and check the runs, rebuild the data), ``predictions`` (cached
logits and features), ``evaluate`` (the metric table), ``members`` (the members as mean ± std), ``ood``,
``corruption``, ``diversity``, ``perturbation``, ``summary`` and ``gain`` (the share of the teacher's gain kept),
``plots`` / ``figures``, ``table`` / ``markdown`` (the outputs; JSON via :mod:`distill.jsonio`) and
``build`` (``evaluate_runs``).
"""

from distill.report.build import evaluate_runs
from distill.report.gain import gain_share
from distill.report.table import format_gap_table

__all__ = ["evaluate_runs", "format_gap_table", "gain_share"]
