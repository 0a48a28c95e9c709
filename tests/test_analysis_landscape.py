"""Loss-landscape analyses: the diversity-accuracy plane's curves, subspace samplers, BatchNorm recomputation,
the trajectory recorder and analyze_landscape end to end on a tiny run."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill import UserError
from distill.analysis.plane import (
    limit_position,
    lower_limit,
    min_disagreement,
    normalised,
    plane_point,
    upper_limit,
)
from distill.analysis.samplers import (
    DiagonalGaussian,
    DropoutSubspace,
    LowRankGaussian,
    RandomSubspace,
    WeightAverage,
    recompute_bn,
    set_flat_params,
)
from distill.analysis.trajectory import TrajectoryRecorder, flat_params, load_trajectory
from distill.checkpoint import load_tensors, read_model_info
from distill.data.base import DatasetMeta
from distill.models import build_model
from distill.models.ensemble import to_channels_last
from distill.recipe import recipe_from_dict
from distill.train import load_splits, train_ensemble


def tiny_recipe(epochs: int = 2, members: int = 2, objective: dict | None = None, arch="tiny_cnn", seed: int = 1):
    return recipe_from_dict(
        {
            "seed": seed,
            "data": {"name": "digits", "limit_train": 192, "crop_padding": 1},
            "teacher": {
                "arch": arch,
                "members": members,
                "objective": objective or {"name": "de", "same_batch": False},
                "train": {"epochs": epochs, "batch_size": 32, "optim": {"lr": 0.1}},
            },
            "run": {"progress": False},
        }
    )


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """A 2-epoch, 2-member tiny_cnn teacher with its trajectory (weights included), killed after epoch 1 and
    resumed, so the recorder's files must survive a resume."""
    recipe = tiny_recipe()
    out = tmp_path_factory.mktemp("landscape") / "teacher"
    splits = load_splits(recipe.data)
    rec = TrajectoryRecorder.from_splits(splits, images=100, record_weights=True)
    assert train_ensemble(recipe, out, stop_after=1, epoch_callbacks=[rec]) == {"stopped_after": 1}
    rec = TrajectoryRecorder.from_splits(splits, images=100, record_weights=True)
    train_ensemble(recipe, out, resume=True, epoch_callbacks=[rec])
    return out


# --- the diversity-accuracy plane -------------------------------------------------------------------------------


def test_limit_curves_at_known_points():
    c, a0 = 10, 0.8
    # a = a0: independent errors disagree when exactly one is right or both wrong on different labels
    assert upper_limit(a0, a0, c) == pytest.approx(2 * a0 * (1 - a0) + (1 - a0) ** 2 * (c - 2) / (c - 1))
    assert lower_limit(a0, a0, c) == pytest.approx(0.0)
    # every prediction changed: accuracy (1 - a0)/(C - 1), disagreement 1
    assert lower_limit((1 - a0) / (c - 1), a0, c) == pytest.approx(1.0)
    # chance: both curves meet at (C - 1)/C, i.e. 1 once divided by the error 1 - a
    for f in (upper_limit, lower_limit):
        assert f(1 / c, a0, c) == pytest.approx((c - 1) / c)
        assert normalised(f(1 / c, a0, c), 1 / c) == pytest.approx(1.0)
    # outside [(1 - a0)/(C - 1), a0] the random-change curve does not exist
    assert math.isnan(float(lower_limit(0.9, a0, c))) and math.isnan(float(lower_limit(0.0, a0, c)))
    # binary: two wrong answers always agree
    assert upper_limit(0.6, 0.7, 2) == pytest.approx(0.7 * 0.4 + 0.6 * 0.3)
    assert np.all(upper_limit(np.linspace(0.1, 0.8, 8), a0, c) >= min_disagreement(np.linspace(0.1, 0.8, 8), a0))


def test_limit_curves_match_simulated_functions():
    g = torch.Generator().manual_seed(0)
    n, c, a0 = 400_000, 10, 0.7

    def with_accuracy(y: torch.Tensor, acc: float) -> torch.Tensor:
        """Right with probability acc, else a uniformly drawn wrong class."""
        wrong = (y + torch.randint(1, c, y.shape, generator=g)) % c
        return torch.where(torch.rand(y.shape, generator=g) < acc, y, wrong)

    y = torch.randint(0, c, (n,), generator=g)
    ref = with_accuracy(y, a0)
    a0_hat = (ref == y).double().mean().item()
    # upper: errors independent of the reference's
    f = with_accuracy(y, 0.55)
    a, d = (f == y).double().mean().item(), (f != ref).double().mean().item()
    assert d == pytest.approx(float(upper_limit(a, a0_hat, c)), abs=3e-3)
    # lower: the reference with a random 30% of its predictions moved to another class
    moved = torch.rand(n, generator=g) < 0.3
    f = torch.where(moved, (ref + torch.randint(1, c, (n,), generator=g)) % c, ref)
    a, d = (f == y).double().mean().item(), (f != ref).double().mean().item()
    assert d == pytest.approx(float(lower_limit(a, a0_hat, c)), abs=3e-3)


