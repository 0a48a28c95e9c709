"""Real dataset loaders (CIFAR-10/100, SVHN, image folders, CIFAR-10-C) on small files written in their real layouts."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill import UserError
from distill.data import base, benchmarks, images, load_dataset, tarstream
from distill.data.benchmarks import CIFAR10C_CORRUPTIONS, load_cifar10c

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpeg.tar.gz"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fail_decode(monkeypatch) -> None:
    def boom(items: list[tuple[str, bytes]]) -> list[torch.Tensor]:
        raise AssertionError(f"decoded {items[0][0]} again")

    monkeypatch.setattr(images, "decode_images", boom)


# ---------------------------------------------------------------------------------------------- CIFAR python


def cifar_batch(n: int, num_classes: int, label_key: bytes, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n)
    batch = {b"batch_label": b"fake", label_key: [int(v) for v in labels], b"data": data, b"filenames": [b"x.png"] * n}
    return batch, data, labels


def dump(obj: object, path: Path, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def write_cifar10(root: Path, protocol: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A cifar-10-batches-py with two training batches of 6 images and a test batch of 4."""
    d = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in (1, 2):
        batch, x, y = cifar_batch(6, 10, b"labels", seed=i)
        dump(batch, d / f"data_batch_{i}", protocol)
        xs.append(x)
        ys.append(y)
    batch, tx, ty = cifar_batch(4, 10, b"labels", seed=9)
    dump(batch, d / "test_batch", protocol)
    dump({b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}, d / "batches.meta", protocol)
    return np.concatenate(xs), np.concatenate(ys), tx, ty


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_python_layout(tmp_path, protocol):
    x, y, tx, ty = write_cifar10(tmp_path, protocol)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the folder itself or its parent
        raw = benchmarks.cifar10(root)
        assert raw.x.shape == (12, 3, 32, 32) and raw.x.dtype == torch.uint8
        assert raw.y.dtype == torch.int64 and raw.y.tolist() == y.tolist()
        assert raw.test_x.shape == (4, 3, 32, 32) and raw.test_y.tolist() == ty.tolist()
        # rows are R (1024), G (1024), B (1024), each row-major 32x32
        assert torch.equal(raw.x[7, 1].flatten(), torch.from_numpy(x[7, 1024:2048]))
        assert torch.equal(raw.test_x[3], torch.from_numpy(tx[3].reshape(3, 32, 32)))
        assert list(raw.class_names) == CIFAR10_NAMES
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()  # optional: without it, no class names
    assert benchmarks.cifar10(tmp_path).class_names == ()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").unlink()
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").unlink()
    with pytest.raises(UserError, match=r"cifar-10-batches-py/data_batch_N not found"):
        benchmarks.cifar10(tmp_path)


def test_cifar100_python_layout(tmp_path):
    d = tmp_path / "cifar-100-python"
    batch, _, y = cifar_batch(8, 100, b"fine_labels", seed=1)
    batch[b"coarse_labels"] = [0] * 8
    dump(batch, d / "train")
    test, _, ty = cifar_batch(3, 100, b"fine_labels", seed=2)
    dump(test, d / "test")
    dump({b"fine_label_names": [f"c{i:03d}".encode() for i in range(100)], b"coarse_label_names": []}, d / "meta")
    raw = benchmarks.cifar100(tmp_path)
    assert raw.x.shape == (8, 3, 32, 32) and raw.y.tolist() == y.tolist()
    assert raw.test_y.tolist() == ty.tolist() and raw.class_names[5] == "c005" and len(raw.class_names) == 100


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    write_cifar10(tmp_path)
    evil = Evil()
    evil.marker = tmp_path / "pwned"
    dump({b"data": evil, b"labels": []}, tmp_path / "cifar-10-batches-py" / "data_batch_2")
    with pytest.raises(UserError, match=r"data_batch_2: .*refused to load '(posix|os)\.system'"):
        benchmarks.cifar10(tmp_path)
    assert not evil.marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1'\ntR.",
        b"cnumpy.testing._private.utils\nrunstring\n(S'1'\n(dtR.",  # a known numpy gadget that runs code
        b"cnumpy\nload\n(S'x.npy'\ntR.",
    ],
)
def test_only_array_globals_are_allowed(tmp_path, payload):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    with pytest.raises(UserError, match=r"test_batch: not a CIFAR python batch file \(refused to load"):
        benchmarks.cifar10(tmp_path)


