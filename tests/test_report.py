"""The gap report: every model and metric in report.json, the gain share by hand, report.md, the figures, notes
for missing OOD data, and refusing runs trained on other data."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DIGITS_TRAIN, digits_recipe

from distill import UserError
from distill.recipe import CostCfg, EvalCfg, OODSetCfg, recipe_from_dict
from distill.report import evaluate_runs, format_gap_table, gain_share
from distill.report.evaluate import METRICS
from distill.report.gain import gain_table, teacher_gain
from distill.report.members import mean_std
from distill.report.ood import DETECTION
from distill.report.perturbation import STATS, perturbation_summary
from distill.train import train_student

STUDENTS = ("confods", "be")
MODELS = ("members", "single", "teacher", *STUDENTS)
FIGURES = ("gap", "reliability", "ood_histograms", "corruption", "cam_grid", "perturbation")
SCORES = ["msp", "max_logit", "neg_entropy", "neg_mi"]


def _recipe() -> dict:
    student = {"arch": "tiny_cnn", "train": DIGITS_TRAIN}
    return digits_recipe(
        students=[
            {**student, "name": "confods", "perturb": {"name": "confods"}},
            {**student, "name": "be", "kind": "batchensemble", "perturb": {"name": "gaussian"}},
        ]
    )


CFG = EvalCfg(
    ood=[OODSetCfg("heldout", group="near"), OODSetCfg("mnist", root="/nonexistent/mnist", group="far")],
    ood_scores=SCORES,
    corruptions=["gaussian_noise", "contrast"],
    severities=[1, 5],
    corruption_limit=100,
    cam_images=4,
    diversity_images=64,
    batch_size=256,
    cost=CostCfg(enabled=False),  # the cost table and its ONNX export: tests/test_student_kinds.py
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_runs) -> Path:
    """The session's shared teacher and single network (conftest.py), and this file's two students of it."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("report_runs")
    recipe = recipe_from_dict(_recipe())
    for name in ("teacher", "single"):
        shutil.copytree(digits_runs / name, root / name)
    for name in STUDENTS:
        train_student(recipe, root / "teacher", root / name, name=name)
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    rep = evaluate_runs(runs / "teacher", [runs / s for s in STUDENTS], runs / "single", out, CFG)
    return rep, out


