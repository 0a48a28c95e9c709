"""The perturbation engine: directions, projections, the frozen teacher, the disagreement search, the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill import UserError
from distill.models import build_model
from distill.perturb import (
    PERTURBATIONS,
    label_disagreement,
    make_perturbation,
    mutual_information,
    pairwise_kl,
    prob_std,
    teacher_logits,
    unit_rms,
)

D = 64  # 1 x 8 x 8 digits


@pytest.fixture(scope="module")
def teacher(digits):
    """Three tiny CNNs trained for a few steps, so their members disagree in a structured way."""
    torch.manual_seed(0)
    model = build_model({"kind": "ensemble", "archs": ["tiny_cnn"] * 3}, digits.meta)
    x, y = digits.train_x.float() / 255, digits.train_y
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        idx = torch.randint(len(y), (64,), generator=g)
        logits, _ = model(x[idx])
        loss = sum(F.cross_entropy(z, y[idx]) for z in logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model


def batch(digits, i: int = 0, n: int = 32):
    return digits.val_x[i * n : (i + 1) * n].float() / 255, digits.val_y[i * n : (i + 1) * n]


def mid(x):
    """Images squeezed into [0.25, 0.75], so small steps are never clipped."""
    return 0.25 + 0.5 * x


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rms(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).pow(2).mean(dim=1).sqrt()


# ---------------------------------------------------------------------------------------------------------------
# ODS and ConfODS


def test_unit_rms_direction():
    g = torch.randn(5, 3, 4, 4) * torch.tensor([1e-6, 1.0, 10.0, 3.0, 0.1]).view(-1, 1, 1, 1)
    torch.testing.assert_close(rms(unit_rms(g)), torch.ones(5))
    assert torch.equal(unit_rms(torch.zeros(2, 1, 3, 3)), torch.zeros(2, 1, 3, 3))


def test_ods_step_has_unit_rms_times_eta(teacher, digits):
    x, y = batch(digits)
    x = mid(x)
    eta = 1 / 255
    res = make_perturbation("ods", {"eta": eta})(teacher, x, y, gen())
    torch.testing.assert_close(rms(res.x - x), torch.full((len(x),), eta), rtol=1e-4, atol=1e-7)
    assert res.stats["delta_rms"].item() == pytest.approx(eta, rel=1e-4)
    again = make_perturbation("ods", {"eta": eta})(teacher, x, y, gen())
    assert torch.equal(res.x, again.x)  # the generator fixes the member and the projection


def test_confods_is_ods_times_confidence(teacher, digits):
    x, y = batch(digits, 1)
    x = mid(x)
    params = {"eta": 2 / 255, "temperature": 2.0}
    ods = make_perturbation("ods", params)(teacher, x, y, gen(3))
    conf = make_perturbation("confods", params)(teacher, x, y, gen(3))
    k = int(torch.randint(3, (1,), generator=gen(3)).item())  # the member both drew first
    with torch.no_grad():
        p = (teacher_logits(teacher.eval(), x)[k] / 2.0).softmax(-1)
    c = p.max(-1).values.view(-1, 1, 1, 1)
    assert (c < 0.999).all()
    torch.testing.assert_close(conf.x - x, (ods.x - x) * c, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# the disagreement search


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "mi"},
        {"objective": "kl"},
        {"objective": "std"},
        {"objective": "mi", "norm": "linf", "step_size": 2 / 255, "select": "last"},
        {"objective": "mi", "random_start": True, "select": "last"},
    ],
)
def test_disagree_raises_its_objective(teacher, digits, params):
    params = {"eps": 8 / 255, "step_size": 4 / 255, "steps": 4, **params}
    perturb = make_perturbation("disagree", params)
    before, after = [], []
    for i in range(4):
        x, y = batch(digits, i)
        res = perturb(teacher, x, y, gen(i))
        before.append(res.stats["objective_clean"])
        after.append(res.stats["objective_perturbed"])
        # the returned logits are the teacher's on x_tilde, and the reported objective is theirs
        with torch.no_grad():
            fresh = teacher_logits(teacher.eval(), res.x)
        torch.testing.assert_close(res.teacher_logits_perturbed, fresh, rtol=1e-4, atol=1e-5)
    assert torch.stack(after).mean() > torch.stack(before).mean() * 1.02


def test_disagree_with_random_direction_and_one_step_is_ods(teacher, digits):
    x, y = batch(digits, 2)
    eta = 3 / 255
    ods = make_perturbation("ods", {"eta": eta})(teacher, x, y, gen(7))
    params = {"direction": "random", "steps": 1, "norm": "l2", "eps": eta, "step_size": eta}
    search = make_perturbation("disagree", params)(teacher, x, y, gen(7))
    torch.testing.assert_close(search.x, ods.x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_keeps_the_ball_and_unit_interval(teacher, digits, norm):
    x, y = batch(digits, 3)
    eps = 3 / 255
    params = {"norm": norm, "eps": eps, "step_size": 4 * eps, "steps": 3, "random_start": True}
    res = make_perturbation("disagree", params)(teacher, x, y, gen(1))
    delta = (res.x - x).flatten(1)
    assert res.x.min() >= 0 and res.x.max() <= 1
    if norm == "l2":
        assert (delta.norm(dim=1) <= eps * math.sqrt(D) * (1 + 1e-5)).all()
        assert delta.norm(dim=1).max() > 0.5 * eps * math.sqrt(D)
    else:
        assert delta.abs().max() <= eps + 1e-6


def test_gaussian_stays_in_unit_interval(teacher, digits):
    x, y = batch(digits)
    assert x.min() == 0 and x.max() == 1
    res = make_perturbation("gaussian", {"eta": 0.5})(teacher, x, y, gen())
    assert res.x.min() >= 0 and res.x.max() <= 1
    assert (res.x != x).float().mean() > 0.5


def test_none_returns_x_and_one_forward(teacher, digits):
    x, y = batch(digits)
    res = make_perturbation("none", {})(teacher, x, y)
    assert torch.equal(res.x, x)
    assert res.teacher_logits_clean.data_ptr() == res.teacher_logits_perturbed.data_ptr()  # one forward
    assert res.stats["delta_rms"] == 0
    assert res.stats["mi_clean"] == res.stats["mi_perturbed"]


# ---------------------------------------------------------------------------------------------------------------
# the frozen teacher and the result


VARIANTS = [
    ("none", {}),
    ("gaussian", {}),
    ("ods", {}),
    ("confods", {}),
    ("disagree", {}),
    ("disagree", {"objective": "kl", "norm": "linf", "random_start": True}),
    ("disagree", {"objective": "std", "direction": "random", "select": "last"}),
    ("disagree", {"start": "mixup", "steps": 2}),
    ("mixup", {}),
]


def test_mixup_mixes_pairs_of_the_batch_with_seeded_weights(teacher, digits):
    x, y = batch(digits)
    res = make_perturbation("mixup", {"alpha": 0.4})(teacher, x, y, gen(1))
    again = make_perturbation("mixup", {"alpha": 0.4})(teacher, x, y, gen(1))
    assert torch.equal(res.x, again.x) and not torch.equal(res.x, make_perturbation("mixup")(teacher, x, y, gen(2)).x)
    # every mixed image is lam * x_b + (1 - lam) * x_j for some other image j of the batch and one lam in [0, 1]
    flat, mixed = x.flatten(1), res.x.flatten(1)
    for b in range(len(x)):
        lams = []
        for j in range(len(x)):
            d = flat[b] - flat[j]
            if d.norm() < 1e-6:
                continue
            lam = ((mixed[b] - flat[j]) @ d / (d @ d)).item()
            if (lam * flat[b] + (1 - lam) * flat[j] - mixed[b]).abs().max() < 1e-5:
                lams.append(lam)
        assert lams and -1e-6 <= lams[0] <= 1 + 1e-6
    assert res.stats["delta_rms"] > 0.05  # far larger than an ODS step: a different point, not a nudge
    assert torch.allclose(res.teacher_logits_perturbed, teacher_logits(teacher.eval(), res.x), atol=1e-5)


def test_disagree_from_mixed_inputs_searches_around_the_mixed_image(teacher, digits):
    x, y = batch(digits)
    params = {"start": "mixup", "steps": 2, "eps": 2 / 255}
    res = make_perturbation("disagree", params)(teacher, x, y, gen(3))
    centre = make_perturbation("mixup")(teacher, x, y, gen(3)).x  # the same draws give the same mix
    assert rms(res.x - centre).max() <= 2 / 255 + 1e-6  # inside the ball around the mixed image
    assert rms(res.x - x).mean() > 0.05  # and far from the clean one
    assert torch.allclose(res.stats["mi_clean"], mutual_information(teacher_logits(teacher.eval(), x)).mean())


def test_variants_cover_every_method():
    assert {name for name, _ in VARIANTS} == set(PERTURBATIONS)


@pytest.mark.parametrize("frozen_flags", [False, True])
@pytest.mark.parametrize(("name", "params"), VARIANTS)
def test_teacher_is_untouched(teacher, digits, name, params, frozen_flags):
    x, y = batch(digits)
    teacher.train()  # the method must switch to eval (no BatchNorm update) and restore the flags
    flags = [p.requires_grad for p in teacher.parameters()]
    if frozen_flags:
        teacher.requires_grad_(False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    try:
        res = make_perturbation(name, params)(teacher, x, y, gen())
        x_tilde, stats = res  # unpacks as the seam's (x_tilde, stats)
        assert x_tilde.shape == x.shape and not x_tilde.requires_grad
        assert all(m.training for m in teacher.modules())
        assert all(p.grad is None for p in teacher.parameters())
        assert all(p.requires_grad != frozen_flags for p in teacher.parameters())
        for k, v in teacher.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert {"mi_clean", "mi_perturbed", "disagree_clean", "disagree_perturbed", "delta_rms"} <= set(stats)
        assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())
        assert res.teacher_logits_clean.shape == res.teacher_logits_perturbed.shape == (3, len(x), 10)
    finally:
        for p, f in zip(teacher.parameters(), flags):
            p.requires_grad_(f)
        teacher.eval()


def test_works_when_called_under_no_grad(teacher, digits):
    x, y = batch(digits)
    with torch.no_grad():
        res = make_perturbation("disagree", {"steps": 2})(teacher, x, y, gen())
    assert res.stats["delta_rms"] > 0


# ---------------------------------------------------------------------------------------------------------------
# the measures


def test_measures_on_a_hand_computed_case():
    p = torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]])  # (M=2, B=1, K=2)
    logits = p.log()

    def h(q):
        return -sum(v * math.log(v) for v in q)

    def kl(a, b):
        return sum(u * math.log(u / v) for u, v in zip(a, b))

    mi = h([0.7, 0.3]) - (h([0.5, 0.5]) + h([0.9, 0.1])) / 2
    assert mutual_information(logits).item() == pytest.approx(mi, rel=1e-5)
    pkl = (kl([0.5, 0.5], [0.9, 0.1]) + kl([0.9, 0.1], [0.5, 0.5])) / 2
    assert pairwise_kl(logits).item() == pytest.approx(pkl, rel=1e-5)
    assert prob_std(logits).item() == pytest.approx(0.2, rel=1e-4)
    same = torch.randn(1, 4, 5).expand(3, 4, 5)
    assert mutual_information(same).abs().max() < 1e-6
    assert pairwise_kl(same).abs().max() < 1e-6


def test_label_disagreement():
    # predictions (M=3, B=4): pairs (0,1) differ on 1/4, (0,2) on 2/4, (1,2) on 3/4
    pred = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 0, 0]])
    logits = F.one_hot(pred, 4).float()
    assert label_disagreement(logits).item() == pytest.approx((0.25 + 0.5 + 0.25) / 3)
    assert label_disagreement(logits[:1]).item() == 0


# ---------------------------------------------------------------------------------------------------------------
# the registry


def test_unknown_method_lists_the_choices():
    with pytest.raises(UserError, match=r"student\.perturb\.name.*confods.*disagree.*gaussian.*none.*ods"):
        make_perturbation("odz", {})


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("ods", {"etaa": 0.1}, "student.perturb.params.etaa"),
        ("ods", {"eta": "big"}, "student.perturb.params.eta"),
        ("gaussian", {"eta": -1.0}, "student.perturb.params.eta"),
        ("disagree", {"objective": "entropy"}, "student.perturb.params.objective"),
        ("disagree", {"steps": 0}, "student.perturb.params.steps"),
        ("disagree", {"steps": 2.5}, "student.perturb.params.steps"),
        ("none", {"eta": 1.0}, "student.perturb.params.eta"),
    ],
)
def test_bad_params_name_the_key(name, params, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        make_perturbation(name, params)


# ---------------------------------------------------------------------------------------------------------------
# the searches against a random direction of their own size


def _same_size_random(x: torch.Tensor, x_tilde: torch.Tensor, seed: int) -> torch.Tensor:
    """x moved along a Gaussian direction by x_tilde's own per-sample RMS step (x in [0.25, 0.75]: never clipped)."""
    d = torch.randn(x.shape, generator=gen(1000 + seed))
    step = rms(x_tilde - x).view(-1, 1, 1, 1)
    return x + step * d / rms(d).view(-1, 1, 1, 1)


