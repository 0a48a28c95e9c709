"""The standard image benchmarks from the user's own copy, in torchvision's layouts: CIFAR-10, CIFAR-100, SVHN,
and CIFAR-10-C (a function, not a registry entry: it is a corrupted copy of CIFAR-10's test split).

Nothing is downloaded. CIFAR's python layout is pickles: they are read with an unpickler that can build nothing
but plain data and numpy arrays (see :class:`_ArrayUnpickler`).
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill import UserError
from distill.data.base import RawData, missing, register_dataset
from distill.data.images import assemble, cached, is_archive, load_image_folder, plan, scan_archive, source_key

# ---------------------------------------------------------------------------------------------- safe unpickling


def _latin1_encode(s: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1"); only that is allowed.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return s.encode("latin1")


# A pickle runs whatever callables it names, so find_class refuses every global except the few needed to rebuild
# a numpy array: _reconstruct + ndarray + dtype (ndarray.__reduce__, how CIFAR's own files store their data) and
# _frombuffer (ndarray.__reduce_ex__ at protocol 5). Under both module names: numpy.core (numpy 1, the released
# files) and numpy._core (numpy 2). None of them runs code: they allocate an array and fill it with bytes.
_ARRAY = np.zeros(1, np.uint8)
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _ARRAY.__reduce__()[0]
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _ARRAY.__reduce_ex__(5)[0]


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused to load '{module}.{name}' (only plain data and numpy arrays)")
        return _ALLOWED[(module, name)]


def safe_unpickle(data: bytes, source: str) -> object:
    """Unpickle plain data and numpy arrays only; anything else (code, other classes) is a UserError."""
    try:
        # latin1: the released files were written by Python 2, whose str holds the arrays' raw bytes
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError) as e:  # fmt: skip
        raise UserError(f"{source}: not a CIFAR python batch file ({e})") from None


# ---------------------------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _Cifar:
    name: str
    folder: str  # torchvision's folder: cifar-10-batches-py / cifar-100-python
    train: str  # regex of the training files
    test: str
    meta: str
    names_key: str
    label_key: str
    num_classes: int
    archives: tuple[str, ...]  # archive names looked for inside data.root

    def member(self, base: str) -> bool:
        return base in (self.test, self.meta) or re.fullmatch(self.train, base) is not None


CIFAR10 = _Cifar(
    "cifar10", "cifar-10-batches-py", r"data_batch_\d+", "test_batch", "batches.meta", "label_names", "labels", 10,
    ("cifar-10-python.tar.gz", "cifar10.tar.gz", "cifar10-*.tar.gz"),
)  # fmt: skip
CIFAR100 = _Cifar(
    "cifar100", "cifar-100-python", r"train", "test", "meta", "fine_label_names", "fine_labels", 100,
    ("cifar-100-python.tar.gz", "cifar100.tar.gz", "cifar100-*.tar.gz"),
)  # fmt: skip
_CIFAR_HINT = (
    "Give data.root: torchvision's {folder} folder (or its parent, or {archive}), or a folder / .tar.gz of "
    "{{train,test}}/<class>/<images> (the ImageFolder layout, e.g. ../shared/data/cifar10-jpeg.tar.gz)."
)

Files = dict[str, tuple[str, Callable[[], bytes]]]  # base name -> (where, for errors; read it)


def _str(s: object) -> object:
    return s.decode("latin1") if isinstance(s, bytes) else s


def _batch(spec: _Cifar, where: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = safe_unpickle(data, where)
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a pickled dict, got {type(d).__name__}")
    d = {_str(k): v for k, v in d.items()}
    x, y = d.get("data"), d.get(spec.label_key)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        what = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise UserError(f"{where}: expected 'data' as a uint8 array (N, 3072), got {what}")
    try:
        y = np.array(y, dtype=np.int64)
    except (TypeError, ValueError):
        y = None
    if y is None or y.shape != (len(x),) or (len(y) and not 0 <= y.min() <= y.max() < spec.num_classes):
        raise UserError(f"{where}: expected '{spec.label_key}' as {len(x)} ints in 0..{spec.num_classes - 1}")
    return x.reshape(-1, 3, 32, 32), y


def _python_layout(spec: _Cifar, files: Files, source: Path) -> RawData:
    """torchvision's python layout, from ``files`` (a folder's or an archive's)."""
    trains = sorted(
        (b for b in files if re.fullmatch(spec.train, b)), key=lambda b: [int(t) for t in re.findall(r"\d+", b)]
    )
    train_name = spec.train.replace(r"\d+", "N")
    for need, present in ((f"{spec.folder}/{spec.test}", spec.test in files), (f"{spec.folder}/{train_name}", trains)):
        if not present:
            raise missing(spec.name, source, need)

    def read(base: str) -> tuple[np.ndarray, np.ndarray]:
        where, data = files[base]
        return _batch(spec, where, data())

    parts = [read(b) for b in trains]
    test_x, test_y = read(spec.test)
    names: tuple[str, ...] = ()
    if spec.meta in files:
        where, data = files[spec.meta]
        meta = safe_unpickle(data(), where)
        found = {_str(k): v for k, v in meta.items()}.get(spec.names_key) if isinstance(meta, dict) else None
        if not isinstance(found, list) or len(found) != spec.num_classes:
            raise UserError(f"{where}: expected '{spec.names_key}' as a list of {spec.num_classes} names")
        names = tuple(_str(n) for n in found)
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return RawData(x, y, torch.from_numpy(test_x.copy()), torch.from_numpy(test_y), class_names=names)