def test_bad_cifar_batch_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(UserError, match=r"test_batch: expected 'data' as a uint8 array \(N, 3072\)"):
        benchmarks.cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="test_batch: not a CIFAR python batch file"):
        benchmarks.cifar10(tmp_path)


def test_cifar10_python_layout_in_torchvision_archive(tmp_path, monkeypatch):
    x, y, _, _ = write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    raw = benchmarks.cifar10(archive)
    assert torch.equal(raw.x, torch.from_numpy(x.reshape(-1, 3, 32, 32))) and raw.y.tolist() == y.tolist()
    monkeypatch.setattr(benchmarks, "safe_unpickle", None)  # second load: from the cache, no unpickling
    assert torch.equal(benchmarks.cifar10(archive).x, raw.x)


def test_load_dataset_cifar10_splits(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    with pytest.raises(UserError, match="has no images of class"):  # 12 images cannot hold 10 classes per split
        load_dataset("cifar10", tmp_path, val_fraction=0.25)
    monkeypatch.setattr(base, "check_classes", lambda *a: None)  # this test is about the layout's split sizes
    s = load_dataset("cifar10", tmp_path, val_fraction=0.25)
    assert len(s.train_y) + len(s.val_y) == 12 and len(s.val_y) == 3  # val is cut from the official train split
    assert s.test_x.shape == (4, 3, 32, 32)  # the official test split is kept whole
    assert s.meta.num_classes == 10 and s.meta.channels == 3 and s.meta.size == (32, 32)
    assert list(s.meta.class_names) == CIFAR10_NAMES


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "imagefolder"])
def test_missing_root_names_the_path(tmp_path, name):
    with pytest.raises(
        UserError, match=f"dataset '{name}'.*not found at {re.escape(str(tmp_path / 'nowhere'))}.*Give data.root"
    ):
        load_dataset(name, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=f"not found at {re.escape(str(tmp_path / 'empty'))}"):
        load_dataset(name, tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- image folders


def encode(a: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_folder(root: Path, files: dict[str, np.ndarray]) -> None:
    for rel, a in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode(a, "JPEG" if rel.endswith(".jpg") else "PNG"))


def img(value: int, size: tuple[int, int] = (6, 5), grey: bool = False) -> np.ndarray:
    return np.full(size if grey else (*size, 3), value, np.uint8)


def test_imagefolder_directory(tmp_path, cache, monkeypatch):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    files = {
        "train/zebra/a.png": noise,
        "train/ant/b.png": img(10),
        "train/ant/a.png": img(20),
        "train/mole/deep/c.png": img(30),  # images anywhere below a class folder count
        "test/mole/x.png": img(40),
        ".hidden/y.png": img(50),
    }
    write_folder(tmp_path / "data", files)
    (tmp_path / "data" / "train" / "notes.txt").write_text("ignored")
    raw = images.imagefolder(tmp_path / "data")
    assert raw.class_names == ("ant", "mole", "zebra")  # sorted folder names, like ImageFolder
    assert raw.y.tolist() == [0, 0, 1, 2] and raw.test_y.tolist() == [1]
    assert raw.x.shape == (4, 3, 6, 5) and raw.x.dtype == torch.uint8
    assert raw.x[0].unique().tolist() == [20] and raw.x[1].unique().tolist() == [10]  # a.png before b.png
    assert torch.equal(raw.x[3], torch.from_numpy(noise).permute(2, 0, 1))  # PNG is exact
    assert len(list(cache.glob("imagefolder-*.safetensors"))) == 1 and not list(cache.glob("*.tmp"))
    fail_decode(monkeypatch)
    again = images.imagefolder(tmp_path / "data")
    assert (
        torch.equal(again.x, raw.x) and torch.equal(again.test_y, raw.test_y) and again.class_names == raw.class_names
    )
    write_folder(tmp_path / "data", {"train/ant/c.png": img(60)})  # a new file: a new cache key, decoded again
    with pytest.raises(AssertionError, match="decoded"):
        images.imagefolder(tmp_path / "data")


def test_imagefolder_grey_classes_only_and_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "check_classes", lambda *a: None)  # two images: about formats, not class coverage
    write_folder(tmp_path / "g", {"b/1.png": img(1, grey=True), "a/2.png": img(2, grey=True), "loose.png": img(3)})
    raw = load_dataset("imagefolder", tmp_path / "g", test_fraction=0.5, val_fraction=0.0)
    assert raw.meta.channels == 1 and raw.meta.class_names == ("a", "b")  # no test/: cut from all the data
    write_folder(tmp_path / "m", {"a/1.png": img(1, grey=True), "b/2.png": img(2)})
    assert images.imagefolder(tmp_path / "m").x.shape == (2, 3, 6, 5)  # grey made RGB when any image is RGB
    write_folder(tmp_path / "s", {"a/1.png": img(1), "b/2.png": img(2, size=(7, 5))})
    with pytest.raises(UserError, match=r"b/2.png is 5x7 pixels but a/1.png is 5x6"):
        images.imagefolder(tmp_path / "s")
    write_folder(tmp_path / "t", {"train/a/1.png": img(1), "test/c/2.png": img(2)})
    with pytest.raises(UserError, match=r"\['c'\] of the test split"):
        images.imagefolder(tmp_path / "t")
    write_folder(tmp_path / "u", {"a/1.jpg": img(1), "a/2.png": img(1)})
    (tmp_path / "u" / "a" / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"a/bad\.jpg: not a readable image"):
        images.imagefolder(tmp_path / "u")


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_imagefolder_archive_with_top_folder(tmp_path, cache, monkeypatch):
    files = {
        "set/train/dog/0.jpg": encode(img(200, (8, 8)), "JPEG"),
        "set/train/cat/0.png": encode(img(100, (8, 8)), "PNG"),
        "set/train/cat/._0.png": b"macOS metadata",
        "set/test/dog/1.jpg": encode(img(50, (8, 8), grey=True), "JPEG"),
    }
    archive = make_tar(tmp_path / "set.tar.gz", files)
    raw = images.imagefolder(archive)
    assert raw.class_names == ("cat", "dog") and raw.y.tolist() == [0, 1] and raw.test_y.tolist() == [1]
    assert raw.x.shape == (2, 3, 8, 8) and raw.test_x.shape == (1, 3, 8, 8)
    assert abs(int(raw.x[1].float().mean()) - 200) <= 2 and abs(int(raw.test_x.float().mean()) - 50) <= 2  # JPEG
    assert len(list(cache.glob("imagefolder-*.safetensors"))) == 1
    fail_decode(monkeypatch)
    assert torch.equal(images.imagefolder(archive).x, raw.x)  # from the cache
    os.utime(archive, ns=(time.time_ns(), time.time_ns() + 10**9))  # a changed archive is decoded again
    with pytest.raises(AssertionError, match="decoded"):
        images.imagefolder(archive)