def test_plane_point_by_hand():
    y = torch.tensor([0, 1, 2, 3])
    ref = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 4).float()
    f = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1]), 4).float()
    p = plane_point(f, ref, y)
    assert p["acc"] == 0.5 and p["disagreement"] == 0.5 and p["y"] == pytest.approx(1.0)
    # a0 = 3/4, C = 4: upper(1/2) = 7/12, lower(1/2) = 3/8 -> (1/2 - 3/8) / (7/12 - 3/8) = 0.6
    assert p["position"] == pytest.approx(0.6)


def test_limit_position_is_0_on_the_lower_curve_and_1_on_the_upper():
    a0, c, a = 0.9, 10, np.array([0.5, 0.7, 0.85])
    assert np.allclose(limit_position(lower_limit(a, a0, c), a, a0, c), 0.0)
    assert np.allclose(limit_position(upper_limit(a, a0, c), a, a0, c), 1.0)
    # above a0 the floor is the strict minimum |a - a0|
    assert float(limit_position(0.02, 0.92, a0, c)) == pytest.approx(0.0)


# --- samplers ---------------------------------------------------------------------------------------------------


def test_average_and_diagonal_gaussian_recover_the_trajectory_statistics():
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, -1.0], dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 2.0, 0.5, 0.01, 3.0], dtype=torch.float64)
    w = mu + sigma * torch.randn(4000, 6, generator=g, dtype=torch.float64)
    assert torch.allclose(WeightAverage(w).sample(3).double(), w.mean(0).float().double().expand(3, -1))
    d = DiagonalGaussian(w)
    assert torch.allclose(d.mean, mu, atol=float(4 * sigma.max() / math.sqrt(4000)))
    assert torch.allclose(d.std, sigma, rtol=0.05)
    s = d.sample(20000, g).double()
    assert torch.allclose(s.mean(0), mu, atol=0.1) and torch.allclose(s.std(0), sigma, rtol=0.05)


def test_low_rank_gaussian_recovers_principal_directions_and_spreads():
    g = torch.Generator().manual_seed(1)
    p, k = 40, 3000
    u, _ = torch.linalg.qr(torch.randn(p, 2, generator=g, dtype=torch.float64))  # orthonormal columns
    mu = torch.randn(p, generator=g, dtype=torch.float64)
    z = torch.randn(k, 2, generator=g, dtype=torch.float64)
    w = mu + (z * torch.tensor([3.0, 1.0], dtype=torch.float64)) @ u.T
    lr = LowRankGaussian(w, rank=5)
    assert lr.rank == 2  # two directions carry all the spread
    assert torch.allclose(lr.std, torch.tensor([3.0, 1.0], dtype=torch.float64), rtol=0.05)
    assert torch.allclose(lr.directions.norm(dim=1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose((lr.directions @ u).abs(), torch.eye(2, dtype=torch.float64), atol=0.05)
    s = lr.sample(20000, g).double() - mu
    coef = s @ u
    assert torch.allclose(coef.std(0), torch.tensor([3.0, 1.0], dtype=torch.float64), rtol=0.05)
    assert (s - coef @ u.T).abs().max() < 1e-5  # nothing outside the subspace
    assert LowRankGaussian(w[:4], rank=5).rank <= 3  # k centred checkpoints span k - 1 directions


def test_random_subspace_radius_and_acceptance():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(500, generator=g)
    rs = RandomSubspace(w, t_max=2.0, max_tries=4)
    s = rs.sample(50, g)
    dist = (s - w).norm(dim=1)
    assert (dist <= 2.0 + 1e-4).all() and (dist > 0).all()
    assert rs.direction(g).norm().item() == pytest.approx(1.0)
    kept, records = rs.draw(20, g, accept=lambda v: (v - w).norm().item() <= 0.5)
    assert len(kept) == sum(r["accepted"] for r in records)
    assert all((v - w).norm().item() <= 0.5 + 1e-5 for v in kept)
    assert all(r["t"] <= 0.5 + 1e-6 for r in records if r["accepted"])  # ||v - w|| = t: halved until accepted
    none, records = rs.draw(3, g, accept=lambda v: False)
    assert none == [] and all(not r["accepted"] and r["tries"] == 4 for r in records)


def test_dropout_subspace_statistics():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(100_000, generator=g)
    s = DropoutSubspace(w, p=0.2).sample(4, g)
    zero = s == 0
    assert zero.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert torch.allclose(s[~zero], (w.expand_as(s) / 0.8)[~zero])
    ratio = ((s - w) ** 2).mean() / (w**2).mean()  # E[(s - w)^2] = w^2 p / (1 - p)
    assert ratio.item() == pytest.approx(0.2 / 0.8, rel=0.05)


# --- BatchNorm and flat weights ---------------------------------------------------------------------------------


def test_recompute_bn_changes_running_statistics_not_weights(digits, tiny_ensemble):
    net = tiny_ensemble.members[0]
    net.eval()
    params = {k: v.clone() for k, v in net.named_parameters()}
    bn = net.net.features[0][1]
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    x = digits.train_x[:200]
    assert recompute_bn(net, x, batch_size=100)
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]), k
    # cumulative average over two equal batches = the statistics of all 200 images at the first BatchNorm
    with torch.no_grad():
        h = net.net.features[0][0]((x.float() / 255 - net.mean) / net.std)
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert bn.num_batches_tracked.item() == 2 and bn.momentum == 0.1 and not net.training and not bn.training