def _strict_json(path: Path) -> dict:
    def no_nan(c: str) -> None:
        raise AssertionError(f"report.json holds {c}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def test_report_json_has_every_model_and_metric(report):
    rep, out = report
    data = _strict_json(out / "report.json")
    assert data == rep
    assert list(data["models"]) == list(MODELS)
    assert data["reference"] == "single"
    assert data["corruptions"]["seed"] == 0 and data["corruptions"]["frost"] is None  # frost not swept
    sevs = ["0", "1", "5"]
    for key in MODELS:
        e = data["models"][key]
        assert set(METRICS) <= set(e["metrics"]), key
        assert all(e["metrics"][k] is not None for k in METRICS), key
        for score in SCORES:
            cell = e["ood"]["sets"]["heldout"][score]
            if score == "neg_mi" and (e["size"] == 1 or key == "members"):  # each member is one network
                assert cell is None, (key, score)
            else:
                assert set(cell) == set(DETECTION) and 0 <= cell["auroc"] <= 1, (key, score)
        assert e["ood"]["groups"]["far"]["msp"] is None and e["ood"]["groups"]["near"]["msp"] is not None
        # the declared score (msp for one network, the members' MI for several), whatever did best on test
        declared = "msp" if e["size"] == 1 or key == "members" else "neg_mi"
        assert e["ood"]["primary"] == {"score": declared, "auroc": e["ood"]["mean"][declared]["auroc"]}, key
        assert data["summary"][key]["ood_auroc/primary"] == e["ood"]["primary"]["auroc"]
        assert list(e["corruption"]["severity"]) == sevs
        assert set(e["corruption"]["corruptions"]) == {"gaussian_noise", "contrast"}
        assert set(data["summary"][key]) >= {"acc", "cnll", "dee", "ood_auroc/primary", "corruption_acc/s5"}
    members, teacher = data["models"]["members"], data["models"]["teacher"]
    per = [m["acc"] for m in members["per_member"]]
    assert members["metrics"]["acc"] == pytest.approx(sum(per) / 2)
    assert members["std"]["metrics"]["acc"] == pytest.approx(abs(per[0] - per[1]) / 2**0.5)
    assert teacher["metrics"]["agreement"] == 1.0 and teacher["metrics"]["kl_teacher"] == pytest.approx(0, abs=1e-9)
    assert teacher["metrics"]["dee"] == pytest.approx(2.0)  # the full ensemble is its own curve's end
    assert len(data["dee_curve"]) == 2
    for key in ("teacher", "be"):  # multi-member models get the diversity measures
        div = data["models"][key]["diversity"]
        assert set(div["prediction"]) >= {"disagreement", "mutual_information", "q_statistic"}
        assert div["cka"] is not None and div["attribution"]["cosine"] is not None
    assert data["models"]["teacher"]["diversity"]["cam_similarity"] is not None
    assert data["models"]["be"]["diversity"]["cam_similarity"] is None  # BatchEnsemble: skipped, with a note
    assert any("be:" in n and "Grad-CAM" in n for n in data["notes"])
    assert data["models"]["single"]["diversity"] is None and data["models"]["confods"]["diversity"] is None
    for s in STUDENTS:
        assert set(data["models"][s]["perturbation"]) >= set(STATS)
        assert set(data["gain_share"][s]) == set(data["summary"]["teacher"])
        assert data["gain_share"][s]["ood_auroc/neg_mi"] is None  # no single-model value
    assert data["models"]["teacher"]["perturbation"] is None


def test_report_numbers_by_hand_from_each_models_predictions(runs, report):
    """The numbers of test_report_json_has_every_model_and_metric, recomputed here in numpy from each model's own
    test logits: acc, NLL and Brier, the agreement with the teacher, the heldout MSP AUROC, and the gain shares
    from the summary rows (tests/test_report_known.py checks every metric against fixed logits)."""
    from distill.checkpoint import load_model
    from distill.data import load_splits

    rep, _ = report
    splits = load_splits(recipe_from_dict(_recipe()).data)
    y = splits.test_y.numpy()

    def probs(run: str, x: torch.Tensor) -> np.ndarray:
        model, _ = load_model(runs / run)
        with torch.no_grad():
            logits = model.eval()(x.float() / 255)[0]  # (M, N, K)
        return logits.double().softmax(-1).mean(0).numpy()

    teacher = probs("teacher", splits.test_x)
    for key in ("single", "teacher", *STUDENTS):
        p, p_out = probs(key, splits.test_x), probs(key, splits.heldout_x)
        got = rep["models"][key]["metrics"]
        assert got["acc"] == pytest.approx(np.mean(p.argmax(1) == y), abs=1e-12), key
        assert got["nll"] == pytest.approx(-np.mean(np.log(p[np.arange(len(y)), y])), rel=1e-5), key
        assert got["brier"] == pytest.approx(np.mean(((p - np.eye(p.shape[1])[y]) ** 2).sum(1)), rel=1e-5), key
        assert got["agreement"] == pytest.approx(np.mean(p.argmax(1) == teacher.argmax(1)), abs=1e-12), key
        s_in, s_out = p.max(1), p_out.max(1)  # MSP; in-distribution is the positive class
        auroc = np.mean((s_in[:, None] > s_out[None]) + 0.5 * (s_in[:, None] == s_out[None]))
        # 1e-3: a float32 tie broken the other way moves one pair of ~25,000
        assert rep["models"][key]["ood"]["sets"]["heldout"]["msp"]["auroc"] == pytest.approx(auroc, abs=1e-3), key
    rows, ref = rep["summary"], rep["reference"]
    for s in STUDENTS:
        for metric, higher in (("acc", True), ("nll", False), ("cnll", False), ("brier", False)):
            t, b, v = rows["teacher"][metric], rows[ref][metric], rows[s][metric]
            share = rep["gain_share"][s][metric]
            if (t - b) * (1 if higher else -1) <= 1e-6:
                assert share is None, (s, metric)  # the teacher gains nothing over the single network here
            elif share is not None:  # (None where the bootstrap finds the teacher's gain within noise)
                assert share == pytest.approx((v - b) / (t - b), rel=1e-9), (s, metric)


def test_gain_share_by_hand():
    assert gain_share(0.95, 0.90, 1.00) == pytest.approx(0.5)  # higher is better: half the gain kept
    assert gain_share(0.30, 0.40, 0.20) == pytest.approx(0.5)  # lower is better: the same formula
    assert gain_share(0.20, 0.40, 0.20) == pytest.approx(1.0)
    assert gain_share(0.40, 0.40, 0.20) == pytest.approx(0.0)
    assert gain_share(0.50, 0.40, 0.20) == pytest.approx(-0.5)  # worse than the single model
    assert gain_share(0.9, 0.8, 0.8) is None  # the teacher gains nothing
    assert gain_share(0.9, 0.8, 0.8 + 1e-9) is None  # ... or ~nothing
    assert gain_share(None, 0.8, 0.9) is None and gain_share(0.9, float("nan"), 0.8) is None
    # A teacher worse than the single model has no gain to keep: without the direction the ratio would read a
    # student worse than both as "more than the whole gain" (MNIST, 12-epoch single vs 6-epoch teacher).
    assert gain_share(0.966, 0.980, 0.970) == pytest.approx(1.4)
    assert gain_share(0.966, 0.980, 0.970, higher_is_better=True) is None
    assert gain_share(0.21, 0.09, 0.20, higher_is_better=False) is None
    assert gain_share(0.95, 0.90, 1.00, higher_is_better=True) == pytest.approx(0.5)
    assert gain_share(0.30, 0.40, 0.20, higher_is_better=False) == pytest.approx(0.5)
    summary = {
        "teacher": {"acc": 0.9, "nll": 0.2, "neg_mi": 0.8},
        "single": {"acc": 0.8, "nll": 0.4, "neg_mi": None},
        "s": {"acc": 0.88, "nll": 0.25, "neg_mi": 0.7},
    }
    shares = gain_table(summary, "single", ["s"])["s"]
    assert shares["acc"] == pytest.approx(0.8) and shares["nll"] == pytest.approx(0.75) and shares["neg_mi"] is None
    worse_teacher = {**summary, "teacher": {"acc": 0.79, "nll": 0.5, "neg_mi": 0.8}}
    assert gain_table(worse_teacher, "single", ["s"])["s"] == {"acc": None, "nll": None, "neg_mi": None}
    assert teacher_gain(summary, "single") == pytest.approx({"acc": 0.1, "nll": 0.2, "neg_mi": None})


def test_members_mean_std_by_hand():
    mean, std = mean_std(
        [{"a": 1.0, "b": {"c": 2.0, "f": True}, "n": None}, {"a": 3.0, "b": {"c": 2.0, "f": False}, "n": 1.0}]
    )
    assert mean == {"a": 2.0, "b": {"c": 2.0, "f": True}, "n": None}
    assert std["a"] == pytest.approx(2**0.5) and std["b"]["c"] == 0.0 and std["n"] is None


def test_perturbation_summary_means_over_epochs():
    hist = [
        {"perturb/mi_clean": 0.1, "perturb/mi_perturbed": 0.3},
        {"perturb/mi_clean": 0.3, "perturb/mi_perturbed": 0.5},
    ]
    s = perturbation_summary({"history": hist})
    assert s["mi_clean"] == pytest.approx(0.2) and s["mi_perturbed"] == pytest.approx(0.4) and s["delta_rms"] is None
    assert perturbation_summary({"history": [{"loss": 1.0}]}) is None and perturbation_summary(None) is None


def test_markdown_mentions_every_model_and_figure(report):
    rep, out = report
    md = (out / "report.md").read_text()
    for key in ("members (mean ± std of 2)", "single", "teacher", *STUDENTS):
        assert f"| {key} |" in md, key
    for f in FIGURES:
        assert f"]({f}.png)" in md
    assert "POSITIVE" in md and "validation" in md and "floors at 1" in md
    assert "'mnist' skipped" in md


def test_every_figure_is_a_nonempty_png(report):
    rep, out = report
    assert rep["figures"] == {f: f"{f}.png" for f in FIGURES}
    for f in FIGURES:
        data = (out / f"{f}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, f


def test_missing_ood_root_is_a_note_not_a_crash(report):
    rep, _ = report
    assert [s["name"] for s in rep["ood_sets"]] == ["heldout"]
    assert any("'mnist' skipped" in n and "/nonexistent/mnist" in n for n in rep["notes"])


def test_gap_table_has_a_row_per_model(report):
    rep, _ = report
    text = format_gap_table(rep)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["model", "acc", "NLL", "cNLL"] and "OOD AUROC" in lines[0] and "acc@s5" in lines[0]
    for key in ("members (2)", "single", "teacher", *STUDENTS):
        assert any(line.startswith(key) for line in lines), key
    assert "±" in lines[1] and "share of the teacher's gain kept" in text


def test_student_on_other_data_is_refused(runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs / "confods", bad)
    info = json.loads((bad / "model.json").read_text())
    info["recipe"]["data"]["split_seed"] = 7
    (bad / "model.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"other data than the teacher: data.split_seed 7 vs 0"):
        evaluate_runs(runs / "teacher", [bad], None, tmp_path / "out", CFG)
    info["recipe"]["data"]["split_seed"] = 0
    info["meta"]["num_classes"] = 10
    (bad / "model.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"--single .*meta.num_classes 10 vs 8"):
        evaluate_runs(runs / "teacher", [], bad, tmp_path / "out", CFG)
    assert not (tmp_path / "out").exists()


def test_without_single_the_mean_member_is_the_baseline(runs, tmp_path):
    cfg = EvalCfg(
        ood=[], ood_scores=["msp"], corruptions=[], cam_images=2, diversity_images=32, cost=CostCfg(enabled=False)
    )
    rep = evaluate_runs(runs / "teacher", [runs / "confods"], None, tmp_path, cfg)
    assert rep["reference"] == "members" and list(rep["models"]) == ["members", "teacher", "confods"]
    assert any("mean member is the single-model baseline" in n for n in rep["notes"])
    assert any("held-out classes" in n for n in rep["notes"])  # no OOD set given: heldout used
    assert rep["corruptions"]["names"] == [] and rep["models"]["teacher"]["corruption"] is None
    assert rep["figures"]["corruption"] is None and (tmp_path / "reliability.png").stat().st_size > 0
    s = rep["summary"]
    expected = (s["confods"]["cnll"] - s["members"]["cnll"]) / (s["teacher"]["cnll"] - s["members"]["cnll"])
    gain = rep["intervals"]["versus"]["members"]["teacher"]["cnll"]
    if gain["verdict"] == "better":
        assert rep["gain_share"]["confods"]["cnll"] == pytest.approx(expected)
    else:  # a share of a gain this test set cannot tell from 0 is no number (it was -2128% here)
        assert rep["gain_share"]["confods"]["cnll"] is None
        assert "within noise" in rep["intervals"]["shares"]["members"]["confods"]["cnll"]["reason"]
    assert "teacher's mean member" in format_gap_table(rep)
    # without the bootstrap, the point share is the hand formula, and the verdict says it has no intervals
    points = evaluate_runs(runs / "teacher", [runs / "confods"], None, tmp_path / "p", replace(cfg, bootstrap=0))
    assert points["intervals"] is None
    assert points["gain_share"]["confods"]["cnll"] == pytest.approx(expected)
    assert "no intervals" in format_gap_table(points)


def test_frost_from_the_users_photos_is_named_in_the_report(runs, tmp_path):
    from PIL import Image

    from distill.data.corruptions import FROST_FILES

    photos = tmp_path / "frost"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for f in FROST_FILES:  # PNG data under every name: PIL reads by content
        Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(photos / f, format="PNG")
    cfg = EvalCfg(
        ood=[],
        ood_scores=["msp"],
        corruptions=["frost"],
        severities=[2],
        corruption_limit=16,
        corruption_seed=3,
        frost_images=str(photos),
        cam_images=2,
        diversity_images=32,
        cost=CostCfg(enabled=False),
    )
    rep = evaluate_runs(runs / "teacher", [], None, tmp_path / "out", cfg)
    assert rep["corruptions"]["seed"] == 3
    assert rep["corruptions"]["frost"] == f"CIFAR-10-C's frost photos from {photos}, cropped as the original does"
    assert f"Frost: CIFAR-10-C's frost photos from {photos}" in (tmp_path / "out" / "report.md").read_text()
    (photos / "frost5.jpg").unlink()
    with pytest.raises(UserError, match="lacks frost5.jpg"):
        evaluate_runs(runs / "teacher", [], None, tmp_path / "out2", cfg)
    assert not (tmp_path / "out2").exists()


def _layout(model: torch.nn.Module) -> str:
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs
    cl = [p.is_contiguous(memory_format=torch.channels_last) for p in convs]
    plain = [p.is_contiguous() for p in convs]  # a 1x1 kernel is both
    if all(cl) and not all(plain):
        return "channels_last"
    return "contiguous" if all(plain) and not all(cl) else "mixed"


def test_report_predicts_in_the_recipes_layout_and_times_the_contiguous_module(runs, tmp_path, monkeypatch):
    import distill.report.cost as cost
    import distill.report.predictions as predictions
    from distill.recipe import CostCfg

    cl = tmp_path / "teacher_cl"  # the same teacher, its recipe now saying run.channels_last
    shutil.copytree(runs / "teacher", cl)
    info = json.loads((cl / "model.json").read_text())
    info["recipe"]["run"]["channels_last"] = True
    (cl / "model.json").write_text(json.dumps(info))
    predicted, timed = [], []
    real_predict, real_deployable = predictions.predict_logits, cost.UncertaintyDeployable

    def spy_predict(model, *args, **kwargs):
        predicted.append(_layout(model))
        return real_predict(model, *args, **kwargs)

    def spy_deployable(model, spec):
        timed.append(_layout(model))
        return real_deployable(model, spec)

    monkeypatch.setattr(predictions, "predict_logits", spy_predict)
    monkeypatch.setattr(cost, "UncertaintyDeployable", spy_deployable)
    cfg = EvalCfg(
        ood=[],
        ood_scores=["msp"],
        corruptions=["contrast"],
        severities=[3],
        corruption_limit=64,
        cam_images=2,
        diversity_images=32,
        cost=CostCfg(reps=1, warmup=0, batches=[1], onnx=False),
    )
    plain = evaluate_runs(runs / "teacher", [runs / "confods"], runs / "single", tmp_path / "plain", cfg)
    assert set(predicted) == {"contiguous"} and set(timed) == {"contiguous"}
    predicted.clear(), timed.clear()
    fast = evaluate_runs(cl, [runs / "confods"], runs / "single", tmp_path / "cl", cfg)
    assert set(predicted) == {"channels_last"} and len(predicted) >= 3 * 3  # 3 models x (val, test, corrupted)
    assert set(timed) == {"contiguous"} and len(timed) == 3
    for model, row in plain["summary"].items():
        for metric, value in row.items():
            if isinstance(value, float):
                assert fast["summary"][model][metric] == pytest.approx(value, abs=1e-5), (model, metric)


def test_report_intervals_pair_the_models(report):
    """report.json's paired bootstrap: differences equal the summary rows', every interval holds its point, and a
    share the bootstrap refuses is None in the gain table too."""
    rep, _ = report
    iv, summary = rep["intervals"], rep["summary"]
    assert iv["resamples"] == CFG.bootstrap and iv["confidence"] == 0.95
    assert {"acc", "nll", "cnll", "brier", "ood_auroc/primary", "corruption_acc/s5"} <= set(iv["metrics"])
    for model, rows in iv["versus"]["single"].items():
        for k, c in rows.items():
            assert c["diff"] == pytest.approx(summary[model][k] - summary["single"][k]), (model, k)
            assert c["ci"][0] <= c["diff"] + 1e-12 and c["diff"] <= c["ci"][1] + 1e-12, (model, k)
            assert c["verdict"] in ("better", "worse", "within_noise")
    for s in STUDENTS:
        for k, sh in iv["shares"]["single"][s].items():
            if sh["value"] is None:
                assert rep["gain_share"][s][k] is None and sh["reason"], (s, k)
            else:
                assert sh["value"] == pytest.approx(rep["gain_share"][s][k]), (s, k)
    assert "paired bootstrap" in format_gap_table(rep)
