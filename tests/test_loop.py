"""The Accelerate loop: resume equivalence, checkpoint safety, schedules, CLI and recipe errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill import UserError
from distill.checkpoint import load_model, load_tensors
from distill.cli import main
from distill.loop import lr_factor
from distill.recipe import ScheduleCfg, recipe_from_dict
from distill.train import train_ensemble

ROOT = Path(__file__).resolve().parents[1]


def tiny_recipe(objective: dict | None = None, epochs: int = 3, **data) -> dict:
    return {
        "seed": 1,
        "data": {"name": "digits", "limit_train": 192, "crop_padding": 1, **data},
        "teacher": {
            "arch": "tiny_cnn",
            "members": 2,
            "objective": objective or {"name": "sdde", "lam": 0.1, "same_batch": False},
            "train": {"epochs": epochs, "batch_size": 32, "optim": {"lr": 0.05}},
        },
        "run": {"progress": False, "log_every": 2},
    }


def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path):
    recipe = recipe_from_dict(tiny_recipe())
    train_ensemble(recipe, tmp_path / "straight")
    assert train_ensemble(recipe, tmp_path / "killed", stop_after=2) == {"stopped_after": 2}
    train_ensemble(recipe, tmp_path / "killed", resume=True)
    a, _ = load_tensors(tmp_path / "straight" / "state.safetensors")
    b, meta_b = load_tensors(tmp_path / "killed" / "state.safetensors")
    assert meta_b["epoch"] == 2
    weights = [k for k in a if k.startswith("model.")]
    assert weights
    for k in weights:
        assert torch.equal(a[k], b[k]), k
    s = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert len(s["history"]) == 3 and "cam_similarity" in s["test"]


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(epochs=1))
    train_ensemble(recipe, tmp_path / "r")
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="--resume"):
        train_ensemble(recipe, tmp_path / "r")
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    model, info = load_model(tmp_path / "r")
    assert info["spec"]["archs"] == ["tiny_cnn", "tiny_cnn"] and info["role"] == "teacher"
    assert (tmp_path / "r" / "tb").is_dir()  # TensorBoard logs through Accelerate's tracker


def test_checkpoint_with_wrong_architecture_says_what_differs(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(epochs=1))
    train_ensemble(recipe, tmp_path / "r")
    info = json.loads((tmp_path / "r" / "model.json").read_text())
    info["spec"]["archs"] = ["small_cnn", "small_cnn"]
    (tmp_path / "r" / "model.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="shape mismatches"):
        load_model(tmp_path / "r")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(epochs=1))
    train_ensemble(recipe, tmp_path / "r")
    p = tmp_path / "r" / "model.safetensors"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(UserError, match="model.safetensors"):
        load_model(tmp_path / "r")


def test_cosine_schedule_per_iteration():
    cfg = ScheduleCfg(name="cosine", eta_min=1e-6)
    assert lr_factor(0, 100, 10, cfg, 0.1) == pytest.approx(1.0)
    assert lr_factor(50, 100, 10, cfg, 0.1) == pytest.approx(0.5 * (1 + 1e-5), rel=1e-4)
    assert lr_factor(100, 100, 10, cfg, 0.1) == pytest.approx(1e-5)
    warm = ScheduleCfg(name="warmup_linear", warmup_epochs=1, final_lr_fraction=0.0)
    assert lr_factor(4, 100, 10, warm, 0.1) == pytest.approx(0.5)
    assert lr_factor(55, 100, 10, warm, 0.1) == pytest.approx(0.5)
    assert math.isclose(lr_factor(0, 100, 10, ScheduleCfg(name="step"), 0.1), 1.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("teacher.train.epochs=three", "teacher.train.epochs"),
        ("teacher.membres=3", "teacher.membres"),
        ("data.name=imagenet", "data.name"),
        ("teacher.arch=resnet99", "arch"),
        ("teacher.train.schedule.name=exp", "teacher.train.schedule.name"),
        ("nonsense", "KEY=VALUE"),
    ],
)
def test_bad_recipe_is_one_line_and_exit_2(tmp_path, capsys, override, message):
    code = main(
        ["teacher", "--recipe", str(ROOT / "recipes/digits_sdde.yaml"), "--out", str(tmp_path / "x"), "--set", override]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err


def test_missing_recipe_file_and_data(tmp_path, capsys):
    assert main(["teacher", "--recipe", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    code = main(
        [
            "teacher",
            "--recipe",
            str(ROOT / "recipes/digits_sdde.yaml"),
            "--out",
            str(tmp_path / "x"),
            "--set",
            "data.name=mnist",
            "--set",
            f"data.root={tmp_path / 'no_mnist'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no_mnist" in err and "data.root" in err


def test_every_recipe_parses():
    from distill.recipe import load_recipe

    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.teacher or recipe.student or recipe.students, path


def test_cli_help_documents_commands():
    out = subprocess.run(
        [sys.executable, "-m", "distill", "teacher", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert "--recipe" in out and "--set" in out and "--resume" in out


def test_overrides_index_lists_and_do_not_leak_through_yaml_aliases():
    from distill.recipe import load_recipe

    r = load_recipe(
        ROOT / "recipes/digits.yaml", ["single.train.epochs=1", "students.*.train.epochs=2", "students.0.alpha=0.5"]
    )
    base = load_recipe(ROOT / "recipes/digits.yaml")
    assert r.teacher.train.epochs == base.teacher.train.epochs != 1 and r.single.train.epochs == 1
    assert [s.train.epochs for s in r.students] == [2, 2]  # the demo recipe's two students (kd, confods)
    assert [s.alpha for s in r.students] == [0.5, 0.9]
    with pytest.raises(UserError, match="students.9"):
        load_recipe(ROOT / "recipes/digits.yaml", ["students.9.alpha=1"])


def test_yaml_boolean_words_read_as_the_literal_they_spell():
    """PyYAML reads a bare `no` as False: `--set run.mixed_precision=no` (and `mixed_precision: no` in a file) must
    mean "no", not fail; a boolean that spells none of a field's words still fails, naming the key."""
    from distill.recipe import load_recipe

    assert load_recipe(ROOT / "recipes/digits.yaml", ["run.mixed_precision=no"]).run.mixed_precision == "no"
    assert recipe_from_dict({**tiny_recipe(epochs=1), "run": {"mixed_precision": False}}).run.mixed_precision == "no"
    with pytest.raises(UserError, match="run.mixed_precision"):
        load_recipe(ROOT / "recipes/digits.yaml", ["run.mixed_precision=yes"])


