"""What the report knows about each metric it prints: one entry per name, in report order.

The report (``report/evaluate.py``), its tables (``report/table.py``), the cross-seed aggregation
(``distill aggregate``) and the gain shares read direction and labels from here, so a new metric is
its function in ``metrics/``, its line in ``report/evaluate.py``'s ``model_metrics`` and one entry below.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    name: str  # the key in report.json's "metrics"
    label: str  # a table's column header
    higher_is_better: bool = False


REPORT_METRICS: Registry[MetricInfo] = Registry("metric")
for _m in (
    MetricInfo("acc", "acc", higher_is_better=True),
    MetricInfo("nll", "NLL"),
    MetricInfo("cnll", "cNLL"),  # after temperature scaling fitted on validation
    MetricInfo("brier", "Brier"),
    MetricInfo("cbrier", "cBrier"),
    MetricInfo("ece", "ECE"),
    MetricInfo("cece", "cECE"),
    MetricInfo("dee", "DEE", higher_is_better=True),  # deep ensemble equivalent (members' CLL curve)
    MetricInfo("agreement", "agree", higher_is_better=True),  # top-1 agreement with the teacher
    MetricInfo("kl_teacher", "KL(teacher)"),
    MetricInfo("aurc", "AURC"),  # selective classification (metrics/selective.py)
    MetricInfo("acc_cov90", "acc@90%", higher_is_better=True),
    MetricInfo("acc_cov95", "acc@95%", higher_is_better=True),
):
    REPORT_METRICS.register(_m.name, _m)

# OOD detection metrics, per score and set (``ood_auroc/msp``).
OOD_METRICS: Registry[MetricInfo] = Registry("OOD metric")
for _m in (
    MetricInfo("auroc", "AUROC", higher_is_better=True),
    MetricInfo("aupr_in", "AUPR-in", higher_is_better=True),
    MetricInfo("aupr_out", "AUPR-out", higher_is_better=True),
    MetricInfo("fpr95", "FPR95"),
):
    OOD_METRICS.register(_m.name, _m)


def higher_is_better(key: str) -> bool:
    """For a metric or a summary key (``ood_auroc/msp``, ``corruption_acc/s5``: the part before ``/``, the
    ``ood_`` / ``corruption_`` prefix dropped). A name not registered is lower-is-better, as losses are."""
    base = key.split("/")[0]
    for prefix in ("ood_", "corruption_"):
        base = base.removeprefix(prefix)
    info = REPORT_METRICS.get(base) or OOD_METRICS.get(base)
    return info is not None and info.higher_is_better


def label(key: str) -> str:
    return REPORT_METRICS[key].label
