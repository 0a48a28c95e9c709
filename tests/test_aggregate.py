"""``distill aggregate``: mean ± std over runs, paired t-intervals and Fieller intervals of the share of the mean
gain, against hand computations; refusals of mixed data and of overwriting a user's file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distill.cli import main
from distill.report.aggregate import aggregate, fieller, paired, spread

T975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def test_paired_t_interval_by_hand():
    p = paired([1.0, 2.0, 3.0], 0.95)  # mean 2, sd 1
    half = T975_DF2 * 1.0 / math.sqrt(3)
    assert p.mean == 2.0 and p.ci == pytest.approx((2 - half, 2 + half))
    assert paired([0.5], 0.95).ci is None


def test_spread_says_how_many_runs_have_the_value():
    s = spread([0.5, None, 0.7])
    assert (s.mean, s.n, s.of) == (pytest.approx(0.6), 2, 3) and s.std == pytest.approx(math.sqrt(0.02))


def test_fieller_with_an_exact_denominator_is_the_t_interval_divided():
    num, den = [0.1, 0.2, 0.3], [0.4, 0.4, 0.4]  # the teacher's gain is the same in every run
    s = fieller(num, den, 0.95)
    half = T975_DF2 * 0.1 / math.sqrt(3)
    assert s.value == pytest.approx(0.5)
    assert s.ci == pytest.approx(((0.2 - half) / 0.4, (0.2 + half) / 0.4))


def test_fieller_bounds_solve_its_quadratic_and_refuse_a_noisy_gain():
    num, den = [0.10, 0.25, 0.18, 0.30], [0.40, 0.35, 0.45, 0.50]
    s = fieller(num, den, 0.95)
    n, a, d = 4, sum(num) / 4, sum(den) / 4
    from statistics import covariance, variance

    from scipy import stats

    t2 = stats.t.ppf(0.975, 3) ** 2
    for r in s.ci:  # both ends lie on (a - r d)^2 = t^2 (v_aa - 2 r v_ad + r^2 v_dd)
        lhs = (a - r * d) ** 2
        rhs = t2 * (variance(num) / n - 2 * r * covariance(num, den) / n + r * r * variance(den) / n)
        assert lhs == pytest.approx(rhs, rel=1e-9)
    assert s.ci[0] < s.value < s.ci[1]
    noisy = fieller([0.1, 0.2, 0.1], [0.3, -0.2, 0.05], 0.95)
    assert noisy.value is None and "not distinguishable from 0" in noisy.reason


def _report(tmp: Path, name: str, acc: dict, data: str = "digits") -> Path:
    models = list(acc)
    students = [m for m in models if m not in ("single", "teacher", "members")]
    summary = {m: {"acc": a, "nll": 1 - a, "ood_auroc/primary": 0.5 + a / 10} for m, a in acc.items()}
    report = {
        "dataset": {"name": data, "num_classes": 10, "test": 360, "val": 144, "holdout_classes": []},
        "reference": "single",
        "summary": summary,
        "gain_share": {s: {} for s in students},
        "models": {m: {"ood": {"primary": {"score": "msp" if m == "single" else "neg_mi"}}} for m in models},
    }
    report["cost"] = {
        "config": {"latency_batch": 1},
        "models": {m: {"params": 100, "flops_per_image": 2e6, "torch": {"b1": {"median_ms": 1.5}}} for m in models},
    }
    d = tmp / name / "report"
    d.mkdir(parents=True)
    (d / "report.json").write_text(json.dumps(report))
    return tmp / name


def test_aggregate_command_by_hand(tmp_path, capsys):
    runs = [
        _report(tmp_path, "s0", {"single": 0.80, "teacher": 0.90, "kd": 0.85}),
        _report(tmp_path, "s1", {"single": 0.82, "teacher": 0.90, "kd": 0.88}),
        _report(tmp_path, "s2", {"single": 0.81, "teacher": 0.92, "kd": 0.86}),
    ]
    agg = aggregate(runs)
    assert agg.models["teacher"]["acc"].mean == pytest.approx(0.9066666, abs=1e-6)
    d = [0.10, 0.08, 0.11]
    assert agg.versus["single"]["teacher"]["acc"].mean == pytest.approx(sum(d) / 3)
    share = agg.shares["single"]["kd"]["acc"]
    assert share.value == pytest.approx((0.05 + 0.06 + 0.05) / (0.10 + 0.08 + 0.11))  # of the MEAN gain
    out = tmp_path / "agg.md"
    assert main(["aggregate", *map(str, runs), "--out", str(out), "--json", str(tmp_path / "agg.json")]) == 0
    text = out.read_text()
    assert "| kd |" in text and "Fieller" in text and f"{share.value:.0%} [" in text
    assert json.loads((tmp_path / "agg.json").read_text())["shares"]["single"]["kd"]["acc"]["n"] == 3
    assert agg.cost["kd"]["mflops"].mean == pytest.approx(2.0) and agg.cost["kd"]["latency_ms"].n == 3
    assert "Inference cost" in text
    assert main(["aggregate", *map(str, runs), "--out", str(out)]) == 0  # its own file: rewritten
    capsys.readouterr()


def test_aggregate_refusals(tmp_path, capsys):
    a = _report(tmp_path, "a", {"single": 0.8, "teacher": 0.9})
    b = _report(tmp_path, "b", {"single": 0.8, "teacher": 0.9}, data="mnist")
    assert main(["aggregate", str(a), str(b)]) == 2
    assert "other data" in capsys.readouterr().err
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    assert main(["aggregate", str(a), "--out", str(mine)]) == 2
    assert mine.read_text() == "my notes\n" and "not overwritten" in capsys.readouterr().err
    assert main(["aggregate", str(tmp_path / "nowhere")]) == 2
    assert "no report.json" in capsys.readouterr().err


def test_against_a_fixed_model_gives_its_differences_and_shares(tmp_path, capsys):
    """--against control:x: the shares of the teacher's gain over that model, by hand; a model missing from a run,
    or the reference itself, is refused naming the flag."""
    runs = [
        _report(tmp_path, "s0", {"single": 0.80, "control:x": 0.84, "teacher": 0.90, "kd": 0.88}),
        _report(tmp_path, "s1", {"single": 0.82, "control:x": 0.85, "teacher": 0.91, "kd": 0.87}),
        _report(tmp_path, "s2", {"single": 0.81, "control:x": 0.83, "teacher": 0.92, "kd": 0.89}),
    ]
    agg = aggregate(runs, against=["control:x"])
    assert list(agg.versus) == ["single", "control:x"]
    assert agg.versus["control:x"]["teacher"]["acc"].mean == pytest.approx((0.06 + 0.06 + 0.09) / 3)
    share = agg.shares["control:x"]["kd"]["acc"].value
    assert share == pytest.approx((0.04 + 0.02 + 0.06) / (0.06 + 0.06 + 0.09))
    assert main(["aggregate", *map(str, runs), "--against", "control:x"]) == 0
    assert "## Share of the teacher's mean gain kept, against control:x" in capsys.readouterr().out
    # against a student (kd + ConfODS against plain kd): the others' differences and shares, none of kd over itself
    by_kd = aggregate(runs, against=["kd"])
    assert "kd" not in by_kd.versus["kd"] and "kd" not in by_kd.shares["kd"]
    assert by_kd.versus["kd"]["teacher"]["acc"].mean == pytest.approx((0.02 + 0.04 + 0.03) / 3)
    lacking = _report(tmp_path, "s3", {"single": 0.8, "teacher": 0.9, "kd": 0.85})
    for name, why in (("control:x", "not in"), ("single", "it is the reference already")):
        assert main(["aggregate", *map(str, [*runs, lacking]), "--against", name]) == 2
        err = capsys.readouterr().err
        assert f"--against {name}: {why}" in err and err.count("\n") == 1


def test_seed_table_gives_each_student_its_own_column(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import seed_table

    def cell(v, lo, hi):
        return {"value": v, "ci": [lo, hi]}

    def report(shares: dict) -> dict:
        teacher = {"acc": {"diff": 0.04, "ci": [0.03, 0.05]}, "cnll": {"diff": -0.13, "ci": [-0.14, -0.12]}}
        return {"intervals": {"versus": {"single": {"teacher": teacher}}, "shares": {"single": shares}}}

    both = {"kd": {"acc": cell(0.8, 0.7, 0.9), "cnll": cell(0.75, 0.7, 0.8)}, "be4": {"acc": cell(1.0, 0.9, 1.2)}}
    paths = []
    for seed, shares in (("s0", both), ("s1", {"kd": both["kd"]})):
        (tmp_path / seed).mkdir()
        paths.append(tmp_path / seed / "report.json")
        paths[-1].write_text(json.dumps(report(shares)))
    lines = seed_table.table(paths, ["acc", "cnll"])
    assert lines[0].count("|") == lines[2].count("|") == lines[3].count("|") == 7  # 6 columns on every row
    assert "kd's share (acc, cnll)" in lines[0] and "be4's share (acc, cnll)" in lines[0]
    assert lines[2].endswith("| 80% [70%, 90%], 75% [70%, 80%] | 100% [90%, 120%], - |")
    assert lines[3].endswith("| 80% [70%, 90%], 75% [70%, 80%] | - |")  # s1 has no be4: a dash, not a shifted cell


def test_headline_table_quotes_the_aggregate(tmp_path, capsys):
    """experiments/headline_table.py (the README's and docs' headline tables) prints distill aggregate's JSON: the
    models' mean ± std, every difference against single, self_kd and kd, and the shares, each by hand."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import headline_table

    accs = [
        {"single": 0.80, "control:self_kd": 0.83, "teacher": 0.90, "kd": 0.85, "be4": 0.86},
        {"single": 0.82, "control:self_kd": 0.84, "teacher": 0.90, "kd": 0.88, "be4": 0.87},
        {"single": 0.81, "control:self_kd": 0.82, "teacher": 0.92, "kd": 0.86, "be4": 0.88},
    ]
    runs = [_report(tmp_path, f"s{i}", acc) for i, acc in enumerate(accs)]
    gap = tmp_path / "gap.json"
    argv = ["aggregate", *map(str, runs), "--against", "control:self_kd", "--against", "kd", "--json", str(gap)]
    assert main(argv) == 0
    capsys.readouterr()
    text = headline_table.render(json.loads(gap.read_text()))
    assert "| kd | 0.863 ± 0.015 |" in text and "| control:self_kd | 0.830 ± 0.010 |" in text
    d = [0.01, -0.01, 0.02]  # be4 - kd per run
    sd = math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    half = T975_DF2 * sd / math.sqrt(3)
    assert f"| be4 - kd | {sum(d) / 3:+.3f} [{sum(d) / 3 - half:+.3f}, {sum(d) / 3 + half:+.3f}] |" in text
    mde = (T975_DF2 + 1.0606601717798212) * sd / math.sqrt(3)  # + t(80%, 2 df): the MDE80 table's first cell
    assert f"| be4 - kd | {mde:.3f} |" in text
    assert "| teacher - self_kd | +0.077 [" in text and "| kd - kd" not in text
    kd_share = (0.05 + 0.06 + 0.05) / (0.10 + 0.08 + 0.11)
    assert f"| kd | {kd_share:.0%} [" in text
    assert headline_table.students(json.loads(gap.read_text())) == ["kd", "be4"]