def _conv_records(monkeypatch, raw: dict, out: Path) -> list[dict]:
    """Train ``raw`` and record, for every Conv2d call in a training-mode forward, what the convolution saw:
    its input's and output's dtype and whether input and weight were channels-last."""
    import distill.train

    records: list[dict] = []
    real_build = distill.train.build_model

    def hook(module: torch.nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        if module.training and module.in_channels > 1:  # a 1-channel tensor is both layouts at once
            x, cl = inputs[0], torch.channels_last
            records.append(
                {
                    "input": x.dtype,
                    "output": output.dtype,
                    "input_cl": x.is_contiguous(memory_format=cl) and not x.is_contiguous(),
                    "weight_cl": module.weight.is_contiguous(memory_format=cl) and not module.weight.is_contiguous(),
                }
            )

    def build_with_hooks(*args, **kwargs):
        model = real_build(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(hook)
        return model

    monkeypatch.setattr(distill.train, "build_model", build_with_hooks)
    train_ensemble(recipe_from_dict(raw), out)
    assert records, "no convolution ran in a training step"
    return records


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("no", torch.float32)])
def test_mixed_precision_reaches_the_convolutions_of_the_step(tmp_path, monkeypatch, precision, dtype):
    """Under bf16 the training step's convolutions compute in bfloat16 (autocast casts the first conv's fp32
    image inside the op, so the output and every later conv's input are bf16), with SDDE's double backprop
    finite; with `no` they stay float32."""
    raw = {**tiny_recipe(epochs=1), "run": {"progress": False, "mixed_precision": precision}}
    records = _conv_records(monkeypatch, raw, tmp_path / precision)
    assert {r["output"] for r in records} == {dtype} and {r["input"] for r in records} == {dtype}
    h = json.loads((tmp_path / precision / "summary.json").read_text())["history"][0]
    assert math.isfinite(h["loss"]) and math.isfinite(h["div"]) and h["div"] != 0


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_weights_and_activations_of_the_step(tmp_path, monkeypatch, channels_last):
    raw = tiny_recipe(objective={"name": "de"}, epochs=1)
    raw["run"] = {"progress": False, "channels_last": channels_last}
    records = _conv_records(monkeypatch, raw, tmp_path / "cl")
    assert {r["weight_cl"] for r in records} == {channels_last}
    assert {r["input_cl"] for r in records} == {channels_last}
    assert math.isfinite(json.loads((tmp_path / "cl" / "summary.json").read_text())["history"][0]["loss"])


def test_step_terms_stay_on_the_device_until_read(monkeypatch):
    from distill.loop import StepTerms

    terms = StepTerms(torch.device("cpu"))
    losses = [torch.tensor(0.5), torch.tensor(1.5), torch.tensor(float("nan")), torch.tensor(float("inf"))]

    def no_sync(*_a, **_k):
        raise AssertionError("a host sync inside StepTerms.add")

    with monkeypatch.context() as m:
        for name in ("item", "__float__", "__bool__", "tolist"):
            m.setattr(torch.Tensor, name, no_sync)
        for step, loss in enumerate(losses[:2], start=1):
            terms.add({"loss": loss, "ce": loss * 2, "stat": 3.0}, step)
    assert terms.first_bad_step() is None
    assert terms.means() == pytest.approx({"loss": 1.0, "ce": 2.0, "stat": 3.0})
    for step, loss in enumerate(losses[2:], start=3):
        terms.add({"loss": loss, "ce": loss, "stat": 0.0}, step)
    assert terms.first_bad_step() == 3  # the first non-finite step, not the last


