"""Deployable files: the ONNX file alone runs under onnxruntime and says what it takes; a run loads from Python as a
plain ``(B, K)`` classifier; a BatchNorm network exported channels-last matches (issue 34)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import distill
from distill.checkpoint import load_classifier, load_model, save_model
from distill.data.base import DatasetMeta
from distill.export import ONNX_TOLERANCE, UncertaintyDeployable, export, export_onnx_checked
from distill.models import build_model, ensemble_spec
from distill.models.ensemble import to_channels_last

pytest.importorskip("onnx", reason="the ONNX export needs onnx")
pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")

CLASSES = ("cat", "dog", "eel")
# Run with nothing but numpy and onnxruntime, distill barred: the file must carry everything.
ORT_RUN = """
import sys
sys.modules["distill"] = None
import numpy as np, onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
outs = sess.run(None, {"x": np.load(sys.argv[2])})
np.savez(sys.argv[3], **{o.name: v for o, v in zip(sess.get_outputs(), outs)})
"""


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Fresh BatchNorm statistics are 0 / 1 (an identity); random ones make the export test the folding."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def make_run(run_dir: Path, members: int, channels: int = 3, size: tuple[int, int] = (12, 10)) -> Path:
    """A run directory as training writes it (model.safetensors + model.json), without training."""
    meta = DatasetMeta("toy", 3, channels, size, (0.4, 0.5, 0.6)[:channels], (0.2, 0.25, 0.3)[:channels], CLASSES)
    spec = ensemble_spec("small_cnn", members)
    torch.manual_seed(members)
    model = build_model(spec, meta)
    _randomise_batchnorm(model, members)
    save_model(run_dir, model, {"role": "teacher" if members > 1 else "single", "spec": spec, "meta": meta.to_json()})
    return run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory of a 2-member ensemble, its ONNX file)."""
    base = tmp_path_factory.mktemp("onnx")
    run = make_run(base / "run", members=2)
    out = base / "out"
    out.mkdir()
    path, err = export(run, "onnx", out / "model.onnx")
    assert err <= ONNX_TOLERANCE
    return run, path


def test_onnx_file_alone_runs_and_matches_torch(exported, tmp_path):
    run, path = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx", "model.onnx.check.json"]  # no .data
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(path, alone / "model.onnx")
    x = torch.randint(0, 256, (5, 3, 12, 10), generator=torch.Generator().manual_seed(1)).float() / 255
    np.save(tmp_path / "x.npy", x.numpy())
    proc = subprocess.run(
        [sys.executable, "-I", "-c", ORT_RUN, "model.onnx", str(tmp_path / "x.npy"), str(tmp_path / "y.npz")],
        cwd=alone,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "y.npz")
    model, _ = load_model(run)
    with torch.no_grad():
        logits, _ = model(x)  # (M, B, K)
    p = logits.double().softmax(-1)  # (M, B, K): the hand computation, independent of the readout's code
    p_bar = p.mean(0)
    total = -(p_bar * p_bar.log()).sum(-1)
    data = -(p * p.log()).sum(-1).mean(0)
    want = {"log_probs": p_bar.log(), "total": total, "data": data, "knowledge": total - data}
    assert sorted(got.files) == sorted(want)
    for name, w in want.items():
        assert got[name].shape == tuple(w.shape)
        assert np.abs(got[name] - w.numpy()).max() < ONNX_TOLERANCE, name
    assert float(want["knowledge"].min()) > 0  # two different members: the test covers a non-zero output