def test_damaged_cache_is_rebuilt(tmp_path, cache):
    archive = make_tar(tmp_path / "a.tar.gz", {"a/0.png": encode(img(1), "PNG"), "b/0.png": encode(img(2), "PNG")})
    raw = images.imagefolder(archive)
    (path,) = cache.glob("*.safetensors")
    path.write_bytes(b"garbage")
    assert torch.equal(images.imagefolder(archive).x, raw.x)
    assert path.stat().st_size > 100


def test_cifar10_image_folder_archive(tmp_path):
    files = {f"cifar10/{split}/{c}/{i:04d}.jpg": encode(img(i * 20 + j), "JPEG") for j, c in enumerate(CIFAR10_NAMES)
             for split, i in (("train", 0), ("train", 1), ("test", 2))}  # fmt: skip
    make_tar(tmp_path / "cifar10-jpeg.tar.gz", files)
    s = load_dataset("cifar10", tmp_path, val_fraction=0.0)  # the archive found by name inside data.root
    assert list(s.meta.class_names) == CIFAR10_NAMES and s.train_x.shape == (20, 3, 6, 5)
    # one test image per class; in no particular order: evaluation subsets are drawn, never the split's head
    # (tests/test_report_subsets.py: the report's subsets do not depend on the order on disk)
    assert sorted(s.test_y.tolist()) == list(range(10))
    make_tar(tmp_path / "few.tar.gz", {"train/a/0.jpg": encode(img(1), "JPEG")})
    with pytest.raises(UserError, match="has 10 classes but 1 were found"):
        benchmarks.cifar10(tmp_path / "few.tar.gz")


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_tar_stream_reads_what_tarfile_reads(tmp_path, fmt, compression):
    path = tmp_path / f"a.tar{'.' + compression if compression else ''}"
    long = "d" * 60 + "/" + "e" * 70 + "/f.png"  # > 100 chars: a ustar prefix, a GNU long name, a pax path
    names = ["top/a.png", long, "top/empty", "x" * 120 if fmt != tarfile.USTAR_FORMAT else "x" * 99]
    if fmt == tarfile.PAX_FORMAT:
        names.append("top/ünï.png")
    with tarfile.open(path, f"w:{compression}", format=fmt) as tar:
        top = tarfile.TarInfo("top")
        top.type = tarfile.DIRTYPE
        tar.addfile(top)  # directories, links: skipped
        for i, name in enumerate(names):
            info = tarfile.TarInfo(name)
            data = bytes([i]) * (i * 300) if name != "top/empty" else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("top/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "a.png"
        tar.addfile(link)
    with tarfile.open(path) as tar:
        expected = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    with tarstream.open_stream(path) as f:
        got = dict(tarstream.iter_tar(f, lambda name: True))
    assert got == expected and len(got) == len(names)
    with tarstream.open_stream(path) as f:
        assert [n for n, _ in tarstream.iter_tar(f, lambda name: name.endswith(".png"))] == [
            n for n in names if n.endswith(".png")
        ]


def test_damaged_archives_are_user_errors(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    with pytest.raises(UserError, match=r"junk\.tar\.gz: not a readable tar archive"):
        images.imagefolder(tmp_path / "junk.tar.gz")
    (tmp_path / "junk.tar").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match=r"junk\.tar: not a readable tar archive \(bad tar header at byte 0"):
        images.imagefolder(tmp_path / "junk.tar")
    whole = make_tar(tmp_path / "whole.tar.gz", {"a/0.png": encode(img(1, (64, 64)), "PNG"), "b/0.png": b"x" * 5000})
    data = gzip.decompress(whole.read_bytes())
    (tmp_path / "cut.tar").write_bytes(data[:3000])
    with pytest.raises(UserError, match=r"cut\.tar: not a readable tar archive \(the tar archive ends inside"):
        images.imagefolder(tmp_path / "cut.tar")


# ---------------------------------------------------------------------------------------------- SVHN, CIFAR-10-C


def test_svhn(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": X, "y": np.array([[10], [1], [9], [10], [3]], np.uint8)})
    savemat(tmp_path / "test_32x32.mat", {"X": X[..., :2], "y": np.array([[2], [10]], np.uint8)})
    raw = benchmarks.svhn(tmp_path)
    assert raw.x.shape == (5, 3, 32, 32) and raw.x.dtype == torch.uint8
    assert raw.y.tolist() == [0, 1, 9, 0, 3] and raw.test_y.tolist() == [2, 0]  # 10 is the digit 0
    assert torch.equal(raw.x[4, 2], torch.from_numpy(X[:, :, 2, 4]))  # (H, W, C, N) -> (N, C, H, W)
    (tmp_path / "test_32x32.mat").write_bytes(b"nonsense")
    with pytest.raises(UserError, match=r"test_32x32\.mat: not a readable SVHN"):
        benchmarks.svhn(tmp_path)


def test_cifar10c(tmp_path):
    d = tmp_path / "CIFAR-10-C"
    d.mkdir()
    x = np.arange(20 * 32 * 32 * 3, dtype=np.int64).reshape(20, 32, 32, 3).astype(np.uint8)
    np.save(d / "fog.npy", x)
    np.save(d / "labels.npy", np.arange(20) % 10)
    xs, ys = load_cifar10c(tmp_path, "fog", 3)  # the parent of CIFAR-10-C/ works too
    assert xs.shape == (4, 3, 32, 32) and xs.dtype == torch.uint8 and ys.dtype == torch.int64
    assert ys.tolist() == [8, 9, 0, 1] and torch.equal(xs[1], torch.from_numpy(x[9]).permute(2, 0, 1))
    assert len(CIFAR10C_CORRUPTIONS) == 15
    with pytest.raises(UserError, match="expected one of gaussian_noise"):
        load_cifar10c(d, "rain", 1)
    with pytest.raises(UserError, match="severity 6"):
        load_cifar10c(d, "fog", 6)
    with pytest.raises(UserError, match=r"snow\.npy not found"):
        load_cifar10c(d, "snow", 1)
    np.save(d / "snow.npy", np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match=r"snow\.npy: not a readable \.npy"):  # object arrays would unpickle
        load_cifar10c(d, "snow", 1)


# ---------------------------------------------------------------------------------------------- the real archive


@pytest.mark.slow  # decodes all 60,000 JPEGs: minutes
@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason=f"the shared CIFAR-10 archive is not at {SHARED_CIFAR}")
def test_real_cifar10_archive(cache, monkeypatch):
    t = time.perf_counter()
    raw = benchmarks.cifar10(SHARED_CIFAR)
    decode_s = time.perf_counter() - t
    assert raw.x.shape == (50000, 3, 32, 32) and raw.test_x.shape == (10000, 3, 32, 32)
    assert list(raw.class_names) == CIFAR10_NAMES
    assert torch.bincount(raw.y).tolist() == [5000] * 10 and torch.bincount(raw.test_y).tolist() == [1000] * 10
    assert 100 < raw.x.float().mean() < 140
    fail_decode(monkeypatch)
    t = time.perf_counter()
    again = benchmarks.cifar10(SHARED_CIFAR.parent)  # the folder holding the archive works too
    cached_s = time.perf_counter() - t
    assert torch.equal(again.x, raw.x) and torch.equal(again.test_y, raw.test_y)
    print(f"\nCIFAR-10 JPEG archive: decoded in {decode_s:.1f} s, read from the cache in {cached_s:.2f} s")


# ---------------------------------------------------------------------------------------------- image_size, cache_dir


def banded(h: int, w: int) -> np.ndarray:
    """An RGB image whose middle is 200 and whose outer quarter-ish margins (along the longer side) are 10: a centre
    crop keeps only the 200s, a squash or a corner crop keeps 10s too."""
    a = np.full((h, w, 3), 10, np.uint8)
    if w >= h:
        a[:, w * 10 // 32 : w * 22 // 32] = 200
    else:
        a[h * 10 // 32 : h * 22 // 32, :] = 200
    return a


def test_image_size_fits_mixed_sizes_by_resize_and_centre_crop(tmp_path):
    write_folder(
        tmp_path / "d",
        {
            "wide/1.png": banded(8, 32),  # scale 1/2 -> 4x16, cropped to the middle 4 columns: all 200
            "tall/2.png": banded(32, 8),
            "same/3.png": img(77, (4, 4)),  # already 4x4: kept as it is
            "small/4.png": img(33, (2, 2)),  # upscaled
        },
    )
    with pytest.raises(UserError, match=r"set data\.image_size"):  # without it, mixed sizes are still refused
        images.imagefolder(tmp_path / "d")
    raw = base.raw_data("imagefolder", tmp_path / "d", image_size=(4, 4))
    assert raw.class_names == ("same", "small", "tall", "wide") and raw.x.shape == (4, 3, 4, 4)
    assert [x.unique().tolist() for x in raw.x] == [[77], [33], [200], [200]]
    # against torchvision's Resize(shorter side) + CenterCrop, on random pixels where the scale is exact
    tf = pytest.importorskip("torchvision.transforms.v2.functional")
    x = torch.randint(0, 256, (2, 3, 12, 20), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    got = base.fit_images(x, (6, 6))
    want = tf.center_crop(tf.resize(x, [6], antialias=True), [6, 6])
    assert got.shape == (2, 3, 6, 6) and (got.int() - want.int()).abs().max() <= 1
    assert base.fit_images(x, (12, 20)) is x  # no resize asked: the same pixels


def test_image_size_is_part_of_the_cache_key(tmp_path, cache, monkeypatch):
    write_folder(tmp_path / "d", {"a/1.png": banded(8, 32), "b/2.png": img(5, (6, 6))})
    first = base.raw_data("imagefolder", tmp_path / "d", image_size=(4, 4))
    assert [p.name.endswith("-4x4.safetensors") for p in cache.glob("*.safetensors")] == [True]
    fail_decode(monkeypatch)
    assert torch.equal(base.raw_data("imagefolder", tmp_path / "d", image_size=(4, 4)).x, first.x)  # cached
    with pytest.raises(AssertionError, match="decoded"):  # another size: not the 4x4 cache
        base.raw_data("imagefolder", tmp_path / "d", image_size=(2, 2))


def test_image_size_applies_to_stacked_arrays_too(tmp_path):
    x, *_ = write_cifar10(tmp_path)  # CIFAR's python batches: arrays, not files to decode
    raw = base.raw_data("cifar10", tmp_path, image_size=(16, 16))
    assert raw.x.shape == (12, 3, 16, 16) and raw.test_x.shape == (4, 3, 16, 16)
    full = torch.from_numpy(x.reshape(-1, 3, 32, 32))
    assert torch.equal(raw.x, base.fit_images(full, (16, 16)))


def test_recipe_image_size_reaches_the_splits_and_is_checked(tmp_path):
    from distill.recipe import DataCfg, recipe_from_dict

    files = {f"train/{c}/{i}.png": img(i * 10 + (c == "b"), (6 + i % 3, 8)) for c in "ab" for i in range(6)}
    files |= {f"test/{c}/0.png": img(1, (9, 9)) for c in "ab"}
    write_folder(tmp_path / "d", files)
    splits = base.load_splits(DataCfg(name="imagefolder", root=str(tmp_path / "d"), image_size=5, val_fraction=0.5))
    assert splits.meta.size == (5, 5) and splits.train_x.shape[2:] == (5, 5) and splits.test_x.shape[2:] == (5, 5)
    assert DataCfg(image_size=[3, 4]).image_hw() == (3, 4) and DataCfg().image_hw() is None
    for bad in ([0, 4], [1, 2, 3], -2):
        with pytest.raises(UserError, match=r"data\.image_size"):
            recipe_from_dict({"data": {"image_size": bad}})


def test_cache_dir_recipe_beats_env_beats_default(tmp_path, cache, monkeypatch):
    from distill.recipe import DataCfg

    files = {f"train/{c}/{i}.png": img(i * 10 + (c == "b")) for c in "ab" for i in range(4)}
    write_folder(tmp_path / "d", files | {f"test/{c}/0.png": img(1) for c in "ab"})
    mine = tmp_path / "mine"
    base.load_splits(DataCfg(name="imagefolder", root=str(tmp_path / "d"), cache_dir=str(mine), val_fraction=0.5))
    assert len(list(mine.glob("imagefolder-*.safetensors"))) == 1 and not cache.exists()  # the recipe's, not $env
    base.raw_data("imagefolder", tmp_path / "d")
    assert len(list(cache.glob("imagefolder-*.safetensors"))) == 1  # no recipe value: $DISTILL_CACHE
    monkeypatch.delenv("DISTILL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    base.raw_data("imagefolder", tmp_path / "d")
    assert len(list((tmp_path / "xdg" / "distill").glob("imagefolder-*.safetensors"))) == 1  # the default place
    assert images.cache_dir() == tmp_path / "xdg" / "distill"  # the recipe's value held only while loading


def test_image_size_is_part_of_the_same_data():
    from distill.data.identity import data_differences

    def run(image_size: object, size: list[int] | None) -> dict:
        return {"meta": {"size": size} if size else {}, "data": {"image_size": image_size}}

    assert data_differences(run(None, [32, 32]), run([32, 32], [32, 32])) == []  # nothing resized: same pixels
    assert data_differences(run([32, 32], [32, 32]), run(32, [32, 32])) == []  # an int is a square
    assert data_differences(run([32, 32], None), run(None, None)) == []  # before loading: not yet known
    diffs = data_differences(run([32, 32], [32, 32]), run(24, [24, 24]), cand_label="student")
    assert "data.image_size [24, 24] (student) vs [32, 32] (teacher)" in diffs
    assert data_differences(run([32, 32], None), run([24, 32], None)) == [
        "data.image_size [24, 32] vs [32, 32] (teacher)"
    ]