def test_diverged_run_names_the_step_and_keeps_no_checkpoint(tmp_path):
    raw = tiny_recipe(epochs=2)
    raw["teacher"]["train"]["optim"]["lr"] = 1e12
    raw["run"]["log_every"] = 5
    expected = r"loss is not finite at epoch 1, step 3: training diverged; lower train.optim.lr"
    with pytest.raises(UserError, match=expected):
        train_ensemble(recipe_from_dict(raw), tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_the_accelerate_forward_patch_targets_what_prepare_installs():
    """Under mixed precision ``prepare`` puts an fp32-casting ``forward`` on the instance (private Accelerate
    behaviour the loop relies on); ``undo_accelerate_forward_wrap`` takes it off again."""
    from accelerate import Accelerator

    from distill.loop import undo_accelerate_forward_wrap

    acc = Accelerator(mixed_precision="bf16", cpu=True)
    model = acc.prepare(torch.nn.Linear(3, 2))
    assert "forward" in vars(model), "Accelerate no longer wraps forward: revisit undo_accelerate_forward_wrap"
    undo_accelerate_forward_wrap(model)
    assert "forward" not in vars(model) and "_original_forward" not in vars(model)
    assert model(torch.ones(1, 3)).dtype == torch.float32


def test_recipe_member_mode_vmap_trains_as_the_loop_does(tmp_path):
    """run.member_mode reaches the teacher: the vmap run reports vmap and ends within float noise of the loop's."""
    runs = {}
    for mode in ("loop", "vmap"):
        r = tiny_recipe({"name": "de"}, epochs=1)
        r["run"]["member_mode"] = mode
        summary = train_ensemble(recipe_from_dict(r), tmp_path / mode)
        assert summary["member_mode"] == mode
        runs[mode] = load_tensors(tmp_path / mode / "model.safetensors")[0]
    assert runs["loop"].keys() == runs["vmap"].keys()
    for k, v in runs["loop"].items():
        assert torch.allclose(v, runs["vmap"][k], atol=1e-4), k


def test_member_mode_vmap_with_mixed_architectures_is_refused_up_front():
    from distill.resolve import check_recipe

    r = tiny_recipe({"name": "de"}, epochs=1)
    r["teacher"]["arch"] = ["tiny_cnn", "small_cnn"]
    r["run"]["member_mode"] = "vmap"
    with pytest.raises(UserError, match="run.member_mode.*one architecture.*tiny_cnn, small_cnn"):
        check_recipe(recipe_from_dict(r))
    r["run"]["member_mode"] = "vmapp"
    with pytest.raises(UserError, match="run.member_mode"):
        recipe_from_dict(r)


@pytest.mark.parametrize(
    ("epochs", "share", "validated"),
    [(90, 0.34, range(59, 90)), (10, 0.3, [7, 8, 9]), (30, 1.0, range(30)), (5, 1e-6, [4]), (1, 0.34, [0])],
)
def test_validate_last_counts_its_share_back_from_the_last_epoch(epochs, share, validated):
    from distill.recipe import TrainCfg

    cfg = TrainCfg(epochs=epochs, validate_last=share)
    assert [e for e in range(epochs) if cfg.validates(e)] == list(validated)


def test_epochs_before_validate_last_are_trained_but_neither_validated_nor_selectable(tmp_path, monkeypatch):
    import distill.loop as loop

    calls = []
    real = loop.validation_metrics
    monkeypatch.setattr(loop, "validation_metrics", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    raw = tiny_recipe({"name": "de"}, epochs=4)
    raw["teacher"]["train"]["validate_last"] = 0.5
    summary = train_ensemble(recipe_from_dict(raw), tmp_path / "r")
    assert len(calls) == 2
    assert [("val_nll" in h) for h in summary["history"]] == [False, False, True, True]
    assert summary["best_epoch"] in (3, 4)
    _, info = load_model(tmp_path / "r")
    assert info["epoch"] == summary["best_epoch"]
    # resuming a run killed before its first validated epoch
    assert train_ensemble(recipe_from_dict(raw), tmp_path / "k", stop_after=1) == {"stopped_after": 1}
    assert not (tmp_path / "k" / "model.safetensors").exists()
    resumed = train_ensemble(recipe_from_dict(raw), tmp_path / "k", resume=True)
    assert resumed["best_epoch"] == summary["best_epoch"] and resumed["test"] == summary["test"]


@pytest.mark.parametrize("bad", [0, -0.5, 1.5])
def test_validate_last_outside_0_1_is_refused_by_name(bad):
    raw = tiny_recipe(epochs=2)
    raw["teacher"]["train"]["validate_last"] = bad
    with pytest.raises(UserError, match=r"recipe key 'teacher.train.validate_last': expected a number in \(0.0, 1.0\]"):
        recipe_from_dict(raw)
