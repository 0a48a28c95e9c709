"""Image folders and archives of them, decoded once into uint8 tensors and cached as safetensors.

The layout is torchvision's ``ImageFolder``: ``{train,test}/<class>/<images>`` (``val/`` stands in for a missing
``test/``) or ``<class>/<images>`` with no official test split, as a directory or a ``.tar[.gz|.bz2|.xz]`` read in
one streaming pass (nothing is extracted to disk); one extra top-level folder is allowed. Classes are the sorted
class folder names, as in ``ImageFolder``. Decoding is slow, so the result is cached in ``$DISTILL_CACHE`` (default
``~/.cache/distill``) under a key of the source's absolute path, sizes and modification times.
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
from distill.data.base import RawData, missing, register_dataset
from distill.data.tarstream import iter_tar, open_stream

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CACHE_VERSION = "1"  # bump when what a cache file holds changes
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_CHUNK = 2048  # images decoded per call


# ---------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """``$DISTILL_CACHE``, else ``$XDG_CACHE_HOME/distill``, else ``~/.cache/distill``."""
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
    """``build()``, or what it returned for the same ``name`` and ``key`` before (read from the cache)."""
    path = cache_dir() / f"{name}-{key}.safetensors"
    if path.is_file():
        try:
            return _read_cache(path)
        except Exception as e:  # a damaged or foreign file: decode again and overwrite it
            log.warning("ignoring unreadable dataset cache %s (%s)", path, e)
    log.info("decoding dataset '%s' once; caching it at %s", name, path)
    raw = build()
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
    files: one fails the whole call) and all other formats go to PIL, one by one, which names a bad file."""
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
    return [x if x is not None else _decode_pil(data, source) for x, (source, data) in zip(out, items)]


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
    """Stack decoded images by split. All must share one size; all grey -> 1 channel, else grey is made RGB."""
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
                    f"{source}: {p} is {w}x{h} pixels but {first[0]} is {w0}x{h0}; "
                    "all images of a dataset must share one size (resize them first)"
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
    "{train,test}/<class>/<images> or <class>/<images>; all images of one size, grey or RGB.",
)
def imagefolder(root: Path | None) -> RawData:
    """Any image folder (see the module docstring); the test split is official when it has ``test/`` or ``val/``."""
    if root is None:
        raise missing("imagefolder", root, "the image folder")
    return load_image_folder("imagefolder", root)
