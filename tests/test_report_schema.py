"""report.json's types: a report written with ``Report.to_json`` reads back (``Report.from_json``) into the same
values, the JSON keeps its keys and nesting, and the renderers read the typed report."""

from __future__ import annotations

import json

from distill.report.intervals import Comparison, Intervals, Share
from distill.report.markdown import render_markdown
from distill.report.schema import (
    Comparisons,
    Controls,
    Corruptions,
    Cost,
    CostConfig,
    Dataset,
    ModelRow,
    OODSetInfo,
    Report,
    RunPaths,
    Subset,
)
from distill.report.table import format_gap_table, gap_table

METRICS = {"acc": 0.9, "nll": 0.3, "cnll": 0.25, "ece": 0.02, "cece": 0.01, "brier": 0.1, "dee": 1.0}
METRICS |= {"agreement": 0.95, "kl_teacher": 0.01, "temperature": 1.1, "dee_floored": True, "dee_capped": False}
OOD = {
    "sets": {},
    "groups": {},
    "mean": {"msp": {"auroc": 0.8, "fpr95": 0.5}},
    "primary": {"score": "msp", "auroc": 0.8},
}


def _row(role: str, size: int = 1) -> ModelRow:
    members = role == "members"
    return ModelRow(
        role=role,
        kind="members" if members else "ensemble",
        size=size,
        path=None if members else f"/runs/{role}",
        metrics=dict(METRICS),
        ood=OOD,
        uncertainty=None,
        corruption=None,
        std={"metrics": {"acc": 0.01}} if members else None,
        per_member=[dict(METRICS)] * size if members else None,
        data_seen=None if members else {"labelled_train_images": 100, "transfer": None},
    )


def _report() -> Report:
    cmp = Comparison(0.01, (0.002, 0.02), "better")
    ivals = Intervals(
        method="paired percentile bootstrap",
        resamples=10,
        seed=0,
        confidence=0.95,
        metrics=["acc", "cnll"],
        values={"teacher": {"acc": (0.8, 0.9), "cnll": None}},
        versus={"single": {"teacher": {"acc": cmp, "cnll": cmp}, "kd": {"acc": cmp, "cnll": cmp}}},
        shares={"single": {"kd": {"acc": Share(0.5, (0.2, 0.8)), "cnll": Share(None, None, "within noise")}}},
    )
    summary = {k: {"acc": 0.9, "cnll": 0.25, "ood_auroc/primary": 0.8} for k in ("members", "single", "teacher", "kd")}
    return Report(
        dataset=Dataset("digits", 10, [str(i) for i in range(10)], [8, 8], 1, 144, 359, 0, []),
        runs=RunPaths("/runs/teacher", "/runs/single", {"kd": "/runs/kd"}, {}),
        controls=Controls([], None, "validation accuracy", {}),
        config={"ood_scores": ["msp"]},
        conventions={"ece_bins": 15, "attribution": "d logit / d input", "cost": "CPU"},
        ood_sets=[OODSetInfo("noise", "far", 20)],
        corruptions=Corruptions([], [], 0, 0, None, None),
        dee_curve=[-0.3, -0.25],
        models={
            "members": _row("members", 2),
            "single": _row("single"),
            "teacher": _row("teacher", 2),
            "kd": _row("student"),
        },
        comparisons=Comparisons(
            "single", summary, {"acc": 0.01, "cnll": 0.02}, {"kd": {"acc": 0.5, "cnll": None}}, ivals
        ),
        cost=Cost(CostConfig(1, "cpu", 2, 1, [1, 8], 1, 8, "single"), {}),
        figures={"gap": "gap.png", "reliability": None},
        subsets={"diversity": Subset(359, 0, [36] * 10)},
        notes=["a note"],
        seconds={"predict": 0.5},
    )


def test_report_round_trips_through_its_json():
    report = _report()
    data = report.to_json()
    assert json.loads(json.dumps(data)) == data  # plain JSON: tuples became lists
    back = Report.from_json(data)
    assert back == report  # the same values, intervals' tuples included
    assert back.to_json() == data
    assert isinstance(back.comparisons.intervals.versus["single"]["teacher"]["acc"], Comparison)
    assert back.comparisons.intervals.shares["single"]["kd"]["acc"].ci == (0.2, 0.8)


def test_json_keeps_the_report_layout():
    data = _report().to_json()
    assert list(data) == [
        "format", "dataset", "runs", "controls", "reference", "config", "conventions", "ood_sets", "corruptions",
        "dee_curve", "models", "summary", "teacher_gain", "gain_share", "intervals", "cost", "figures", "subsets",
        "notes", "seconds",
    ]  # fmt: skip
    assert data["format"] == "distill-report/1" and data["reference"] == "single"
    assert "data_seen" not in data["models"]["members"]  # the members are no run of their own
    assert data["models"]["kd"]["data_seen"] == {"labelled_train_images": 100, "transfer": None}
    assert data["intervals"]["versus"]["single"]["kd"]["acc"] == {
        "diff": 0.01,
        "ci": [0.002, 0.02],
        "verdict": "better",
    }
    assert data["cost"]["config"]["latency_batch"] == 1 and data["subsets"]["diversity"]["size"] == 359


def test_renderers_read_the_typed_report(tmp_path):
    report = _report()
    (tmp_path / "report.json").write_text(json.dumps(report.to_json()))
    read = Report.read(tmp_path / "report.json")
    assert format_gap_table(report.to_json()) == gap_table(read)
    md = render_markdown(read)
    assert "Dataset **digits** (10 classes; 144 validation and 359 test images" in md
    assert "kd keeps 50% [20%, 80%] of the acc gain" in md  # the verdict from the typed intervals
    assert "- cnll: within noise" in md and "- a note" in md


def test_top_severity_reads_the_sweep():
    assert Corruptions(["gaussian_noise"], [1, 3], 10, 0, None, None).top_severity == "3"
    assert Corruptions([], [1, 3], 0, 0, None, None).top_severity is None