@pytest.mark.parametrize("objective", ["mi", "kl", "std"])
def test_disagree_beats_a_random_step_of_its_size_on_its_objective(teacher, digits, objective):
    """Over 5 batches (seeds), the searched x~ raises the objective it maximises more than a random step of the
    same per-sample size does, on every batch; and the search moves (a returned x would make both gains 0)."""
    from distill.perturb import DISAGREEMENT

    j = DISAGREEMENT[objective]
    params = {"objective": objective, "eps": 4 / 255, "step_size": 2 / 255, "steps": 4}
    perturb = make_perturbation("disagree", params)
    gains = []
    for seed in range(5):
        x, y = batch(digits, seed)
        x = mid(x)
        res = perturb(teacher, x, y, gen(seed))
        assert rms(res.x - x).min() > 0.5 * params["eps"]  # every sample moved: the search ran
        with torch.no_grad():
            teacher.eval()
            j0, js, jr = (j(teacher_logits(teacher, v)).mean() for v in (x, res.x, _same_size_random(x, res.x, seed)))
        gains.append(((js - j0) / (jr - j0).abs().clamp_min(1e-12)).item())
        assert js > j0, (seed, j0, js, jr)
    # not a near tie: on every batch the searched step gains more than twice what a random one gains (or loses)
    assert min(gains) > 2, gains


