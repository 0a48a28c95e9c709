"""An ensemble you already trained as the teacher: three networks trained here with plain PyTorch (as your own
training script would), saved as ``.pt`` and ``.safetensors`` state dicts, imported without retraining, distilled
into a student, and evaluated; the imported teacher's test metrics must equal this script's own evaluation.

    python examples/existing_teacher.py [OUT] [--quick]

OUT defaults to a new temporary folder. ``--quick``: fewer steps and a smaller report (what tests/test_examples.py
runs). Under 2 minutes on 2 CPU cores without it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from distill import api
from distill.models.contract import DataMeta

# The normalisation these networks are trained with: the user's choice, not the data's statistics. The import is
# told it (mean / std), and the teacher run applies it inside the model.
MEAN, STD = 0.5, 0.25


class MyNet(nn.Module):
    """``x (B, C, H, W) -> logits (B, K)``; ``width`` differs between the members."""

    def __init__(self, meta: DataMeta, width: int = 16) -> None:
        super().__init__()
        h, w = meta.size
        self.conv1 = nn.Conv2d(meta.channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width * (h // 2) * (w // 2), meta.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(nn.functional.max_pool2d(a, 2).flatten(1))


def net16(meta: DataMeta) -> nn.Module:
    return MyNet(meta, 16)


def net24(meta: DataMeta) -> nn.Module:
    return MyNet(meta, 24)


def recipe(quick: bool) -> dict:
    """Its ``data`` section says which data the teacher belongs to; ``student`` and ``evaluate`` what follows."""
    student_train = {"epochs": 1 if quick else 8, "batch_size": 64, "optim": {"name": "sgd", "lr": 0.05}}
    return {
        "seed": 0,
        "data": {"name": "digits"},
        "student": {"arch": "small_cnn", "train": student_train},
        "evaluate": {
            "ood": [{"name": "sample_patches", "group": "far"}],
            "corruptions": [] if quick else ["gaussian_noise", "contrast"],
            "corruption_limit": 150,
            "diversity_images": 50 if quick else 200,
            "cost": {"enabled": False},
            "bootstrap": 100 if quick else 1000,
        },
    }


def train_plain(factory, data, seed: int, steps: int) -> nn.Module:
    """Plain PyTorch on the recipe's TRAINING split only (the test split is the report's)."""
    torch.manual_seed(seed)
    meta = DataMeta(data.meta.channels, data.meta.num_classes, tuple(data.meta.size))
    net = factory(meta)
    x = (data.train_x.float() / 255 - MEAN) / STD
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(net(x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def own_evaluation(nets: list[nn.Module], data) -> tuple[float, float]:
    """Accuracy and NLL of the mean member probability on the test split, written here, not taken from distill."""
    x = (data.test_x.float() / 255 - MEAN) / STD
    probs = torch.stack([net(x).softmax(-1) for net in nets]).mean(0).double()
    acc = (probs.argmax(-1) == data.test_y).double().mean().item()
    nll = -probs.gather(1, data.test_y[:, None]).log().mean().item()
    return acc, nll


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="output folder (default: a new temporary one)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer steps, a smaller report")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="distill_existing_teacher_"))
    out.mkdir(parents=True, exist_ok=True)
    r = recipe(args.quick)
    data = api.splits(r)

    # 1. "your" ensemble: three networks, two formats
    factories = [net16, net24, net16]
    nets = [train_plain(f, data, seed, steps=100 if args.quick else 300) for seed, f in enumerate(factories)]
    files = [out / "member0.pt", out / "member1.safetensors", out / "member2.pt"]
    for net, f in zip(nets, files):
        if f.suffix == ".pt":
            torch.save(net.state_dict(), f)
        else:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(f))

    # 2. import: no training; the test metrics are computed as a trained teacher's are
    summary = api.import_teacher(files, out / "teacher", arch=factories, recipe=r, mean=MEAN, std=STD)
    acc, nll = own_evaluation(nets, data)
    got = summary["test"]
    print(
        f"imported teacher: acc {got['acc']:.4f} nll {got['nll']:.4f}; this script's own: acc {acc:.4f} nll {nll:.4f}"
    )
    assert got["acc"] == acc and math.isclose(got["nll"], nll, rel_tol=1e-5), (got, acc, nll)

    # 3. distil it and report the gap
    student = api.distill_student(out / "teacher", out / "student", recipe=r)
    print(f"student (small_cnn): acc {student['test']['acc']:.4f}")
    report = api.evaluate(out / "teacher", out / "report", students=[out / "student"])
    metrics = report["models"]["teacher"]["metrics"]
    assert metrics["acc"] == acc and math.isclose(metrics["nll"], nll, rel_tol=1e-5), (metrics, acc, nll)
    from distill.report import format_gap_table

    print(format_gap_table(report))
    print(f"report: {out / 'report' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
