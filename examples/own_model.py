"""Bring your own model: an ordinary ``nn.Module`` (logits only) as a 3-member teacher and as a student, through the
Python API, on scikit-learn's digits; then the gap report, and the student's ONNX file run alone with onnxruntime.

    python examples/own_model.py [OUT] [--quick]

OUT defaults to a new temporary folder. ``--quick``: one epoch on 300 images and a smaller report (what
tests/test_examples.py runs). Under 2 minutes on 2 CPU cores without it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill import api
from distill.models.contract import DataMeta


class MyNet(nn.Module):
    """Defined here, not registered anywhere: ``x (B, C, H, W) -> logits (B, K)``. distill gives its Grad-CAM
    feature maps from a hook on the last ``nn.Conv2d`` (``cam_layer=`` names another layer)."""

    def __init__(self, meta: DataMeta, width: int = 16) -> None:
        super().__init__()
        h, w = meta.size
        self.body = nn.Sequential(
            nn.Conv2d(meta.channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(width * (h // 2) * (w // 2), meta.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def my_net(meta: DataMeta) -> nn.Module:
    """The model factory: told the data's channels, number of classes and image size."""
    return MyNet(meta)


def my_small_net(meta: DataMeta) -> nn.Module:
    return MyNet(meta, width=8)


def recipe(quick: bool) -> dict:
    train = {"epochs": 1 if quick else 5, "batch_size": 64, "optim": {"name": "sgd", "lr": 0.05}}
    return {
        "seed": 0,
        "data": {"name": "digits", **({"limit_train": 300} if quick else {})},
        "teacher": {"members": 3, "objective": {"name": "de"}, "train": train},
        "student": {"alpha": 0.9, "temperature": 4.0, "train": train},
        "evaluate": {
            "ood": [{"name": "sample_patches", "group": "far"}],  # ships with scikit-learn
            "corruptions": [] if quick else ["gaussian_noise", "contrast"],
            "corruption_limit": 150,
            "diversity_images": 50 if quick else 200,
            "cost": {"enabled": False},
            "bootstrap": 100 if quick else 1000,
        },
    }


def run_onnx_alone(onnx_file: Path, run: Path) -> None:
    """Copy the ONNX file alone into an empty folder and run it there with onnxruntime (no distill, no run folder);
    its test accuracy must be the run's own."""
    import onnxruntime as ort

    _, info = api.load(run)  # model.json: the recipe the run was trained with, and so its test split
    data = api.splits(info["recipe"])
    with tempfile.TemporaryDirectory() as empty:
        alone = Path(empty) / "student.onnx"
        shutil.copy(onnx_file, alone)
        session = ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
        x = (data.test_x.float() / 255).numpy()  # [0, 1] pixels: the normalisation is inside the graph
        log_probs, total, _, _ = session.run(None, {session.get_inputs()[0].name: x})
        props = session.get_modelmeta().custom_metadata_map
    acc = float((log_probs.argmax(1) == data.test_y.numpy()).mean())
    want = api.summary(run)["test"]["acc"]
    print(f"ONNX alone: test acc {acc:.4f} (the run's: {want:.4f}), mean total uncertainty {np.mean(total):.3f} nats")
    assert abs(acc - want) <= 1 / len(x), (acc, want)  # at most one image on a near tie of float rounding
    if "class_names" not in props:  # exports before the metadata change carried none
        print("ONNX metadata: none in this export")
        return
    print(
        f"ONNX metadata: classes {props['class_names']}, input {props.get('input_shape')}, {props.get('value_range')}"
    )
    assert props["role"] == info["role"] == "student"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="output folder (default: a new temporary one)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch, 300 training images")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="distill_own_model_"))
    r = recipe(args.quick)

    teacher = api.train_teacher(r, out / "teacher", members=my_net)  # 3 members of MyNet
    student = api.distill_student(out / "teacher", out / "student", recipe=r, student=my_small_net)
    print(f"teacher test acc {teacher['test']['acc']:.4f}, student {student['test']['acc']:.4f}")

    report = api.evaluate(out / "teacher", out / "report", students=[out / "student"])
    from distill.report import format_gap_table

    print(format_gap_table(report))
    print(f"report: {out / 'report' / 'report.md'}")

    onnx_file, diff = api.export_run(out / "student", "onnx", out / "student.onnx")
    print(f"wrote {onnx_file} (max |ONNX Runtime - PyTorch| {diff:.1e})")
    run_onnx_alone(onnx_file, out / "student")
    return 0


if __name__ == "__main__":
    sys.exit(main())