def _projection(teacher, v: torch.Tensor, k: int, w: torch.Tensor) -> torch.Tensor:
    """ODS's objective for its draw (member k, weights w (B, K)): ``sum_bc w_bc softmax(z_k(v))_bc``."""
    with torch.no_grad():
        return (w * teacher_logits(teacher.eval(), v)[k].softmax(-1)).sum()


@pytest.mark.parametrize("method", ["ods", "confods"])
def test_ods_beats_a_random_step_of_its_size_on_its_random_projection(teacher, digits, method):
    """(Conf)ODS maximises its draw's ``sum_bc w_bc p_k,bc``: its step raises that projection more than a random step
    of the same per-sample size, for every seed."""
    for seed in range(5):
        x, y = batch(digits, seed)
        x = mid(x)
        res = make_perturbation(method, {"eta": 2 / 255})(teacher, x, y, gen(seed))
        g = gen(seed)  # the draws ods_step made: member k, then w ~ U(-1, 1)^(B x K)
        k = int(torch.randint(3, (1,), generator=g).item())
        w = torch.rand((len(x), 10), generator=g) * 2 - 1
        assert rms(res.x - x).min() > 0  # it moved
        p0, ps = _projection(teacher, x, k, w), _projection(teacher, res.x, k, w)
        pr = _projection(teacher, _same_size_random(x, res.x, seed), k, w)
        assert ps - p0 > 2 * (pr - p0).abs() and ps > p0, (seed, p0, ps, pr)


