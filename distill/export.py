"""Export a trained model to a file that runs without this package: with plain PyTorch, or with ONNX Runtime.

``torchscript`` / ``exported``: the module maps [0, 1] pixels ``(B, C, H, W)`` to the log of the predictive
distribution ``(B, K)``: log of the mean member probability for ensembles, BatchEnsembles and Hydra students,
log-softmax for a single network and for a Dirichlet student (``log(alpha / alpha_0)``), normalisation included.
``exp`` of it is the prediction; argmax is the label.

``onnx``: through the torch.export-based exporter (``torch.onnx.export(..., dynamo=True)``) with a dynamic batch
dimension. Four named outputs, from the model kind's readout (:mod:`distill.students.readout`): ``log_probs
(B, K)`` (as above) and the uncertainty scores ``total``, ``data`` and ``knowledge`` ``(B,)`` in nats
(ensemble-like kinds: entropy of the mean, mean member entropy, mutual information, 0 for one network; the
Dirichlet student: the closed forms of :mod:`distill.metrics.dirichlet`). The file is then checked in a
subprocess that runs it with onnxruntime and cannot import this package, against the checkpoint's PyTorch
outputs on random inputs at batch sizes 1 and 7; the max abs difference over every output is returned, printed
by the CLI and stored next to the file as ``<file>.check.json``.

The ONNX file is one self-contained file: the weights are inside it (``external_data=False``), so it can be copied
alone. Protobuf cannot hold more than 2 GB, so only a model above :data:`ONNX_INLINE_LIMIT` of weights keeps them
in ``<file>.data`` beside it (said in the check). Its ``metadata_props`` (:func:`onnx_metadata`) say what it
takes and returns: class names, input shape, channel order, value range, the normalisation (applied inside the
graph), the meaning of each output, the distill version, and the run's role and kind.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill import UserError
from distill.checkpoint import atomic_write_text, load_model

FORMATS = ("torchscript", "exported", "onnx")
# The files that make a run directory what it is; an export written over one would destroy the run.
RUN_FILES = ("model.safetensors", "state.safetensors", "model.json", "summary.json", "stages.json")
EXPORT_SUFFIXES = (".pt", ".pt2", ".pth", ".ts", ".onnx")  # what an earlier export may be called (and may be replaced)
CHECK_BATCHES = (1, 7)  # two sizes, so the check covers the dynamic batch dimension
ONNX_TOLERANCE = 1e-4
# protobuf's hard limit is 2 GiB for the whole file; leave room for the graph itself
ONNX_INLINE_LIMIT = 2**31 - 2**27
# What each ONNX output means (distill.students.readout.EXPORT_OUTPUTS), written into the file's metadata.
OUTPUT_MEANINGS = {
    "log_probs": "(B, K) float32: log of the predictive distribution; exp() is the probability, argmax the class",
    "total": "(B,) float32, nats: total uncertainty, the entropy of the predictive distribution",
    "data": "(B,) float32, nats: data (aleatoric) uncertainty, the expected entropy (mean member entropy)",
    "knowledge": "(B,) float32, nats: knowledge (epistemic) uncertainty, total - data (mutual information); "
    "0 for one network",
}

# Run in a fresh interpreter (python -I: no PYTHONPATH, no user site, no script directory on sys.path) that is
# barred from importing this package: what it measures is the file alone, as a deployment would run it.
ORT_CHECK = """
import json, sys
sys.modules["distill"] = None
import numpy as np, onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
data = np.load(sys.argv[2])
feed = sess.get_inputs()[0].name
names = [o.name for o in sess.get_outputs()]
worst = {}
for key in sorted(k for k in data.files if k.startswith("x_")):
    b = key[2:]
    for name, got in zip(names, sess.run(None, {feed: data[key]})):
        want = data[name + "_" + b]
        if got.shape != want.shape:
            raise SystemExit(f"{name} at batch {b}: shape {got.shape}, expected {want.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        worst[name] = max(worst.get(name, 0.0), diff)
print(json.dumps({"max_abs_diff": max(worst.values()), "per_output": worst, "onnxruntime": ort.__version__}))
"""


class Deployable(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.log_m = math.log(getattr(model, "size", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(x)  # (M, B, K)
        return torch.logsumexp(logits.float().log_softmax(dim=-1), dim=0) - self.log_m


class UncertaintyDeployable(nn.Module):
    """``x (B, C, H, W)`` -> ``(log_probs (B, K), total (B,), data (B,), knowledge (B,))`` as the kind's readout
    computes them for export."""

    def __init__(self, model: nn.Module, spec: dict) -> None:
        super().__init__()
        from distill.students.readout import readout_for

        self.model = model
        self.readout = readout_for(spec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, _ = self.model(x)
        return self.readout.export_outputs(logits)


def write_onnx(
    model: nn.Module, spec: dict, example: torch.Tensor, path: Path, metadata: dict[str, str] | None = None
) -> tuple[nn.Module, bool]:
    """Write ``model`` as one ONNX file with a dynamic batch dimension and ``metadata`` in its ``metadata_props``;
    returns the module that was exported and whether the file holds its weights (False only over 2 GB).
    Written under a temporary name and renamed: a failed export leaves what was at ``path`` before."""
    from distill.students.readout import EXPORT_OUTPUTS

    net = UncertaintyDeployable(model, spec).eval()
    batch = torch.export.Dim("batch", min=1)
    log = io.StringIO()
    # the exporter reports its progress on stdout; kept out of the CLI's output unless it fails
    with warnings.catch_warnings(), contextlib.redirect_stdout(log), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                net,
                (example,),
                None,  # the program in memory: the metadata is added before anything is written
                dynamo=True,
                external_data=False,
                input_names=["x"],
                output_names=list(EXPORT_OUTPUTS),
                dynamic_shapes={"x": {0: batch}},
            )
        except Exception as err:  # the exporter raises many types; say which model failed and why
            raise UserError(f"ONNX export failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}") from None
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    return net, _save_onnx(proto, Path(path))


def _save_onnx(proto: Any, path: Path) -> bool:
    """Save atomically; True when the weights are inside the file."""
    import onnx

    weights = sum(len(t.raw_data) for t in proto.graph.initializer)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if weights <= ONNX_INLINE_LIMIT:
            onnx.save_model(proto, str(tmp), save_as_external_data=False)
        else:  # over protobuf's 2 GB: the weights must live beside the graph; the name is the final file's
            onnx.save_model(proto, str(tmp), save_as_external_data=True, location=f"{path.name}.data")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return weights <= ONNX_INLINE_LIMIT


def onnx_metadata(info: dict[str, Any], members: int) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` from a run's ``model.json``: what a deployment needs to feed the file
    and read its outputs without this package; ``members``: the model's outputs per input (its ``size``). Values
    are strings; lists and mappings are JSON."""
    import distill

    meta, spec = info.get("meta", {}), info.get("spec", {})
    channels, size = int(meta.get("channels", 0)), list(meta.get("size", []))
    props = {
        "distill_version": distill.__version__,
        "role": str(info.get("role", "")),  # teacher / single / student
        "kind": str(spec.get("kind", "")),  # ensemble / batchensemble / hydra / dirichlet
        "members": str(members),
        "dataset": str(meta.get("name", "")),
        "class_names": json.dumps(list(meta.get("class_names", []))),
        "input_name": "x",
        "input_shape": json.dumps([channels, *size]),  # (C, H, W); the batch dimension is dynamic
        "input_layout": "NCHW, dynamic batch",
        "channel_order": {1: "grey", 3: "RGB"}.get(channels, f"{channels} channels"),
        # The graph starts at Normalized's (x - mean) / std: it takes float pixels, not uint8 (checked by the tests).
        "value_range": "float32 in [0, 1]: uint8 pixels divided by 255",
        "normalization": "applied inside the graph: feed [0, 1] pixels; do not subtract the mean or divide by std",
        # an imported teacher's spec carries the statistics its members were trained with; else the dataset's
        "normalization_mean": json.dumps(list((spec.get("normalization") or {}).get("mean", meta.get("mean", [])))),
        "normalization_std": json.dumps(list((spec.get("normalization") or {}).get("std", meta.get("std", [])))),
        "outputs": json.dumps(OUTPUT_MEANINGS),
    }
    if info.get("name"):
        props["student_name"] = str(info["name"])
    return props


def check_onnx(path: Path, net: nn.Module, shape: tuple[int, ...], batches: tuple[int, ...] = CHECK_BATCHES) -> dict:
    """Run ``path`` with onnxruntime in a subprocess without this package, on seeded random [0, 1] inputs, against
    ``net`` (the PyTorch module exported); returns ``{"max_abs_diff", "per_output", "onnxruntime", ...}``."""
    from distill.students.readout import EXPORT_OUTPUTS

    g = torch.Generator().manual_seed(0)
    arrays: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for b in batches:
            x = torch.rand(b, *shape, generator=g)
            arrays[f"x_{b}"] = x.numpy()
            for name, out in zip(EXPORT_OUTPUTS, net(x)):
                arrays[f"{name}_{b}"] = out.float().numpy()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "check.npz"
        np.savez(data, **arrays)
        proc = subprocess.run(
            [sys.executable, "-I", "-c", ORT_CHECK, str(Path(path).resolve()), str(data)],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise UserError(f"{path}: the onnxruntime check failed: {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(batches=list(batches), inputs="uniform [0, 1] pixels, seed 0", tolerance=ONNX_TOLERANCE)
    result["ok"] = result["max_abs_diff"] <= ONNX_TOLERANCE
    return result


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None, check_batch: int = 8) -> tuple[Path, float]:
    """Write the run's model as ``fmt`` and check it: returns (path, max |exported - checkpoint| on random
    inputs)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    suffix = {"torchscript": ".torchscript.pt", "exported": ".pt2", "onnx": ".onnx"}[fmt]
    path = Path(out) if out is not None else Path(run_dir) / f"model{suffix}"
    check_target(path)
    model, info = load_model(run_dir)
    meta = info["meta"]
    example = torch.rand(check_batch, meta["channels"], *meta["size"], generator=torch.Generator().manual_seed(0))
    if fmt == "onnx":
        props = onnx_metadata(info, getattr(model, "size", 1))
        checked = export_onnx_checked(model, info["spec"], example, path, props)
        return path, checked["max_abs_diff"]
    net = Deployable(model).eval()
    # Written under a temporary name next to the target and renamed once it loads back and matches: a crash
    # or a full disk leaves the old file (or none), never half an export. The temporary name keeps the
    # target's suffix, which torch.export's loader insists on.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            expected = net(example)
            if fmt == "torchscript":
                # torch.jit is deprecated upstream but still the format most C++/mobile runtimes load.
                warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
                scripted = torch.jit.trace(net, example)
                scripted.save(str(tmp))
                loaded = torch.jit.load(str(tmp))
            else:
                batch = torch.export.Dim("batch", min=1)
                program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
                torch.export.save(program, str(tmp))
                loaded = torch.export.load(str(tmp)).module()
            got = loaded(example)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, float((got - expected).abs().max())


def export_onnx_checked(
    model: nn.Module, spec: dict, example: torch.Tensor, path: Path, metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    """Write ``path`` (ONNX, with ``metadata``: :func:`onnx_metadata`), check it under onnxruntime in a subprocess,
    store the check as ``<path>.check.json`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    net, self_contained = write_onnx(model.eval(), spec, example, path, metadata)
    result = check_onnx(path, net, tuple(example.shape[1:]))
    result["self_contained"] = self_contained  # False: the weights are in <path>.data (a model over 2 GB)
    atomic_write_text(path.with_name(path.name + ".check.json"), json.dumps(result, indent=2))
    return result


def check_target(path: Path) -> None:
    """Refuse an export target that would destroy something: a run's own files, a directory, a file that is
    not an earlier export; and one whose directory does not exist."""
    flag = f"--out {path}"
    for name in {path.name, path.resolve().name}:
        if name in RUN_FILES or name.endswith(".safetensors"):
            raise UserError(
                f"{flag}: '{name}' is a run directory's own file; exporting over it would destroy the run "
                f"(choose another name, e.g. model{'.pt2' if path.suffix == '.pt2' else '.torchscript.pt'})"
            )
    if path.is_dir():
        raise UserError(f"{flag}: is a directory; expected a file name, e.g. {path / 'model.torchscript.pt'}")
    if not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise UserError(f"{flag}: directory {path.parent} {what}; create it first or choose another --out")
    if path.exists() and path.suffix not in EXPORT_SUFFIXES:
        raise UserError(
            f"{flag}: exists and is not an earlier export ({', '.join(EXPORT_SUFFIXES)}); refusing to overwrite it"
        )