def test_headline_table_nam_layout_differences_against_be4_kd(tmp_path, capsys):
    """The nam study's layout: NLL among the columns and the shares, differences against be4_kd (not self_kd or kd,
    which that study has not), each difference by hand."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import headline_table

    accs = [
        {"single": 0.50, "teacher": 0.54, "be4_kd": 0.52, "be4_ods": 0.53},
        {"single": 0.49, "teacher": 0.53, "be4_kd": 0.52, "be4_ods": 0.51},
        {"single": 0.50, "teacher": 0.55, "be4_kd": 0.51, "be4_ods": 0.52},
    ]
    runs = [_report(tmp_path, f"s{i}", acc) for i, acc in enumerate(accs)]
    gap = tmp_path / "gap.json"
    assert main(["aggregate", *map(str, runs), "--against", "be4_kd", "--json", str(gap)]) == 0
    capsys.readouterr()
    text = headline_table.render(json.loads(gap.read_text()), "nam")
    assert "| model | acc | NLL | cNLL | OOD AUROC (declared) |" in text
    assert "| student | acc, over single | NLL, over single | cNLL, over single |" in text
    d = [0.01, -0.01, 0.01]  # be4_ods - be4_kd per run
    sd = math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    half = T975_DF2 * sd / math.sqrt(3)
    mean = sum(d) / 3
    assert f"| be4_ods - be4_kd | {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] |" in text
    assert "self_kd" not in text and "| be4_kd - be4_kd" not in text


def test_sdde_headline_by_hand():
    """experiments/sdde_vs_de.headline (docs/results.md section 3 quotes it): each arm's mean ± std, each pair's paired
    difference [95% t] and MDE80, OOD in points, one OOD table per declared score."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import sdde_vs_de

    def arm(acc: float, auroc: float) -> dict[str, float]:
        ood = {f"ood/heldout/{s}/{k}": auroc for s in ("msp", "neg_mi") for k in ("auroc", "fpr95")}
        far = {f"far/{s}/{k}": auroc for s in ("msp", "neg_mi") for k in ("auroc", "fpr95")}
        return {"acc": acc, "cnll": 1 - acc, **ood, **far}

    seeds = {
        "s0": {"de": arm(0.70, 0.60), "sdde_eval": arm(0.71, 0.62)},
        "s1": {"de": arm(0.72, 0.61), "sdde_eval": arm(0.71, 0.61)},
        "s2": {"de": arm(0.71, 0.62), "sdde_eval": arm(0.73, 0.65)},
    }
    _, data = sdde_vs_de.render(seeds, ["de", "sdde_eval"])
    text = sdde_vs_de.headline(data)
    assert "| de | 0.710 ± 0.010 | 0.290 ± 0.010 | - | - | - |" in text  # no cECE / CAM / disagreement: dashes
    d = [0.01, -0.01, 0.02]
    mean, sd = sum(d) / 3, math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    half = T975_DF2 * sd / math.sqrt(3)
    assert f"| sdde_eval - de | {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] |" in text
    t80 = 1.0606601717798212  # Student t, 80% quantile, 2 degrees of freedom
    assert f"| MDE80 | {(T975_DF2 + t80) * sd / math.sqrt(3):.3f} |" in text
    assert "OOD by msp" in text and "OOD by neg_mi" in text
    assert "| de | 61.0 ± 1.0 | 61.0 ± 1.0 | 61.0 ± 1.0 | 61.0 ± 1.0 |" in text  # points, one decimal
    d_pts = [2.0, 0.0, 3.0]
    m = sum(d_pts) / 3
    assert f"| sdde_eval - de | {m:+.2f} [" in text