def test_the_student_step_trains_on_the_searched_inputs(teacher, digits):
    """KD with the disagreement search: the student's forward gets [x; x~] with x~ the search's output (not x), and
    the loss distils the teacher's prediction on x~. A step that skipped the search (or the teacher on x~) fails."""
    import copy

    from distill.data import Batch
    from distill.objectives.student import KD, kd_loss

    frozen = copy.deepcopy(teacher).eval()
    params = {"eps": 4 / 255, "step_size": 2 / 255, "steps": 3}  # no random start: deterministic
    kd = KD(copy.deepcopy(teacher), make_perturbation("disagree", params), alpha=0.5, temperature=2.0)
    torch.manual_seed(1)
    student = build_model({"kind": "ensemble", "archs": ["tiny_cnn"]}, digits.meta).eval()
    seen = []
    student.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x, y = batch(digits, 2)
    loss, terms = kd(student, Batch(x[None], y[None]))
    searched = make_perturbation("disagree", params)(frozen, x, y).x
    (inputs,) = seen
    assert torch.equal(inputs[: len(x)], x)
    torch.testing.assert_close(inputs[len(x) :], searched, rtol=0, atol=1e-6)
    assert rms(searched - x).mean() > 0.5 * params["eps"]
    with torch.no_grad():
        s = student(torch.cat([x, searched]))[0]
        t_searched, t_clean = teacher_logits(frozen, searched), teacher_logits(frozen, x)
    want, _ = kd_loss(s[:, : len(x)], s[:, len(x) :], t_searched, y, 0.5, 2.0)
    unsearched, _ = kd_loss(s[:, : len(x)], s[:, len(x) :], t_clean, y, 0.5, 2.0)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert abs(want.item() - unsearched.item()) > 1e-4  # the two would be told apart
    assert terms["perturb/delta_rms"].item() == pytest.approx(rms(searched - x).pow(2).mean().sqrt().item(), rel=1e-4)
