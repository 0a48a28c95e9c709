"""Image folders and archives of them, decoded once into uint8 tensors and cached as safetensors.

The layout is torchvision's ``ImageFolder``: ``{train,test}/<class>/<images>`` (``val/`` stands in for a missing
``test/``) or ``<class>/<images>`` with no official test split, as a directory or a ``.tar[.gz|.bz2|.xz]`` read in
one streaming pass (nothing is extracted to disk); one extra top-level folder is allowed. Classes are the sorted
class folder names, as in ``ImageFolder``. Decoding is slow, so the result is cached in the recipe's
``data.cache_dir``, else ``$DISTILL_CACHE``, else ``~/.cache/distill``, under a key of the source's absolute path,
sizes and modification times, and of ``data.image_size``.

All images of a dataset must share one size, unless ``data.image_size`` is set: then each image is resized (its
shorter side, relative to the target's shape) and centre-cropped to it as it is decoded
(:func:`distill.data.base.fit_images`), before the images are stacked, and the cache holds the fitted images.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import lzma
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from distill import UserError
from distill.data.base import (
    DatasetMeta,
    DecodeOptions,
    RawData,
    conform,
    current_decode_options,
    decode_options,
    fit_images,
    missing,
    register_dataset,
)
from distill.data.tarstream import iter_tar, open_stream

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CACHE_VERSION = "1"  # bump when what a cache file holds changes
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_CHUNK = 2048  # images decoded per call


# ---------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """The recipe's ``data.cache_dir`` (while :func:`distill.data.base.raw_data` loads), else ``$DISTILL_CACHE``,
    else ``$XDG_CACHE_HOME/distill``, else ``~/.cache/distill``."""
    chosen = current_decode_options().cache_dir
    if chosen is not None:
        return chosen
    if os.environ.get("DISTILL_CACHE"):
        return Path(os.environ["DISTILL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "distill"


def source_key(path: Path, files: list[str] | None = None) -> str:
    """A short hash of a source: its absolute path with the size and mtime of the file, or of each of ``files``
    (paths relative to the directory ``path``)."""
    path = path.resolve()
    h = hashlib.sha256(f"{CACHE_VERSION}\0{path}".encode())
    for rel in files if files is not None else [""]:
        st = (path / rel).stat() if rel else path.stat()
        h.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cached(name: str, key: str, build: Callable[[], RawData]) -> RawData:
    """``build()``, or what it returned for the same ``name`` and ``key`` before (read from the cache). Under
    ``data.image_size`` the images are fitted to it before they are cached, and the size is part of the key."""
    size = current_decode_options().image_size
    if size is not None:
        key = f"{key}-{size[0]}x{size[1]}"
    path = cache_dir() / f"{name}-{key}.safetensors"
    if path.is_file():
        try:
            return _read_cache(path)
        except Exception as e:  # a damaged or foreign file: decode again and overwrite it
            log.warning("ignoring unreadable dataset cache %s (%s)", path, e)
    log.info("decoding dataset '%s' once; caching it at %s", name, path)
    raw = build()
    if size is not None:  # loaders that read stacked arrays (CIFAR's batches) come here unfitted
        raw.x = fit_images(raw.x, size)
        raw.test_x = fit_images(raw.test_x, size) if raw.test_x is not None else None
    try:
        _write_cache(path, raw)
    except Exception as e:  # the cache only saves time: a full disk or a read-only home must not stop the run
        log.warning("could not write the dataset cache %s (%s); it will be decoded again next time", path, e)
    return raw


def _write_cache(path: Path, raw: RawData) -> None:
    from safetensors.torch import save_file

    tensors = {"x": raw.x, "y": raw.y}
    if raw.test_x is not None:
        tensors |= {"test_x": raw.test_x, "test_y": raw.test_y}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    os.close(fd)
    try:
        meta = {"version": CACHE_VERSION, "class_names": json.dumps(list(raw.class_names))}
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_cache(path: Path) -> RawData:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {meta.get('version')!r}, expected {CACHE_VERSION!r}")
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is not a mapping)
    return RawData(t["x"], t["y"], t.get("test_x"), t.get("test_y"), tuple(json.loads(meta["class_names"])))


# ---------------------------------------------------------------------------------------------- decoding


def _jpeg_decoder() -> Callable | None:
    try:
        from torchvision.io import decode_jpeg
    except ImportError:  # torchvision 0.29 deprecates its decoders (for torchcodec): PIL does it all, ~2x slower
        return None
    return decode_jpeg


def _decode_pil(data: bytes, source: str) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            a = np.asarray(im.convert("L" if im.mode in _GREY_MODES else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"{source}: not a readable image ({e})") from None
    return torch.from_numpy(a.copy()).unsqueeze(0) if a.ndim == 2 else torch.from_numpy(a.transpose(2, 0, 1).copy())


def decode_images(items: list[tuple[str, bytes]]) -> list[torch.Tensor]:
    """Encoded images ``(source, bytes)`` -> ``(C, H, W)`` uint8 tensors with C = 1 (grey) or 3 (RGB; alpha dropped,
    palettes expanded). JPEGs go to libjpeg-turbo (torchvision) in one call; what it cannot do (CMYK, damaged
    files: one fails the whole call) and all other formats go to PIL, one by one, which names a bad file. Under
    ``data.image_size`` each is fitted to it at once (:func:`distill.data.base.fit_images`), so a folder of large
    photos never sits in memory at full size."""
    out: list[torch.Tensor | None] = [None] * len(items)
    jpegs = [i for i, (source, _) in enumerate(items) if source.lower().endswith((".jpg", ".jpeg"))]
    decode_jpeg = _jpeg_decoder() if jpegs else None
    if decode_jpeg is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its deprecation warning, once per call
                got = decode_jpeg([torch.frombuffer(bytearray(items[i][1]), dtype=torch.uint8) for i in jpegs])
            for i, x in zip(jpegs, got):
                out[i] = x if x.shape[0] in (1, 3) else None
        except (RuntimeError, ValueError):
            pass
    decoded = [x if x is not None else _decode_pil(data, source) for x, (source, data) in zip(out, items)]
    size = current_decode_options().image_size
    return decoded if size is None else [fit_images(x.unsqueeze(0), size)[0] for x in decoded]


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _parts(name: str) -> list[str] | None:
    """A member path as components, or None for what is not data (hidden files such as macOS ``._x.jpg``)."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return None if not parts or any(p.startswith(".") for p in parts) else parts


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def scan_archive(
    path: Path, keep: Callable[[list[str]], bool] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, bytes]]:
    """One streaming pass over a tar archive: decoded images by member path (normalised: no ``./``), and the
    bytes of the other members for which ``keep(path components)`` is true."""
    images: dict[str, torch.Tensor] = {}
    blobs: dict[str, bytes] = {}
    pending: list[tuple[str, bytes]] = []

    def flush() -> None:
        for (rel, _), x in zip(pending, decode_images([(f"{path}:{rel}", data) for rel, data in pending])):
            images[rel] = x
        pending.clear()

    def want(name: str) -> bool:
        return _is_image(name) or (keep is not None and (parts := _parts(name)) is not None and keep(parts))

    try:
        with open_stream(path) as f:
            for name, data in iter_tar(f, want):
                parts = _parts(name)
                if parts is None:
                    continue
                rel = "/".join(parts)
                if _is_image(rel):
                    pending.append((rel, data))
                    if len(pending) >= _CHUNK:
                        flush()
                else:
                    blobs[rel] = data
    except (ValueError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:  # ValueError: tarstream.TarFormatError too
        raise UserError(f"{path}: not a readable tar archive ({e})") from None
    flush()
    return images, blobs


def list_images(root: Path) -> list[str]:
    """Image files under a directory, as sorted relative POSIX paths (hidden files and folders skipped)."""
    out = []
    for d, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        rel = Path(d).relative_to(root).as_posix()
        out += [f if rel == "." else f"{rel}/{f}" for f in files if not f.startswith(".")]
    return sorted(f for f in out if f.lower().endswith(IMAGE_EXTENSIONS))


# ---------------------------------------------------------------------------------------------- layout


Plan = tuple[tuple[str, ...], dict[str, list[tuple[str, int]]]]


def plan(paths: list[str], source: str) -> Plan:
    """Which image is in which split and class: ``(class names, {"train": [(path, label)], "test": [...]})``.

    ``train/`` + ``test/`` (or ``val/``) of ``<class>/`` folders, else ``<class>/`` folders only (no test split);
    a single top-level folder around either is looked through. Images anywhere below a class folder count."""
    parts = {p: p.split("/") for p in paths}
    tops = {ps[0] for ps in parts.values()}
    if len(tops) == 1 and not tops & {"train", "test", "val"} and all(len(ps) >= 3 for ps in parts.values()):
        parts = {p: ps[1:] for p, ps in parts.items()}  # one top-level folder, e.g. cifar10/{train,test}/...
        tops = {ps[0] for ps in parts.values()}
    if "train" in tops:
        test_dir = "test" if "test" in tops else "val" if "val" in tops else None
        dirs = {"train": "train", "test": test_dir} if test_dir else {"train": "train"}
        found = {s: [(p, ps[1]) for p, ps in parts.items() if ps[0] == d and len(ps) >= 3] for s, d in dirs.items()}
    else:
        found = {"train": [(p, ps[0]) for p, ps in parts.items() if len(ps) >= 2]}
    classes = tuple(sorted({c for _, c in found["train"]}))
    if not classes:
        raise UserError(f"{source}: no images in <class>/ folders (expected {{train,test}}/<class>/* or <class>/*)")
    extra = sorted({c for _, c in found.get("test", [])} - set(classes))
    if extra:
        raise UserError(f"{source}: class folder(s) {extra} of the test split have no folder in train/")
    index = {c: i for i, c in enumerate(classes)}
    return classes, {s: sorted(((p, index[c]) for p, c in f), key=lambda t: (t[1], t[0])) for s, f in found.items()}


def assemble(images: dict[str, torch.Tensor], layout: Plan, source: str) -> RawData:
    """Stack decoded images by split. All must share one size (under ``data.image_size`` :func:`decode_images`
    has fitted them); all grey -> 1 channel, else grey is made RGB."""
    classes, members = layout
    first = None
    for items in members.values():
        for p, _ in items:
            size = tuple(images[p].shape[1:])
            if first is None:
                first = (p, size)
            elif size != first[1]:
                (h, w), (h0, w0) = size, first[1]
                raise UserError(
                    f"{source}: {p} is {w}x{h} pixels but {first[0]} is {w0}x{h0}; all images of a dataset must "
                    "share one size: set data.image_size: [H, W] to resize and centre-crop them as they load"
                )
    channels = 3 if any(images[p].shape[0] == 3 for items in members.values() for p, _ in items) else 1

    def stack(items: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([images[p].expand(channels, -1, -1) for p, _ in items])
        return x, torch.tensor([label for _, label in items], dtype=torch.int64)

    x, y = stack(members["train"])
    test_x, test_y = stack(members["test"]) if members.get("test") else (None, None)
    return RawData(x, y, test_x, test_y, class_names=classes)


def load_image_folder(name: str, root: Path) -> RawData:
    """An image-folder directory or archive (see the module docstring), decoded once and cached under ``name``."""
    if is_archive(root) and root.is_file():

        def build() -> RawData:
            images, _ = scan_archive(root)
            return assemble(images, plan(sorted(images), str(root)), str(root))

        return cached(name, source_key(root), build)
    elif root.is_dir():
        files = list_images(root)
        if not files:
            raise missing(name, root, "images in <class>/ folders")
        layout = plan(files, str(root))
        wanted = [p for items in layout[1].values() for p, _ in items]

        def build() -> RawData:
            got: dict[str, torch.Tensor] = {}
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                got.update(zip(chunk, decode_images([(str(root / p), (root / p).read_bytes()) for p in chunk])))
            return assemble(got, layout, str(root))

        return cached(name, source_key(root, wanted), build)
    raise missing(name, root, "an image folder or a .tar/.tar.gz of one")


@register_dataset(
    "imagefolder",
    hint="Give data.root: a folder, or a .tar/.tar.gz of one, laid out as torchvision's ImageFolder reads it: "
    "{train,test}/<class>/<images> or <class>/<images>; grey or RGB; images of one size, or data.image_size set.",
)
def imagefolder(root: Path | None) -> RawData:
    """Any image folder (see the module docstring); the test split is official when it has ``test/`` or ``val/``."""
    if root is None:
        raise missing("imagefolder", root, "the image folder")
    return load_image_folder("imagefolder", root)


# ---------------------------------------------------------------------------------------------- transfer images


def load_transfer(path: str | Path, like: DatasetMeta, cache_dir: str | Path | None = None) -> torch.Tensor:
    """``data.transfer``: every image under ``path`` (a folder or an archive of one, any layout: class folders, if
    any, are not read as labels) as uint8 ``(N, C, H, W)`` in ``like``'s format: fitted to its size (resize and
    centre crop, :func:`distill.data.base.fit_images`) and to its channels. Decoded once and cached like a
    dataset (the key holds the size)."""
    root = Path(path).expanduser()
    flag = f"data.transfer {path}"
    if not root.exists():
        raise UserError(f"{flag}: not found; expected a folder of images or a .tar/.tar.gz of one")
    with decode_options(DecodeOptions(tuple(like.size), Path(cache_dir).expanduser() if cache_dir else None)):
        if root.is_file():
            if not is_archive(root):
                raise UserError(f"{flag}: expected a folder of images or a .tar/.tar.gz of one")
            raw = cached("transfer", source_key(root), lambda: _stack_unlabelled(scan_archive(root)[0], flag))
        else:
            files = list_images(root)
            if not files:
                raise UserError(f"{flag}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it or its folders")

            def build() -> RawData:
                got: dict[str, torch.Tensor] = {}
                for i in range(0, len(files), _CHUNK):
                    chunk = files[i : i + _CHUNK]
                    got.update(zip(chunk, decode_images([(str(root / p), (root / p).read_bytes()) for p in chunk])))
                return _stack_unlabelled(got, flag)

            raw = cached("transfer", source_key(root, files), build)
    return conform(raw.x, like)


def _stack_unlabelled(images: dict[str, torch.Tensor], flag: str) -> RawData:
    if not images:
        raise UserError(f"{flag}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it")
    channels = 3 if any(x.shape[0] == 3 for x in images.values()) else 1
    x = torch.stack([images[p].expand(channels, -1, -1) for p in sorted(images)])  # fitted: one size
    return RawData(x, torch.zeros(len(x), dtype=torch.int64))


def check_transfer_disjoint(transfer_x: torch.Tensor, held_out: dict[str, torch.Tensor | None], path: str) -> None:
    """Refuse transfer images that are also validation, test or held-out-class images (pixel for pixel): a student
    trained on them, even without their labels, would be selected and scored on inputs it has learnt from (the
    folder of a dataset's own test/ split given as data.transfer, say)."""
    seen = {hashlib.sha256(x.numpy().tobytes()).digest() for x in transfer_x.contiguous()}
    for split, x in held_out.items():
        if x is None or not len(x):
            continue
        n = sum(hashlib.sha256(img.numpy().tobytes()).digest() in seen for img in x.contiguous())
        if n:
            raise UserError(
                f"data.transfer {path}: {n} of its images are also in the {split} split; a student must not learn "
                f"from them (remove them, or point data.transfer at images outside the data's {split} split)"
            )
