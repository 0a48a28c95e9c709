"""Small grey datasets: scikit-learn's digits and photo patches (embedded) and IDX files (MNIST, notMNIST,
Fashion-MNIST)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from distill import UserError
from distill.data.base import RawData, missing, register_dataset


@register_dataset("digits", hint="It ships inside scikit-learn and needs no files.")
def digits(root: Path | None) -> RawData:
    """scikit-learn's ``load_digits``: 1,797 8x8 grey digits with values 0..16, scaled to 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    return RawData(x=x, y=torch.from_numpy(d.target.astype(np.int64)))


@register_dataset("sample_patches", hint="It ships inside scikit-learn and needs no files.")
def sample_patches(root: Path | None) -> RawData:
    """2,000 grey 32x32 patches cut at seeded positions from scikit-learn's two bundled photos (china.jpg,
    flower.jpg): natural-image texture with no digit or object class, an OOD set that ships with the install.
    Labels are all 0 (an OOD set has none); :func:`~distill.data.base.load_ood` resizes them to the model."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    patches = []
    for img in load_sample_images().images:  # (427, 640, 3) uint8 each
        grey = np.round(img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        h, w = grey.shape
        for i, j in zip(rng.integers(0, h - 32, 1000), rng.integers(0, w - 32, 1000)):
            patches.append(grey[i : i + 32, j : j + 32])
    x = torch.from_numpy(np.stack(patches)).unsqueeze(1)  # (2000, 1, 32, 32)
    return RawData(x=x, y=torch.zeros(len(x), dtype=torch.int64))


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): the MNIST format."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except gzip.BadGzipFile:
        raise UserError(f"{path}: not a gzip file (expected a gzipped IDX file, as the .gz name says)") from None
    except (EOFError, zlib.error) as err:  # a cut download ends the stream early
        raise UserError(f"{path}: truncated or corrupt gzip data ({err}); download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(data[2])
    if dtype is None:
        raise UserError(f"{path}: unknown IDX data type {data[2]:#x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = len(data) - 4 - 4 * ndim
    itemsize = np.dtype(dtype).itemsize
    if body != int(np.prod(shape)) * itemsize:
        raise UserError(f"{path}: header says shape {shape} but holds {body // itemsize} values (truncated?)")
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    return arr.reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        for p in (root / name, root / "raw" / name):
            if p.is_file():
                return p
    return None


IDX_CLASSES = 10  # MNIST, notMNIST (letters A-J) and Fashion-MNIST all have 10 classes


def idx_pair(root: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images and labels from ``{prefix}-images-idx3-ubyte[.gz]`` and ``{prefix}-labels-idx1-ubyte[.gz]``."""
    img, lab = _find(root, f"{prefix}-images-idx3-ubyte"), _find(root, f"{prefix}-labels-idx1-ubyte")
    if img is None or lab is None:
        return None
    images, labels = read_idx(img), read_idx(lab)
    # a cast would silently wrap or truncate other types (float pixels, int32 labels of 300)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"{img}: expected uint8 images (N, H, W), got {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserError(f"{lab}: expected integer labels (N,), got {labels.dtype} of shape {labels.shape}")
    bad = (labels < 0) | (labels >= IDX_CLASSES)
    if bad.any():
        i = int(bad.argmax())
        raise UserError(
            f"{lab}: label {int(labels[i])} at index {i} is outside 0..{IDX_CLASSES - 1} "
            f"({int(bad.sum())} labels out of range; the IDX datasets have {IDX_CLASSES} classes)"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    if len(x) != len(y):
        raise UserError(f"{img}: {len(x)} images but {lab} has {len(y)} labels")
    return x, y


def idx_dataset(name: str, root: Path | None) -> RawData:
    """An IDX directory: ``train-*`` and ``t10k-*`` files; with only ``t10k-*``, that is all the data
    (the seeded splits of :func:`~distill.data.base.load_dataset` then cut it into train / val / test)."""
    if root is None or not root.is_dir():
        raise missing(name, root, "the IDX directory")
    test = idx_pair(root, "t10k")
    train = idx_pair(root, "train")
    if test is None and train is None:
        raise missing(name, root, "t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz]")
    if train is None:
        return RawData(x=test[0], y=test[1])
    if test is None:
        return RawData(x=train[0], y=train[1])
    return RawData(x=train[0], y=train[1], test_x=test[0], test_y=test[1])


_IDX_HINT = "Give data.root: a directory holding the IDX files (e.g. ../shared/data/{})."
for _name in ("mnist", "notmnist", "fashion_mnist"):
    register_dataset(_name, hint=_IDX_HINT.format(_name))(lambda root, _n=_name: idx_dataset(_n, root))
