"""What the benchmark runs: sizes per device (default, ``quick``), the models, the batches, the epoch's data."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from distill import UserError, unknown
from distill.data.base import DatasetMeta, Splits
from distill.models import ARCHS, DistillModel, build_model, ensemble_spec

# Architectures for 32x32 colour images; every other one is benchmarked on grey digits-/MNIST-sized images.
COLOUR_ARCHS = ("resnet18", "resnet20", "resnet32", "wrn16_2", "wrn28_10")
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class BenchConfig:
    device: str
    arch: str
    members: int
    batch: int  # per member (teacher), and the student's batch
    channels: int
    size: int  # square images, for the step benchmarks
    reps: int
    warmup: int
    epoch_dataset: str  # "mnist", "cifar10" or "digits" (quick)
    epoch_arch: str
    epoch_members: int
    epoch_batch: int
    epoch_limit: int | None  # training images kept for the epoch (None: all)
    epoch_mixed_precision: str
    matmul_n: int
    inference_batches: tuple[int, ...] = (1, 256)
    num_classes: int = 10
    quick: bool = False
    lam: float = 0.1  # the SDDE weight of the recipes at this size (no effect on the cost)


def bench_config(device: str, model: str | None, quick: bool) -> BenchConfig:
    """The sizes of the issue: CPU: 4 x small_cnn on digits-sized images, batch 64 per member, and an epoch of
    the MNIST teacher recipe; GPU: 5 x resnet18, batch 128 per member, and an epoch of the CIFAR-10 recipe.
    ``quick``: tiny sizes for a smoke test. ``model`` replaces the architecture (sizes follow its family)."""
    if model is not None and model not in ARCHS:
        raise unknown("--model", "architecture", model, ARCHS)
    gpu = device == "cuda"
    if quick:
        arch = model or "tiny_cnn"
        colour = arch in COLOUR_ARCHS
        cfg = BenchConfig(
            device=device, arch=arch, members=2, batch=16, channels=3 if colour else 1, size=32 if colour else 8,
            reps=3, warmup=1, epoch_dataset="cifar10" if colour else "digits", epoch_arch=arch, epoch_members=2,
            epoch_batch=32, epoch_limit=128, epoch_mixed_precision="no", matmul_n=256,
            inference_batches=(1, 64), quick=True,
        )  # fmt: skip
        return cfg
    arch = model or ("resnet18" if gpu else "small_cnn")
    colour = arch in COLOUR_ARCHS
    return BenchConfig(
        device=device, arch=arch, members=5 if gpu else 4, batch=128 if gpu else 64,
        channels=3 if colour else 1, size=32 if colour else 8, reps=20 if gpu else 15, warmup=5 if gpu else 3,
        epoch_dataset="cifar10" if colour else "mnist", epoch_arch=arch, epoch_members=5 if gpu else 4,
        epoch_batch=128, epoch_limit=None, epoch_mixed_precision="bf16" if gpu else "no",
        matmul_n=8192 if gpu else 1024, lam=0.005 if colour else 0.1,
    )  # fmt: skip


def step_meta(cfg: BenchConfig) -> DatasetMeta:
    c, s = cfg.channels, cfg.size
    return DatasetMeta("bench", cfg.num_classes, c, (s, s), (0.5,) * c, (0.25,) * c)


def make_teacher(cfg: BenchConfig, mode: str = "auto") -> DistillModel:
    torch.manual_seed(0)
    model = build_model(ensemble_spec(cfg.arch, cfg.members), step_meta(cfg))
    model.set_member_mode(mode)
    return model.to(cfg.device)


def make_student(cfg: BenchConfig) -> DistillModel:
    torch.manual_seed(1)
    return build_model(ensemble_spec(cfg.arch, 1), step_meta(cfg)).to(cfg.device)


def clone(model: DistillModel, mode: str | None = None) -> DistillModel:
    out = copy.deepcopy(model)
    if mode is not None:
        out.set_member_mode(mode)
    return out


def step_batch(cfg: BenchConfig, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images in [0, 1] ``(views, B, C, H, W)`` and labels ``(views, B)`` on the device (seeded)."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(views, cfg.batch, cfg.channels, cfg.size, cfg.size, generator=g)
    y = torch.randint(cfg.num_classes, (views, cfg.batch), generator=g)
    return x.to(cfg.device), y.to(cfg.device)


# --- the epoch's data ----------------------------------------------------------------------------------------


def synthetic_splits(name: str, like: tuple[int, int, int], n_train: int, n_val: int, n_test: int) -> Splits:
    """Seeded random uint8 images of a dataset's shape (when its files are absent): the cost of an epoch
    depends on the shapes only."""
    c, h, w = like
    g = torch.Generator().manual_seed(0)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8), torch.randint(10, (n,), generator=g)

    (tx, ty), (vx, vy), (sx, sy) = part(n_train), part(n_val), part(n_test)
    meta = DatasetMeta(f"{name}-synthetic", 10, c, (h, w), (0.5,) * c, (0.25,) * c)
    return Splits(meta, tx, ty, vx, vy, sx, sy)


# MNIST's 10,000 IDX test images split as the recipes do (test 20 %, val 10 % of the rest); CIFAR-10's 50,000 /
# 10,000 with 10 % of the training set for validation.
SYNTHETIC_SIZES = {"mnist": ((1, 28, 28), 7200, 800, 2000), "cifar10": ((3, 32, 32), 45000, 5000, 10000)}


def epoch_splits(cfg: BenchConfig, data_root: Path | None) -> tuple[Splits, str, dict]:
    """The epoch's splits, a sentence saying where they came from, and the recipe's data section."""
    from distill.data import load_dataset

    name = cfg.epoch_dataset
    if name == "digits":
        splits = load_dataset("digits", limit_train=cfg.epoch_limit)
        return splits, "digits (scikit-learn, embedded)", {"name": "digits", "augment": True, "crop_padding": 1}
    root = Path(data_root) if data_root is not None else SHARED_DATA / ("mnist" if name == "mnist" else "")
    data_cfg = {"name": name, "root": str(root), "augment": True, "crop_padding": 2 if name == "mnist" else 4}
    if name == "cifar10":
        data_cfg["flip"] = True
    try:
        splits = load_dataset(name, root, limit_train=cfg.epoch_limit)
        source = f"{name} from {root}"
    except UserError as err:
        shape, n_train, n_val, n_test = SYNTHETIC_SIZES[name]
        if cfg.epoch_limit is not None:
            n_train = min(n_train, cfg.epoch_limit)
        splits = synthetic_splits(name, shape, n_train, n_val, n_test)
        source = f"synthetic uint8 data of {name}'s shape ({name} files not found: {str(err)[:120]})"
    return splits, source, data_cfg
