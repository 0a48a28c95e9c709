"""Design-diversity study: correlations, analyze_diversity end to end on tiny runs, the population recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from distill import UserError
from distill.analysis.correlation import correlate, fisher_interval, within
from distill.analysis.design import MEASURES, TARGETS, _names, design_means
from distill.analysis.population import main as population_main
from distill.analysis.population import population_runs, read_population, train_population
from distill.recipe import load_recipe, recipe_from_dict
from distill.train import train_ensemble

ROOT = Path(__file__).resolve().parents[1]
POPULATION = ROOT / "recipes" / "analysis_population_digits.yaml"


def tiny(objective: dict, arch="tiny_cnn", seed: int = 1) -> dict:
    return {
        "seed": seed,
        "data": {"name": "digits", "limit_train": 192},
        "teacher": {
            "arch": arch,
            "members": 2,
            "objective": objective,
            "train": {"epochs": 1, "batch_size": 32, "optim": {"lr": 0.1}},
        },
        "run": {"progress": False},
    }


def test_correlate_matches_numpy_and_handles_degenerate_input():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0]
    c = correlate(x, y)
    assert c["n"] == 5 and c["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert c["spearman"] == pytest.approx(0.8)  # ranks [1..5] vs [2, 1, 4, 3, 5]: 1 - 6*4/(5*24)
    assert 0 < c["pearson_p"] < 1
    assert correlate([1, 2, 3, float("nan")], [3, 2, 1, 0])["spearman"] == pytest.approx(-1.0)
    assert math.isnan(correlate([1, 1, 1], [1, 2, 3])["pearson"]) and math.isnan(correlate([1, 2], [2, 1])["pearson"])


def test_correlate_matches_scipy_and_gives_a_fisher_interval():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    c = correlate(list(x), list(y))
    assert c["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue, rel=1e-6)
    assert c["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue, rel=1e-6)
    # Fisher: tanh(atanh(r) +/- 1.96 / sqrt(n - 3))
    h = 1.959964 / math.sqrt(12 - 3)
    assert c["pearson_lo"] == pytest.approx(math.tanh(math.atanh(c["pearson"]) - h), abs=1e-5)
    assert c["pearson_hi"] == pytest.approx(math.tanh(math.atanh(c["pearson"]) + h), abs=1e-5)
    assert c["pearson_lo"] < c["pearson"] < c["pearson_hi"]
    # degrees of freedom spent on design means widen the interval and raise the p-value
    d = correlate(list(x), list(y), removed=3)
    assert d["pearson"] == c["pearson"] and d["pearson_hi"] - d["pearson_lo"] > c["pearson_hi"] - c["pearson_lo"]
    assert d["pearson_p"] > c["pearson_p"]
    assert math.isnan(correlate([1, 2, 3, 4], [1, 3, 2, 4], removed=2)["pearson"])  # 4 - 2 < 3 pairs left
    assert all(math.isnan(v) for v in fisher_interval(0.5, 0))


def test_within_design_correlation_separates_designs_from_seeds():
    # Simpson: across designs diversity and resilience rise together, within each design they fall together
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    base = {"a": 0.0, "b": 1.0, "c": 2.0}
    jitter = [-0.15, -0.05, 0.05, 0.15]
    div = [base[g] + j for g, j in zip(groups, jitter * 3)]
    res = [base[g] - 2 * j for g, j in zip(groups, jitter * 3)]
    assert correlate(div, res)["pearson"] > 0.8
    w = correlate(within(div, groups), within(res, groups), removed=2)
    assert w["pearson"] == pytest.approx(-1.0) and w["n"] == 12
    assert within([1.0, 3.0, float("nan"), 10.0], ["a", "a", "a", "b"])[:2] == [-1.0, 1.0]
    rows = [{"acc": v} for v in res]
    means = design_means(rows, groups)
    assert list(means) == ["a", "b", "c"] and means["b"]["runs"] == 4
    assert means["b"]["acc"]["mean"] == pytest.approx(1.0) and means["a"]["disagreement"]["mean"] is None


def test_default_names_are_the_shortest_distinct_path_suffix(tmp_path):
    dirs = [tmp_path / s / arm / "teacher" for s in ("s0", "s1") for arm in ("de", "sdde")]
    assert _names(dirs, None) == ["s0/de/teacher", "s0/sdde/teacher", "s1/de/teacher", "s1/sdde/teacher"]
    assert _names([tmp_path / "a", tmp_path / "b"], None) == ["a", "b"]
    with pytest.raises(UserError, match="twice"):
        _names([tmp_path / "a", tmp_path / "a"], None)


def test_analyze_diversity_end_to_end(tmp_path):
    from distill.analysis import analyze_diversity

    runs = {
        "de": tiny({"name": "de", "same_batch": False}),
        "ncl": tiny({"name": "ncl", "lam": 0.5}, seed=2),
        "hetero": tiny({"name": "balanced", "lam": 0.5}, arch=["tiny_cnn", "small_cnn"], seed=3),
    }
    dirs = []
    for name, tree in runs.items():
        train_ensemble(recipe_from_dict(tree), tmp_path / name)
        dirs.append(tmp_path / name)
    res = analyze_diversity(
        dirs,
        tmp_path / "D",
        diversity_images=48,
        corruptions=["gaussian_noise", "brightness"],
        severities=[1, 4],
        corruption_limit=48,
        device="cpu",
        groups=["independent", "coupled", "coupled"],
    )
    for name in ("diversity.json", "diversity.md", *(f"scatter_{t}.png" for t in TARGETS)):
        assert (tmp_path / "D" / name).is_file(), name
    saved = json.loads((tmp_path / "D" / "diversity.json").read_text())
    assert [r["name"] for r in saved["runs"]] == ["de", "ncl", "hetero"]
    for r in res["runs"]:
        assert set(MEASURES) <= set(r) and set(TARGETS) <= set(r)
        assert r["corrupt_drop"] == pytest.approx(r["corrupt_clean_acc"] - r["corrupt_acc"])
        assert set(r["corrupt_severity_acc"]) == {"1", "4"}
        assert 0 <= r["disagreement"] <= 1 and -1 <= r["grad_cosine"] <= 1 and 0 <= r["iou_top"] <= 1
    assert res["runs"][2]["archs"] == ["tiny_cnn", "small_cnn"]
    assert saved["correlation"]["disagreement"]["acc"]["n"] == 3
    md = (tmp_path / "D" / "diversity.md").read_text()
    assert "| hetero |" in md and "Pearson r [95% Fisher-z] / Spearman rho" in md
    assert [r["design"] for r in saved["runs"]] == ["independent", "coupled", "coupled"]
    assert saved["designs"]["coupled"]["runs"] == 2 and "## Per design" in md and "## Within designs" in md
    # 3 runs less 1 design mean spent: too few pairs for a within-design correlation, so none is claimed
    assert saved["correlation_within_designs"]["disagreement"]["acc"]["pearson"] is None
    with pytest.raises(UserError, match="groups"):
        analyze_diversity(dirs, tmp_path / "F", groups=["a"])
    with pytest.raises(UserError, match="names"):
        analyze_diversity(dirs, tmp_path / "E", names=["a", "a", "b"])


def test_population_recipe_is_a_recipe_and_lists_every_variant(capsys):
    base = load_recipe(POPULATION)
    assert base.teacher is not None and base.teacher.objective["name"] == "de"
    pop = read_population(POPULATION)
    assert {"de", "hetero", "ncl_0.5"} <= set(pop["variants"])
    assert sum(n.startswith("sdde") for n in pop["variants"]) >= 2
    assert sum(n.startswith("balanced") for n in pop["variants"]) >= 2
    runs = population_runs(POPULATION, "runs/pop", seeds=[3])
    assert len(runs) == len(pop["variants"]) and all(r.seed == 3 and r.out.name == "seed3" for r in runs)
    hetero = next(r for r in runs if r.name == "hetero")
    assert load_recipe(POPULATION, hetero.overrides).teacher.arch == ["small_cnn", "small_cnn", "tiny_cnn", "tiny_cnn"]
    assert population_main([str(POPULATION), "--out", "runs/pop", "--print", "--only", "de", "ncl_0.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(pop["seeds"]) * 2 and all(line.startswith("python -m distill teacher") for line in lines)


def test_population_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(POPULATION.read_text().replace("ncl_0.5: {teacher.objective:", "ncl_0.5: {teacher.objectiv:"))
    with pytest.raises(UserError, match="objectiv"):
        population_runs(bad, tmp_path)
    with pytest.raises(UserError, match="no such variant"):
        population_runs(POPULATION, tmp_path, only=["nope"])
    plain = tmp_path / "plain.yaml"
    plain.write_text("teacher: {arch: tiny_cnn}\n")
    with pytest.raises(UserError, match="x-population"):
        read_population(plain)


def test_train_population_trains_and_reuses(tmp_path):
    recipe = tmp_path / "pop.yaml"
    recipe.write_text(
        "data: {name: digits, limit_train: 96}\n"
        "teacher: {arch: tiny_cnn, members: 2, train: {epochs: 1, batch_size: 32}}\n"
        "run: {progress: false}\n"
        "x-population:\n  seeds: [0]\n  variants:\n    de: {}\n    ncl: {teacher.objective: {name: ncl, lam: 1.0}}\n"
    )
    dirs = train_population(recipe, tmp_path / "out")
    assert [d.relative_to(tmp_path / "out").as_posix() for d in dirs] == ["de/seed0", "ncl/seed0"]
    assert json.loads((dirs[1] / "model.json").read_text())["objective"] == {"name": "ncl", "lam": 1.0}
    before = (dirs[0] / "model.safetensors").stat().st_mtime_ns
    train_population(recipe, tmp_path / "out")  # finished runs are reused, not retrained
    assert (dirs[0] / "model.safetensors").stat().st_mtime_ns == before


def test_attribution_similarity_does_not_depend_on_the_batch_size(digits, tiny_ensemble):
    from distill.analysis.design import attribution_and_activation

    x, y = digits.test_x[:20], digits.test_y[:20]
    one = attribution_and_activation(tiny_ensemble, x, y, "cpu", batch_size=20)
    many = attribution_and_activation(tiny_ensemble, x, y, "cpu", batch_size=6)
    keys = {"grad_cosine", "saliency_cosine", "iou_top", "cam_feature_cka", "cam_similarity"}
    assert one.keys() == many.keys() == keys
    for k in one:
        assert many[k] == pytest.approx(one[k], rel=1e-4, abs=1e-6), k