def test_flat_params_round_trip(tiny_ensemble):
    net = tiny_ensemble.members[1]
    vec = torch.arange(flat_params(net).numel(), dtype=torch.float32)
    set_flat_params(net, vec)
    assert torch.equal(flat_params(net), vec)
    with pytest.raises(ValueError, match="parameters"):
        set_flat_params(net, vec[:-1])


def test_flat_params_of_a_channels_last_network_in_logical_order(tiny_ensemble):
    # a channels_last conv weight is not contiguous: the recorder crashed on it (recipes/cifar10_cpu.yaml runs so)
    net = tiny_ensemble.members[0]
    vec = flat_params(net)
    cl = to_channels_last(copy.deepcopy(net))
    assert any(not p.is_contiguous() for p in cl.parameters())
    assert torch.equal(flat_params(cl), vec)
    set_flat_params(cl, vec + 1)
    assert torch.equal(flat_params(cl), vec + 1)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in cl.parameters() if p.dim() == 4)


# --- the recorder -----------------------------------------------------------------------------------------------


def test_recorder_writes_probs_and_weights_per_epoch(recorded_run):
    folder = recorded_run / "trajectory"
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch_0001.safetensors",
        "epoch_0002.safetensors",
        "points.safetensors",
    ]
    traj = load_trajectory(recorded_run)
    assert traj.epochs == [1, 2] and traj.members == 2 and traj.has_weights
    assert traj.x.dtype == torch.uint8 and traj.x.shape[0] == 100 and traj.y.shape == (100,)
    probs = traj.probs()
    assert probs.shape == (2, 2, 100, 10)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2, 100), atol=1e-5)
    # the last epoch's recorded weights are the state the run ended with
    state, _ = load_tensors(recorded_run / "state.safetensors")
    for m in range(2):
        names = [k for k in state if k.startswith(f"model.members.{m}.")]
        info = read_model_info(recorded_run)
        model = build_model(info["spec"], DatasetMeta.from_json(info["meta"]))
        model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        assert names and torch.equal(traj.weights(m)[-1], flat_params(model.members[m]))
        logits, _ = model.eval()(traj.x.float() / 255)
        assert torch.allclose(probs[-1, m], logits[m].softmax(-1), atol=1e-5)
    assert traj.weights(0, last=1).shape == (1, flat_params(model.members[0]).numel())


def test_recorder_without_weights_and_bad_input(tmp_path, tiny_ensemble, digits):
    rec = TrajectoryRecorder(digits.val_x[:7], record_weights=False)
    tiny_ensemble.train()
    rec(0, tiny_ensemble, tmp_path)
    assert tiny_ensemble.training  # flags restored
    traj = load_trajectory(tmp_path)
    assert traj.epochs == [1] and not traj.has_weights and traj.y is None and traj.probs().shape == (1, 3, 7, 10)
    with pytest.raises(UserError, match="no weights"):
        traj.weights(0)
    assert load_trajectory(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="uint8"):
        TrajectoryRecorder(digits.val_x[:7].float())