def _from_archive(spec: _Cifar, archive: Path) -> RawData:
    def build() -> RawData:
        images, blobs = scan_archive(
            archive, keep=lambda ps: len(ps) >= 2 and ps[-2] == spec.folder and spec.member(ps[-1])
        )
        if blobs:
            files = {k.split("/")[-1]: (f"{archive}:{k}", lambda v=v: v) for k, v in blobs.items()}
            return _python_layout(spec, files, archive)
        if images:
            return assemble(images, plan(sorted(images), str(archive)), str(archive))
        raise missing(spec.name, archive, f"{spec.folder}/ or <class>/ image folders inside the archive")

    return cached(spec.name, source_key(archive), build)


def _find(spec: _Cifar, root: Path) -> RawData:
    if root.is_file():
        if not is_archive(root):
            raise UserError(f"{root}: expected a folder or a .tar/.tar.gz archive for dataset '{spec.name}'")
        return _from_archive(spec, root)
    for d in (root, root / spec.folder):
        found = [p for p in d.iterdir() if p.is_file() and spec.member(p.name)] if d.is_dir() else []
        if found:
            return _python_layout(spec, {p.name: (str(p), p.read_bytes) for p in found}, d)
    for d in (root, root / spec.name):
        if (d / "train").is_dir():
            return load_image_folder(spec.name, d)
    for pattern in spec.archives:
        for p in sorted(root.glob(pattern)):
            if p.is_file():
                return _from_archive(spec, p)
    raise missing(spec.name, root, f"{spec.folder}/, {{train,test}}/<class>/ image folders or {spec.archives[0]}")


def _cifar(spec: _Cifar, root: Path | None) -> RawData:
    if root is None or not root.exists():
        raise missing(spec.name, root, f"the {spec.folder} folder or image folder")
    raw = _find(spec, root)
    if raw.class_names and len(raw.class_names) != spec.num_classes:  # no names: a python layout without its meta
        raise UserError(
            f"{root}: dataset '{spec.name}' has {spec.num_classes} classes but {len(raw.class_names)} were found "
            f"({', '.join(raw.class_names[:12])})"
        )
    return raw


@register_dataset("cifar10", hint=_CIFAR_HINT.format(folder=CIFAR10.folder, archive=CIFAR10.archives[0]))
def cifar10(root: Path | None) -> RawData:
    return _cifar(CIFAR10, root)


@register_dataset("cifar100", hint=_CIFAR_HINT.format(folder=CIFAR100.folder, archive=CIFAR100.archives[0]))
def cifar100(root: Path | None) -> RawData:
    return _cifar(CIFAR100, root)


# ---------------------------------------------------------------------------------------------- SVHN


