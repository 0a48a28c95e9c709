"""report.json as types: the report is built once as a :class:`Report` (report/build.py), written once with
:meth:`Report.to_json`, and read back with :meth:`Report.from_json` by everything that renders it (report.md, the
gap table). ``to_json(from_json(d)) == d`` for every report this package writes.

Sections whose inner shape is the measuring module's own (a model's OOD, uncertainty and corruption results, its
diversity, the cost of one model) stay JSON trees (:data:`Tree`); every key the renderers read above them is a
field here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.jsonio import to_plain
from distill.report.intervals import Comparison, Interval, Intervals, Share

FORMAT = "distill-report/1"
Tree = dict[str, Any]  # a JSON object whose shape its measuring module documents
Row = dict[str, float | None]  # metric -> value (summary.py's flat row)


def _interval(v: list[float] | None) -> Interval | None:
    return None if v is None else (float(v[0]), float(v[1]))


@dataclass(frozen=True)
class Dataset:
    name: str
    num_classes: int
    class_names: list[str]
    size: list[int]
    channels: int
    val: int  # images in the validation split
    test: int  # images in the test split
    split_seed: int
    holdout_classes: list[int]

    @classmethod
    def from_json(cls, d: Tree) -> Dataset:
        return cls(**d)


@dataclass(frozen=True)
class RunPaths:
    """Where each measured run lives (students and controls by report key)."""

    teacher: str
    single: str | None
    students: dict[str, str]
    controls: dict[str, str]

    @classmethod
    def from_json(cls, d: Tree) -> RunPaths:
        return cls(**d)


@dataclass(frozen=True)
class Controls:
    """The control runs and the strongest one, chosen on the validation split (report/controls.py)."""

    keys: list[str]
    strongest: str | None
    chosen_by: str
    val: dict[str, Row]

    @classmethod
    def from_json(cls, d: Tree) -> Controls:
        return cls(**d)


@dataclass(frozen=True)
class OODSetInfo:
    name: str
    group: str  # "near" | "far"
    images: int


@dataclass(frozen=True)
class Corruptions:
    """The corruption sweep: empty ``names`` and ``severities`` when it was off."""

    names: list[str]
    severities: list[int]
    images: int
    seed: int | None
    frost: str | None
    source: str | None

    @property
    def top_severity(self) -> str | None:
        """The largest severity swept (as the results' string key), or None when the sweep was off."""
        return str(max(self.severities)) if self.severities and self.names else None


@dataclass(frozen=True)
class Subset:
    size: int
    seed: int
    class_counts: list[int]


@dataclass(frozen=True)
class ModelRow:
    """One measured model: the teacher's members (mean, with ``std`` and ``per_member``), the single network, a
    control, the teacher or a student."""

    role: str  # "members" | "single" | "control" | "teacher" | "student"
    kind: str
    size: int  # members M
    path: str | None  # the run directory; None for the members
    metrics: dict[str, float | bool | None]  # report/evaluate.py's model_metrics
    ood: Tree | None  # report/ood.py: sets, groups, mean, primary {score, auroc}
    uncertainty: Tree | None
    corruption: Tree | None  # report/corruption.py: severity, corruptions; None when the sweep was off
    diversity: Tree | None = None  # models of several members only
    perturbation: Tree | None = None  # students only
    std: Tree | None = None  # the members only: the std of metrics, ood, uncertainty and corruption
    per_member: list[dict[str, Any]] | None = None  # the members only: each member's metrics
    data_seen: Tree | None = None  # runs only (the members are no run of their own)

    @property
    def primary_score(self) -> str | None:
        """The OOD score declared for this model (report/ood.py)."""
        return None if self.ood is None else self.ood["primary"]["score"]

    def to_json(self) -> Tree:
        head = {"role": self.role, "kind": self.kind, "size": self.size, "path": self.path, "metrics": self.metrics}
        head.update(ood=self.ood, uncertainty=self.uncertainty, corruption=self.corruption)
        if self.role != "members":
            head["data_seen"] = self.data_seen
        head.update(diversity=self.diversity, perturbation=self.perturbation, std=self.std)
        return {**head, "per_member": self.per_member}

    @classmethod
    def from_json(cls, d: Tree) -> ModelRow:
        return cls(**d)


@dataclass(frozen=True)
class CostConfig:
    threads: int
    device: str
    reps: int
    warmup: int
    batches: list[int]
    latency_batch: int
    throughput_batch: int
    baseline: str | None  # the model the relative columns divide by


@dataclass(frozen=True)
class Cost:
    """The inference-cost table (report/cost.py); each model's entry stays that module's tree."""

    config: CostConfig
    models: dict[str, Tree]

    def to_json(self) -> Tree:
        return {"config": dataclasses.asdict(self.config), "models": self.models}

    @classmethod
    def from_json(cls, d: Tree) -> Cost:
        return cls(CostConfig(**d["config"]), d["models"])


def intervals_from_json(d: Tree) -> Intervals:
    """report.json's ``intervals`` as report/intervals.py's types (a hand-built part of one: absent keys empty)."""
    return Intervals(
        method=d.get("method", ""),
        resamples=d.get("resamples", 0),
        seed=d.get("seed", 0),
        confidence=d["confidence"],
        metrics=d.get("metrics", []),
        values={m: {k: _interval(v) for k, v in row.items()} for m, row in d.get("values", {}).items()},
        versus={
            b: {
                m: {k: Comparison(c["diff"], _interval(c["ci"]), c["verdict"]) for k, c in row.items()}
                for m, row in rows.items()
            }
            for b, rows in d["versus"].items()
        },
        shares={
            b: {
                s: {k: Share(c["value"], _interval(c["ci"]), c.get("reason")) for k, c in row.items()}
                for s, row in rows.items()
            }
            for b, rows in d["shares"].items()
        },
    )


@dataclass(frozen=True)
class Comparisons:
    """What the verdict and the gain tables read: the summary rows, the teacher's gain over the reference network,
    each student's share of it, the paired bootstrap intervals (None when evaluate.bootstrap is 0) and the
    strongest control (a second baseline; it is written with :class:`Controls`)."""

    reference: str  # "single", or "members" without a single run
    summary: dict[str, Row]
    teacher_gain: Row
    gain_share: dict[str, Row]  # student -> metric -> share
    intervals: Intervals | None
    strongest: str | None = None

    def to_json(self) -> Tree:
        ivals = None if self.intervals is None else dataclasses.asdict(self.intervals)
        return {
            "reference": self.reference,
            "summary": self.summary,
            "teacher_gain": self.teacher_gain,
            "gain_share": self.gain_share,
            "intervals": ivals,
        }

    @classmethod
    def from_json(cls, d: Tree) -> Comparisons:
        """From a report's top-level keys (or a hand-built part of one: absent optional keys read as empty)."""
        ivals = d.get("intervals")
        return cls(
            reference=d["reference"],
            summary=d["summary"],
            teacher_gain=d.get("teacher_gain", {}),
            gain_share=d["gain_share"],
            intervals=None if not ivals else intervals_from_json(ivals),
            strongest=(d.get("controls") or {}).get("strongest"),
        )


@dataclass(frozen=True)
class Report:
    """The whole of report.json."""

    dataset: Dataset
    runs: RunPaths
    controls: Controls
    config: Tree  # the evaluate section as run (recipe.EvalCfg)
    conventions: dict[str, Any]
    ood_sets: list[OODSetInfo]
    corruptions: Corruptions
    dee_curve: list[float]  # calibrated LL of sub-ensembles of 1..M members
    models: dict[str, ModelRow]  # in the report's order: members, single, controls, teacher, students
    comparisons: Comparisons
    cost: Cost | None
    figures: dict[str, str | None]  # figure -> file name beside report.json
    subsets: dict[str, Subset]
    notes: list[str]
    seconds: dict[str, float]  # wall time of each part of this report, for sizing a benchmark's evaluate section
    format: str = FORMAT

    def to_json(self) -> Tree:
        """The plain JSON object written to report.json."""
        c = self.comparisons.to_json()
        out = {"format": self.format, "dataset": dataclasses.asdict(self.dataset)}
        out.update(runs=dataclasses.asdict(self.runs), controls=dataclasses.asdict(self.controls))
        out.update(reference=c.pop("reference"), config=self.config, conventions=self.conventions)
        out["ood_sets"] = [dataclasses.asdict(s) for s in self.ood_sets]
        out.update(corruptions=dataclasses.asdict(self.corruptions), dee_curve=self.dee_curve)
        out["models"] = {k: m.to_json() for k, m in self.models.items()}
        out.update(c)
        out.update(cost=None if self.cost is None else self.cost.to_json(), figures=self.figures)
        out["subsets"] = {k: dataclasses.asdict(s) for k, s in self.subsets.items()}
        out.update(notes=self.notes, seconds=self.seconds)
        return to_plain(out)

    @classmethod
    def from_json(cls, d: Tree) -> Report:
        return cls(
            format=d["format"],
            dataset=Dataset.from_json(d["dataset"]),
            runs=RunPaths.from_json(d["runs"]),
            controls=Controls.from_json(d["controls"]),
            config=d["config"],
            conventions=d["conventions"],
            ood_sets=[OODSetInfo(**s) for s in d["ood_sets"]],
            corruptions=Corruptions(**d["corruptions"]),
            dee_curve=d["dee_curve"],
            models={k: ModelRow.from_json(m) for k, m in d["models"].items()},
            comparisons=Comparisons.from_json(d),
            cost=None if d["cost"] is None else Cost.from_json(d["cost"]),
            figures=d["figures"],
            subsets={k: Subset(**s) for k, s in d["subsets"].items()},
            notes=d["notes"],
            seconds=d["seconds"],
        )

    @classmethod
    def read(cls, path: Path) -> Report:
        return cls.from_json(json.loads(Path(path).read_text()))