# --- analyze_landscape end to end -------------------------------------------------------------------------------

FAST = {
    "corruptions": ["gaussian_noise", "contrast"],
    "severities": [2],
    "corruption_limit": 32,
    "bn_images": 128,
    "t_steps": 4,
    "samples": 2,
    "k": 2,
    "random_min_acc_ratio": 0.0,
    "device": "cpu",
}


def test_analyze_landscape_end_to_end(recorded_run, tmp_path):
    from distill.analysis import analyze_landscape

    res = analyze_landscape(recorded_run, tmp_path / "A", combine_members=True, **FAST)
    for name in ("landscape.json", "similarity.png", "tsne.png", "plane.png", "subspace.png", "interpolation.png"):
        assert (tmp_path / "A" / name).is_file(), name
    assert set(res["figures"]) >= {"similarity.png", "tsne.png", "plane.png", "subspace.png", "interpolation.png"}
    saved = json.loads((tmp_path / "A" / "landscape.json").read_text())
    assert saved["ensembles"].keys() == res["ensembles"].keys()
    ens = res["ensembles"]
    assert {"single", "independent", "average", "diagonal", "low_rank", "random", "dropout"} <= set(ens)
    assert {"independent+average", "independent+dropout"} <= set(ens)
    assert ens["independent"]["size"] == 2 and ens["diagonal"]["size"] == 2 and ens["average"]["size"] == 1
    assert ens["independent+diagonal"]["size"] == 4
    assert set(ens["single"]["corrupted"]["severity"]) == {"2"}
    assert set(ens["single"]["corrupted"]["corruption"]) == {"gaussian_noise", "contrast"}
    sim = res["similarity"]
    assert np.allclose(np.diag(sim["members"]["weight_cosine"]), 1.0) and sim["members"]["disagreement"][0][0] == 0
    assert np.allclose(np.diag(sim["members"]["weight_cosine_without_norm"]), 1.0)
    assert np.asarray(sim["epochs"]["weight_cosine"]).shape == (2, 2)
    assert np.asarray(res["tsne"]["coords"]).shape == (2, 2, 2)
    assert len(res["plane"]["points"]["dropout"]) == 2 and len(res["plane"]["points"]["independent"]) == 1
    pts = {p["t"]: p for p in res["interpolation"]["points"]}
    assert {0.0, 1.0, -0.2, 1.2} <= set(pts) and pts[0.0]["disagreement_i"] == 0 and pts[1.0]["disagreement_j"] == 0
    assert all(r["accepted"] for r in res["samplers"]["random"]["samples"])
    assert res["notes"] == []
    # independent minus each ensemble: the difference of the ensembles' own scores, with an interval around it
    minus = res["independent_minus"]
    assert set(minus) == set(ens) - {"independent"}
    for name, d in minus.items():
        for metric in ("acc", "nll"):
            diff, (lo, hi) = d[metric]["diff"], d[metric]["ci"]
            assert diff == pytest.approx(ens["independent"]["clean"][metric] - ens[name]["clean"][metric], abs=1e-9)
            assert lo <= diff + 1e-12 and diff - 1e-12 <= hi
    # the study's table (experiments/landscape_table.py) reads the saved file: one row per point group and ensemble
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import landscape_table

    md = landscape_table.render([tmp_path / "A" / "landscape.json"])
    indep = res["plane"]["points"]["independent"][0]
    assert f"| independent | 1 | {indep['acc']:.3f} | {indep['disagreement']:.3f} |" in md
    assert (
        "| dropout | 2 |" in md
        and f"| independent+diagonal | 4 | {ens['independent+diagonal']['member_acc_mean']:.3f}" in md
    )
    assert f"| dropout | {minus['dropout']['acc']['diff']:+.3f} [{minus['dropout']['acc']['ci'][0]:+.3f}, " in md