def _read_svhn(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        m = loadmat(path, variable_names=["X", "y"])
    except (MatReadError, OSError, ValueError, NotImplementedError, TypeError) as e:
        raise UserError(f"{path}: not a readable SVHN .mat file ({e})") from None
    x, y = m.get("X"), m.get("y")
    if x is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise UserError(f"{path}: expected 'X' as uint8 (32, 32, 3, N), got {None if x is None else x.shape}")
    if y is None or y.size != x.shape[3] or (y.size and not 0 <= y.min() <= y.max() <= 10):
        raise UserError(f"{path}: expected 'y' as {x.shape[3]} labels in 1..10 (10 is the digit 0)")
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # (H, W, C, N) -> (N, C, H, W)
    return x, torch.from_numpy(y.reshape(-1).astype(np.int64) % 10)


@register_dataset(
    "svhn", hint="Give data.root: the folder with torchvision's SVHN files train_32x32.mat and test_32x32.mat."
)
def svhn(root: Path | None) -> RawData:
    """SVHN cropped digits; label 10 (the digit 0 in the .mat files) becomes 0. Either file alone is all the data."""
    for d in [root, root / "svhn", root / "SVHN"] if root is not None and root.is_dir() else []:
        train, test = d / "train_32x32.mat", d / "test_32x32.mat"
        if train.is_file() or test.is_file():
            parts = [_read_svhn(p) for p in (train, test) if p.is_file()]
            names = tuple(str(i) for i in range(10))
            return RawData(*parts[0], *(parts[1] if len(parts) == 2 else (None, None)), class_names=names)
    raise missing("svhn", root, "train_32x32.mat / test_32x32.mat")


# ---------------------------------------------------------------------------------------------- CIFAR-10-C


CIFAR10C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
CIFAR10C_EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")  # released too, held out in the paper


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy array ({e})") from None


def cifar10c_folder(root: str | Path, corruptions: list[str] | tuple[str, ...]) -> Path:
    """The released CIFAR-10-C folder at ``root`` (or ``root/CIFAR-10-C``) holding ``labels.npy`` and every named
    corruption's ``<corruption>.npy``; a UserError names the first name or file that is not there."""
    bad = [c for c in corruptions if c not in CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA]
    if bad:
        raise UserError(f"CIFAR-10-C corruption '{bad[0]}': expected one of {', '.join(CIFAR10C_CORRUPTIONS)}")
    root = Path(root).expanduser()
    first = corruptions[0] if corruptions else "labels"
    d = next((d for d in (root, root / "CIFAR-10-C") if (d / f"{first}.npy").is_file()), None)
    if d is None:
        raise UserError(
            f"CIFAR-10-C: {first}.npy not found at {root}. Give the CIFAR-10-C folder of the released data "
            "(<corruption>.npy and labels.npy)."
        )
    for name in ("labels", *corruptions):
        if not (d / f"{name}.npy").is_file():
            raise UserError(f"CIFAR-10-C: {name}.npy not found at {d}")
    return d


def load_cifar10c(root: str | Path, corruption: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One corruption at one severity of the released CIFAR-10-C: ``(x uint8 (10000, 3, 32, 32), y int64)``.

    ``root`` is the ``CIFAR-10-C`` folder (or its parent) with ``<corruption>.npy`` (all five severities, 1 to
    5, stacked in blocks of 10,000 images, (50000, 32, 32, 3)) and ``labels.npy``."""
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise UserError(f"CIFAR-10-C severity {severity!r}: expected an integer from 1 to 5")
    d = cifar10c_folder(root, [corruption])
    x, y = _npy(d / f"{corruption}.npy"), _npy(d / "labels.npy")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or len(x) % 5:
        raise UserError(f"{d / f'{corruption}.npy'}: expected uint8 (5 * N, H, W, 3), got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{d / 'labels.npy'}: expected {len(x)} integer labels, got {y.dtype} {y.shape}")
    n = len(x) // 5
    block = slice((severity - 1) * n, severity * n)
    xs = torch.from_numpy(np.ascontiguousarray(x[block].transpose(0, 3, 1, 2)))
    return xs, torch.from_numpy(np.array(y[block], dtype=np.int64))  # a copy: the file is memory-mapped