def test_onnx_metadata_says_what_the_file_takes(exported):
    import onnx

    run, path = exported
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads((run / "model.json").read_text())["meta"]
    assert json.loads(props["class_names"]) == list(CLASSES)
    assert json.loads(props["input_shape"]) == [3, 12, 10]
    assert props["channel_order"] == "RGB"
    assert json.loads(props["normalization_mean"]) == pytest.approx(meta["mean"])
    assert json.loads(props["normalization_std"]) == pytest.approx(meta["std"])
    assert set(json.loads(props["outputs"])) == {"log_probs", "total", "data", "knowledge"}
    assert props["distill_version"] == distill.__version__
    assert (props["role"], props["kind"], props["members"]) == ("teacher", "ensemble", "2")
    # what the metadata says of the value range is what the graph takes: float32, (batch, 3, 12, 10)
    (inp,) = proto.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "[0, 1]" in props["value_range"]
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims[1:] == [3, 12, 10] and isinstance(dims[0], str)  # a dynamic batch dimension
    assert [o.name for o in proto.graph.output] == ["log_probs", "total", "data", "knowledge"]


def test_grey_model_says_grey(tmp_path):
    import onnx

    run = make_run(tmp_path / "run", members=1, channels=1, size=(8, 8))
    path, _ = export(run, "onnx", tmp_path / "grey.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["channel_order"] == "grey" and json.loads(props["input_shape"]) == [1, 8, 8]
    assert (props["role"], props["members"]) == ("single", "1")


def test_load_classifier_gives_b_by_k_logits(tmp_path):
    x = torch.rand(6, 3, 12, 10, generator=torch.Generator().manual_seed(2))
    single = make_run(tmp_path / "single", members=1)
    model, _ = load_model(single)
    clf = load_classifier(single)
    with torch.no_grad():
        want = model(x)[0][0]  # (B, K): the one network's logits
        got = clf(x)
    assert got.shape == (6, 3) and torch.equal(got, want)

    ens = make_run(tmp_path / "ens", members=3)
    model, _ = load_model(ens)
    with torch.no_grad():
        logits = model(x)[0]  # (3, B, K)
        got = load_classifier(ens)(x)
    by_hand = torch.stack([logits[m].double().softmax(-1) for m in range(3)]).mean(0).log()  # (B, K)
    assert got.shape == (6, 3)
    assert torch.allclose(got.double(), by_hand, atol=1e-6)
    assert not torch.allclose(got, logits.mean(0), atol=1e-3)  # not the mean of raw logits
    assert math.isclose(float(got.exp().sum(-1).mean()), 1.0, rel_tol=1e-5)  # log-probabilities: a distribution


def test_batchnorm_network_exported_channels_last_matches(tmp_path):
    """Issue 34: a BatchNorm network stored channels-last (``run.channels_last``) exports and matches."""
    meta = DatasetMeta("toy", 3, 3, (16, 16), (0.5,) * 3, (0.25,) * 3, CLASSES)
    torch.manual_seed(0)
    model = build_model(ensemble_spec("small_cnn", 1), meta).eval()
    _randomise_batchnorm(model, 0)
    x = torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        contiguous = UncertaintyDeployable(model, {}).eval()(x)[0]
    to_channels_last(model)
    conv = next(p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    check = export_onnx_checked(model, {"kind": "ensemble"}, x, tmp_path / "cl.onnx")
    assert check["ok"] and check["self_contained"] and check["max_abs_diff"] <= ONNX_TOLERANCE
    with torch.no_grad():  # and the channels-last module is the contiguous one's function
        assert torch.allclose(UncertaintyDeployable(model, {}).eval()(x)[0], contiguous, atol=1e-5)


def test_onnx_metadata_reads_an_imported_teachers_normalization():
    """An imported teacher standardises with the statistics its members were trained with (its spec), not the
    dataset's: the file must say which."""
    from distill.export import onnx_metadata

    meta = {"channels": 1, "size": [8, 8], "mean": [0.3], "std": [0.2], "class_names": ["a", "b"]}
    own = {"kind": "ensemble", "archs": ["x"], "normalization": {"mean": [0.5], "std": [0.25]}}
    props = onnx_metadata({"meta": meta, "spec": own, "role": "teacher"}, 1)
    assert json.loads(props["normalization_mean"]) == [0.5] and json.loads(props["normalization_std"]) == [0.25]
    props = onnx_metadata({"meta": meta, "spec": {"kind": "ensemble"}, "role": "teacher"}, 1)
    assert json.loads(props["normalization_mean"]) == [0.3]