def test_paired_differences_by_hand():
    from distill.analysis.subspace import EnsembleGroup, paired_differences

    y = torch.tensor([0, 1, 0, 1] * 50)  # (200,)
    right = torch.nn.functional.one_hot(y, 2).double() * 0.8 + 0.1  # every image right, p_y 0.9
    half = right.clone()
    half[::2] = half[::2].flip(1)  # every other image wrong, p_y 0.1
    groups = {"independent": EnsembleGroup(), "same": EnsembleGroup(), "half": EnsembleGroup()}
    groups["independent"].add(right, torch.zeros(0), y)
    groups["same"].add(right, torch.zeros(0), y)
    groups["half"].add(half, torch.zeros(0), y)
    out = paired_differences(groups, "independent", y, 500, 0, 0.95)
    assert set(out) == {"same", "half"}
    assert out["same"]["acc"] == {"diff": 0.0, "ci": (0.0, 0.0)}  # paired: identical predictions have no spread
    assert out["half"]["acc"]["diff"] == pytest.approx(0.5)
    lo, hi = out["half"]["acc"]["ci"]
    assert 0.38 < lo < 0.5 < hi < 0.62  # binomial: 0.5 +- 1.96 * sqrt(0.25 / 200) = +-0.069
    assert out["half"]["nll"]["diff"] == pytest.approx(0.5 * (math.log(0.1) - math.log(0.9)))  # lower NLL: < 0
    assert paired_differences(groups, "missing", y, 10, 0, 0.95) == {}


def test_analyze_landscape_without_trajectory_skips_what_needs_it(tmp_path):
    from distill.analysis import analyze_landscape

    train_ensemble(tiny_recipe(epochs=1), tmp_path / "T")
    res = analyze_landscape(tmp_path / "T", tmp_path / "A", tsne=True, samplers=["average", "dropout"], **FAST)
    assert "dropout" in res["ensembles"] and "average" not in res["ensembles"]
    assert any("average" in n and "trajectory" in n for n in res["notes"])
    assert res["trajectory"] is None and "tsne" not in res
    with pytest.raises(UserError, match="unknown option"):
        analyze_landscape(tmp_path / "T", tmp_path / "B", nonsense=1)
    with pytest.raises(UserError, match="'resamples' must be an integer >= 1, got 0"):
        analyze_landscape(tmp_path / "T", tmp_path / "B", resamples=0)
    with pytest.raises(UserError, match="member 5"):
        analyze_landscape(tmp_path / "T", tmp_path / "B", member=5)


def test_cosine_matrix_spread_and_disagreement_matrix():
    from distill.analysis.landscape import cosine_matrix, disagreement_matrix, norm_mask, spread

    c = cosine_matrix([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])])
    assert c[0, 1].item() == pytest.approx(1 / math.sqrt(2)) and math.isnan(c[0, 2].item()) and c[2, 2].item() == 1
    assert torch.allclose(cosine_matrix(torch.eye(3)), torch.eye(3, dtype=torch.float64))
    assert spread(10, 4) == [0, 3, 6, 9] and spread(3, 50) == [0, 1, 2]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2), torch.nn.Linear(3, 1))
    assert norm_mask(net).tolist() == [False] * 4 + [True] * 4 + [False] * 4
    probs = torch.nn.functional.one_hot(torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0], [3, 3, 3, 3]]), 4).float()
    d = disagreement_matrix(probs)
    assert d[0, 1].item() == 0.25 and d[0, 2].item() == 0.75 and d[1, 2].item() == 1.0 and d[2, 2].item() == 0


def test_landscape_seeds_table_by_hand():
    """experiments/landscape_table.seeds_table: seeds, not test images, as the unit; each group's limit position per
    seed and the independent-minus differences' mean [95% t over seeds]; nothing with one seed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import landscape_table

    def seed(pos: float, diff: float) -> dict:
        points = {"independent": [{"position": pos}, {"position": pos + 0.02}], "random": [], "diagonal": [{}]}
        minus = {"random": {"acc": {"diff": diff, "ci": None}, "nll": {"diff": -diff, "ci": None}}}
        return {"plane": {"points": points}, "independent_minus": minus}

    datas = [seed(0.50, 0.04), seed(0.54, 0.05), seed(0.58, 0.03)]
    lines = landscape_table.seeds_table(datas, ["s0", "s1", "s2"])
    assert "| independent | 0.51 | 0.55 | 0.59 | 0.55 ± 0.04 |" in lines
    assert "| diagonal | - | - | - | - |" in lines  # no position recorded: a dash, no spread
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(97.5%, 2 df) * sd / sqrt(n)
    assert f"| random | +0.040, +0.050, +0.030 | +0.040 [{0.04 - half:+.3f}, {0.04 + half:+.3f}] |" in "\n".join(lines)
    assert landscape_table.seeds_table(datas[:1], ["s0"]) == []
