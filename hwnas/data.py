"""Image-classification data as uint8 tensors, loaded once (then kept on the training device).

Accepted sources (all given as explicit paths by the CLI):

* an ImageFolder tree: ``ROOT/train/<class>/<image>`` and ``ROOT/test/<class>/<image>`` (``val/`` is
  accepted for the held-out split, as in Imagenette), e.g. the archives in ``shared/data`` unpacked;
* an archive of such a tree (``.tar.xz``, ``.tar.gz``, ``.tgz``, ``.tar``), decoded straight from its members
  (nothing is unpacked to disk);
* torchvision's CIFAR-10 folder (``ROOT/cifar-10-batches-py``), downloadable on connected machines;
* hwnas's own cache file (``.npz``: uint8 arrays, loaded without pickle).

Every archive or folder is decoded once and the result cached as one ``.npz`` in the cache folder (see
``cache_entries``): an archive's keyed on its content (sha256), a folder's on its path and on every image's
name, size and time. Data that cannot rank networks (one class, a class without training or held-out
images) is refused. A fixed validation split (``val_size`` images, stratified, seed 0, independent of any
training seed) is carved from the training split: a search sees train/val only; the test split is for final
reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import lzma
import math
import os
import re
import shutil
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from hwnas.procs import process_alive, process_tag
from hwnas.units import dumps_strict

ARCHIVE_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(ValueError):
    """Missing, unreadable or malformed data. One-line message that says what to do."""


@dataclass
class ImageData:
    """Whole splits as arrays: ``x`` uint8 (N, H, W, 3), ``y`` int64 (N,)."""

    name: str
    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_validation(self, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray]:
        """(train_x, train_y, val_x, val_y): a stratified, seeded hold-out of ``val_size`` training images."""
        n = len(self.train_y)
        if not 0 < val_size < n:
            raise DataError(f"validation size {val_size} must be between 1 and {n - 1} (training images)")
        rng = np.random.default_rng(seed)
        per_class = {c: rng.permutation(np.flatnonzero(self.train_y == c)) for c in range(self.num_classes)}
        take = np.zeros(n, dtype=bool)
        counts = {c: len(ix) for c, ix in per_class.items()}
        quota = {c: round(val_size * counts[c] / n) for c in per_class}
        short = val_size - sum(quota.values())
        for c in sorted(per_class, key=lambda c: -counts[c])[:abs(short)]:
            quota[c] += 1 if short > 0 else -1
        for c, ix in per_class.items():
            if 0 < counts[c] <= quota[c]:
                raise DataError(f"validation size {val_size} leaves class {self.classes[c]} without training images "
                                f"(it has {counts[c]}): give a smaller validation size or more images")
            take[ix[:quota[c]]] = True
        return self.train_x[~take], self.train_y[~take], self.train_x[take], self.train_y[take]


# ---- cache files ---------------------------------------------------------------------------------
def save_npz(data: ImageData, path: Path) -> None:
    """Write atomically: a hidden temporary file named after this process, renamed into place (removed if the
    write fails; one left by a killed process is removed by the next save into the folder, or ``clear_cache``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{process_tag()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, train_x=data.train_x, train_y=data.train_y, test_x=data.test_x, test_y=data.test_y,
                     classes=np.array(data.classes), name=np.array(data.name), source=np.array(data.source))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# What reading a hostile or damaged .npz (a zip of .npy members) can raise: the zip's structure (BadZipFile,
# struct.error, KeyError: a missing member), its members' streams (zlib.error, EOFError, OSError, an
# encrypted member's RuntimeError, an unknown compression's NotImplementedError) and their .npy headers and
# bytes (ValueError, TypeError, OverflowError). Not MemoryError: the headers are checked against the bytes
# the members hold first (``_npy_header``), so a real one means a real cache too large for this machine.
_NPZ_ERRORS = (OSError, EOFError, KeyError, IndexError, ValueError, TypeError, OverflowError, RuntimeError,
               zipfile.BadZipFile, zlib.error, struct.error)
_NPZ_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes", "name", "source")
_DEFLATE_MAX_RATIO = 1100  # deflate expands at most 1032-fold


def _npy_header(z: zipfile.ZipFile, key: str, size: int) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Member ``key``'s (shape, dtype), refused (ValueError) when the array it claims is larger than the bytes
    the member holds (so that reading it cannot ask for terabytes: ``size`` is the .npz file's own size)."""
    info = z.getinfo(f"{key}.npy")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{key}.npy is compressed with method {info.compress_type}, not stored or deflated")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_MAX_RATIO
    if info.file_size > min(info.compress_size, size) * ratio:
        raise ValueError(f"{key}.npy claims {info.file_size} bytes, more than its {info.compress_size} "
                         "compressed bytes can hold")
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{key}.npy is .npy format version {version[0]}.{version[1]}, not 1.0 or 2.0")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        header = f.tell()
    if any(d < 0 for d in shape):
        raise ValueError(f"{key}.npy claims the shape {shape}")
    if math.prod(shape) * dtype.itemsize > info.file_size - header:
        raise ValueError(f"{key}.npy claims {dtype} {shape}, more than its {info.file_size - header} bytes")
    return shape, dtype


def _read_npz(path: Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """The members ``keys`` of a .npz (no pickle), each header checked before its array is read."""
    size = path.stat().st_size
    out = {}
    with zipfile.ZipFile(path) as z:
        for key in keys:
            _npy_header(z, key, size)
            with z.open(f"{key}.npy") as f:
                out[key] = np.lib.format.read_array(f, allow_pickle=False)
    return out


def _npz_error(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return text.splitlines()[0][:200] if text.strip() else type(e).__name__


def load_npz(path: Path) -> ImageData:
    try:
        z = _read_npz(path, _NPZ_KEYS)
        if z["name"].ndim != 0 or z["classes"].ndim != 1:
            raise ValueError(f"name {z['name'].shape} and classes {z['classes'].shape} must be 0-d and 1-d")
        data = ImageData(str(z["name"]), tuple(str(c) for c in z["classes"]), z["train_x"], z["train_y"],
                         z["test_x"], z["test_y"], str(z["source"]))
    except _NPZ_ERRORS as e:
        raise DataError(f"{path} is not a readable hwnas data cache ({_npz_error(e)}); delete it and "
                        "prepare the data again") from None
    why = _malformed(data)
    if why:
        raise DataError(f"{path} is not an hwnas data cache ({why}); delete it and prepare the data again")
    return data


def _malformed(d: ImageData) -> str | None:
    """Why arrays are not images the trainer takes (uint8 N x H x W x 3, labels 0..classes-1), or None."""
    if not d.classes:
        return "no classes"
    if len(set(d.classes)) != len(d.classes) or not all(d.classes):
        return f"class names empty or repeated: {list(d.classes)[:10]}"
    for split, x, y in (("train", d.train_x, d.train_y), ("test", d.test_x, d.test_y)):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or x.shape[1] != x.shape[2] or len(x) == 0:
            return f"{split} images are {x.dtype} {x.shape}, not uint8 N x S x S x 3"
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            return f"{split} labels are {y.dtype} {y.shape}, not {len(x)} integers"
        if y.min() < 0 or y.max() >= len(d.classes):
            return f"{split} labels lie in {y.min()}..{y.max()}, not 0..{len(d.classes) - 1}"
    if d.train_x.shape[1:] != d.test_x.shape[1:]:
        return f"train images are {d.train_x.shape[1]} px, test images {d.test_x.shape[1]} px"
    return None


# ---- ImageFolder trees ---------------------------------------------------------------------------
def _held_out_dir(root: Path) -> Path | None:
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    return None


def find_imagefolder_root(path: Path) -> Path | None:
    """``path`` itself, or its single subfolder, if it holds ``train/`` and ``test/`` (or ``val/``)."""
    for cand in (path, *(sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else [])):
        if (cand / "train").is_dir() and _held_out_dir(cand) is not None:
            return cand
    return None


def _fit(im: Any, resolution: int | None) -> np.ndarray:
    """A PIL RGB image with its shorter side resized (bicubic) to ``resolution``, then centre-cropped square."""
    from PIL import Image

    if resolution is not None and im.size != (resolution, resolution):
        w, h = im.size
        s = resolution / min(w, h)
        im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
    return np.asarray(im, dtype=np.uint8)


def _decode(src: Path | IO[bytes], resolution: int | None, label: str | None = None) -> np.ndarray:
    """One image file (or an archive member's bytes, named ``label`` in errors) as uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src) as im:
            return _fit(im.convert("RGB"), resolution)
    except UnidentifiedImageError:
        raise DataError(f"cannot decode image {label or src}: not an image format Pillow reads") from None
    except (OSError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {label or src}: {str(e)[:200]}") from None


def resize_images(x: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (N, H, W, 3) images brought to ``resolution`` as an ImageFolder's are when decoded."""
    from PIL import Image

    if x.shape[1:3] == (resolution, resolution):
        return x
    return np.stack([_fit(Image.fromarray(img), resolution) for img in x]) if len(x) else \
        np.empty((0, resolution, resolution, 3), np.uint8)


def _at_resolution(data: ImageData, resolution: int | None) -> ImageData:
    """``data`` with both splits at ``resolution`` (data already decoded: a .npz cache, torchvision CIFAR-10)."""
    if resolution is None or data.resolution == resolution:
        return data
    return ImageData(data.name, data.classes, resize_images(data.train_x, resolution), data.train_y,
                     resize_images(data.test_x, resolution), data.test_y, f"{data.source}, resized to {resolution} px")


def _check_rankable(where: object, classes: tuple[str, ...], train: Iterable[int], held: Iterable[int],
                    held_name: str) -> None:
    """Refuse data whose accuracy cannot rank networks: under 2 classes, a class without images to train on or
    to measure on (its accuracy would be 0 or undefined for every network). ``train``/``held``: counts a class."""
    if len(classes) < 2:
        names = ", ".join(classes[:5])
        raise DataError(f"{where} has {len(classes)} class{'' if len(classes) == 1 else 'es'} ({names}): at least 2 "
                        "are needed to rank networks by accuracy")
    for counts, split in ((train, "training"), (held, held_name)):
        for c, n in zip(classes, counts, strict=True):
            if n == 0:
                raise DataError(f"{where}: class {c} has no {split} images (every class needs training and "
                                "held-out images)")


class _Decoded:
    """Arrays filled image by image in any order, allocated at the first image's size (or ``resolution``)."""

    def __init__(self, counts: dict[str, int], resolution: int | None,
                 progress: Callable[[int, int], None] | None) -> None:
        self.counts, self.res, self.progress = counts, resolution, progress
        self.x: dict[str, np.ndarray] = {}
        self.done, self.total = 0, sum(counts.values())

    def put(self, split: str, j: int, img: np.ndarray, label: object) -> None:
        if not self.x:
            self.res = self.res or img.shape[0]
            self.x = {s: np.empty((n, self.res, self.res, 3), dtype=np.uint8) for s, n in self.counts.items()}
        if img.shape != (self.res, self.res, 3):
            raise DataError(f"{label} is {img.shape[1]}x{img.shape[0]}, others are {self.res}x{self.res}: "
                            f"pass a resolution to resize")
        self.x[split][j] = img
        self.done += 1
        if self.progress and self.done % 500 == 0:
            self.progress(self.done, self.total)


def load_imagefolder(root: Path, name: str, resolution: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> ImageData:
    held = _held_out_dir(root)
    if not (root / "train").is_dir() or held is None:
        raise DataError(f"{root} is not an ImageFolder tree: expected train/ and test/ (or val/) class folders")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders")
    extra = sorted({p.name for p in held.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DataError(f"{held} has classes not in train/: {', '.join(extra[:5])}")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, d in (("train", root / "train"), ("test", held)):
        files[split] = [(f, i) for i, c in enumerate(classes) if (d / c).is_dir()
                        for f in sorted((d / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files[split]:
            raise DataError(f"{d} has no images")
    _check_rankable(root, classes, *(np.bincount([c for _, c in files[s]], minlength=len(classes))
                                     for s in ("train", "test")), held.name)
    out = _Decoded({s: len(items) for s, items in files.items()}, resolution, progress)
    for split, items in files.items():
        for j, (f, _) in enumerate(items):
            out.put(split, j, _decode(f, resolution), f)
    return ImageData(name, classes, out.x["train"], np.array([c for _, c in files["train"]], dtype=np.int64),
                     out.x["test"], np.array([c for _, c in files["test"]], dtype=np.int64), source=str(root))


# ---- archives ------------------------------------------------------------------------------------
# What tarfile can raise on a damaged or hostile archive (KeyError: a link whose target it cannot find).
# Not ValueError: DataError is one, and the plan's and the images' own refusals pass through unchanged; but
# UnicodeDecodeError (a pax header that is not UTF-8, found by the fuzz layer) is tarfile's.
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, KeyError, lzma.LZMAError, zlib.error, UnicodeDecodeError)


def is_archive(path: Path) -> bool:
    return path.is_file() and any(path.name.endswith(s) for s in ARCHIVE_SUFFIXES)


def decode_archive(archive: Path, name: str, resolution: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> ImageData:
    """An archived ImageFolder tree decoded straight from its members, in archive order (one pass over a
    compressed stream): nothing is written to disk. The same arrays, in the same order, as the unpacked
    folder's. Only regular files (and hard links to them) are read, by names inside the tree; symbolic
    links, and names with ``..``, are skipped."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            files: dict[tuple[str, ...], tarfile.TarInfo] = {}
            dirs: set[tuple[str, ...]] = set()
            latest: dict[str, tarfile.TarInfo] = {}  # the members so far by name, as tarfile finds link targets
            data_of: dict[tarfile.TarInfo, tarfile.TarInfo | None] = {}  # a hard link's regular file, or None
            for m in members:
                if m.islnk():  # to a member before it (a link's own target resolved in turn), as tarfile reads it
                    t = latest.get(os.path.normpath(m.linkname))
                    if t is not None and t.islnk():
                        t = data_of[t]
                    data_of[m] = t if t is not None and t.isreg() else None
                latest[os.path.normpath(m.name)] = m
                parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
                if not parts or ".." in parts or not (m.isdir() or m.isreg() or (m.islnk() and data_of[m])):
                    continue  # a hard link to no regular file before it is skipped, as a symbolic link is
                if m.isdir():
                    dirs.add(parts)
                else:
                    files[parts] = m  # a name given twice: the later member, as unpacking would leave it
                dirs.update(parts[:i] for i in range(1, len(parts)))
            classes, items = _archive_plan(archive, files, dirs)
            slot = {m: (split, j) for split, ms in items.items() for j, (m, _) in enumerate(ms)}
            out = _Decoded({s: len(ms) for s, ms in items.items()}, resolution, progress)
            for m in members:  # archive order: a compressed stream is read once, forwards
                if m in slot and (f := tar.extractfile(m)) is not None:
                    split, j = slot[m]
                    with f:
                        out.put(split, j, _decode(io.BytesIO(f.read()), resolution, f"{archive}:{m.name}"),
                                f"{archive}:{m.name}")
    except _TAR_ERRORS as e:
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        first = text.splitlines()[0] if text.strip() else type(e).__name__
        raise DataError(f"cannot unpack {archive}: {first.rstrip(':')} (corrupt or not a tar archive?)") from None
    return ImageData(name, classes, out.x["train"], np.array([c for _, c in items["train"]], dtype=np.int64),
                     out.x["test"], np.array([c for _, c in items["test"]], dtype=np.int64), source=str(archive))


def _archive_plan(archive: Path, files: dict[tuple[str, ...], tarfile.TarInfo], dirs: set[tuple[str, ...]]) \
        -> tuple[tuple[str, ...], dict[str, list[tuple[tarfile.TarInfo, int]]]]:
    """(classes, members of each split with their labels), sorted as in a folder;
    the tree is found, and checked, as ``find_imagefolder_root`` and ``load_imagefolder`` do on disk."""
    def held_of(cand: tuple[str, ...]) -> tuple[str, ...] | None:
        return next(((*cand, h) for h in ("test", "val") if (*cand, h) in dirs), None)

    root = next((c for c in ((), *sorted(d for d in dirs if len(d) == 1))
                 if (*c, "train") in dirs and held_of(c) is not None), None)
    if root is None:
        raise DataError(f"{archive} holds no train/ and test/ (or val/) class folders, nor cifar-10-batches-py/")
    held = held_of(root)
    assert held is not None

    def subdirs(d: tuple[str, ...]) -> set[str]:
        return {x[-1] for x in dirs if len(x) == len(d) + 1 and x[:len(d)] == d}

    train = (*root, "train")
    classes = tuple(sorted(subdirs(train)))
    if not classes:
        raise DataError(f"{archive}: {'/'.join(train)} has no class folders")
    extra = sorted(subdirs(held) - set(classes))
    if extra:
        raise DataError(f"{archive}: {'/'.join(held)} has classes not in train/: {', '.join(extra[:5])}")
    by_dir: dict[tuple[str, ...], list[str]] = {}
    for parts in files:
        if Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES:
            by_dir.setdefault(parts[:-1], []).append(parts[-1])
    items: dict[str, list[tuple[tarfile.TarInfo, int]]] = {}
    for split, d in (("train", train), ("test", held)):
        items[split] = [(files[(*d, c, f)], i) for i, c in enumerate(classes) for f in sorted(by_dir.get((*d, c), []))]
        if not items[split]:
            raise DataError(f"{archive}: {'/'.join(d)} has no images")
    _check_rankable(archive, classes, *(np.bincount([c for _, c in items[s]], minlength=len(classes))
                                        for s in ("train", "test")), held[-1])
    return classes, items


# ---- torchvision CIFAR-10 -------------------------------------------------------------------------
def load_torchvision_cifar10(root: Path, download: bool = False, name: str = "cifar10") -> ImageData:
    from torchvision.datasets import CIFAR10

    try:
        tr = CIFAR10(str(root), train=True, download=download)
        te = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as e:
        raise DataError(f"{root}: {e} (pass --download on a connected machine, or --data-dir with the "
                        f"ImageFolder archive)") from None
    except OSError as e:  # no network (URLError), a full disk, unreadable files
        what = "cannot download CIFAR-10 to" if download else "cannot read CIFAR-10 in"
        raise DataError(f"{what} {root}: {getattr(e, 'reason', None) or e.strerror or e} (pass --data-dir "
                        "with the ImageFolder archive)") from None
    return ImageData(name, tuple(tr.classes), np.asarray(tr.data), np.asarray(tr.targets, dtype=np.int64),
                     np.asarray(te.data), np.asarray(te.targets, dtype=np.int64), f"torchvision CIFAR10 at {root}")


# ---- one entry point ------------------------------------------------------------------------------
MIN_IMAGE_PX = 8  # what the trainer takes (random crops pad 4 pixels)


def load_dataset(path: Path, name: str, cache_root: Path, resolution: int | None = None, download: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> ImageData:
    """Load from any accepted source (see module doc), decoding at most once per source (``cache_root``: the
    cache folder, created when first written; see ``cache_entries``)."""
    data = _load_any(path, name, cache_root, resolution, download, progress)
    if data.resolution < MIN_IMAGE_PX:
        raise DataError(f"{path}: the images are {data.resolution} px; hwnas trains at {MIN_IMAGE_PX} px or more "
                        "(--image-size resizes them)")
    k = data.num_classes
    _check_rankable(path, data.classes, np.bincount(data.train_y, minlength=k), np.bincount(data.test_y, minlength=k),
                    "test")
    return data


def _load_any(path: Path, name: str, cache_root: Path, resolution: int | None, download: bool,
              progress: Callable[[int, int], None] | None) -> ImageData:
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"data cache not found: {path}")
        return _at_resolution(load_npz(path), resolution)
    if (path / "cifar-10-batches-py").is_dir() or (download and not path.exists()):
        return _at_resolution(load_torchvision_cifar10(path, download, name), resolution)
    if is_archive(path):
        digest, replaced = _archive_digest(path, cache_root)
        tag = _resolution_tag(resolution)
        for e in _listing(cache_root):  # the decodings of what this path held before (not another path's)
            m = _ARCHIVE_ENTRY.fullmatch(e.name)
            if replaced and m and m["digest"] == replaced[:16]:
                e.unlink(missing_ok=True)
        cached = next((e for e in _listing(cache_root) if (m := _ARCHIVE_ENTRY.fullmatch(e.name))
                       and m["digest"] == digest[:16] and m["tag"] == tag), None)
        data = _cached(cached, name, path) if cached else None
        if data is None:
            stem = next(path.name.removesuffix(s) for s in ARCHIVE_SUFFIXES if path.name.endswith(s))
            data = decode_archive(path, name, resolution, progress)
            _store(data, cache_root / f"{stem}-{digest[:16]}-{tag}.npz", path)
        return data
    if not path.exists():
        raise DataError(f"data not found: {path} (give an ImageFolder folder, an archive such as "
                        f"cifar10-jpg.tar.xz, a torchvision CIFAR-10 folder, or --download)")
    if not path.is_dir():
        raise DataError(f"{path} is neither a folder, an archive ({', '.join(ARCHIVE_SUFFIXES)}) nor a .npz cache")
    root = find_imagefolder_root(path)
    if root is None:
        raise DataError(f"{path} holds no train/ and test/ (or val/) class folders, nor cifar-10-batches-py/")
    cache, earlier = _folder_cache_file(root, resolution, cache_root)
    data = _cached(cache, name, root) if cache.is_file() else None
    if data is None:
        data = load_imagefolder(root, name, resolution, progress)
        for old in earlier:  # decodings of an earlier state of the folder
            old.unlink(missing_ok=True)
        _store(data, cache, root)
    return data


def _cached(path: Path, name: str, source: Path) -> ImageData | None:
    """A decoding from the cache, labelled as this run asks (None, and the file gone, if it is unreadable:
    derived data, decoded again)."""
    try:
        data = load_npz(path)
    except DataError:
        path.unlink(missing_ok=True)
        return None
    data.name, data.source = name, str(source)
    with contextlib.suppress(OSError):
        os.utime(path)  # "last used" in hwnas cache info
    return data


def _store(data: ImageData, path: Path, source: Path) -> None:
    """Save a decoding into the cache, naming its source by absolute path (``hwnas cache info`` shows it)."""
    try:
        _mark_cache(path.parent)
        for p, _ in _partial_writes(path.parent, dead_only=True):  # left by killed processes
            p.unlink(missing_ok=True)
        save_npz(replace(data, source=str(source.resolve())), path)
    except OSError as e:
        raise DataError(f"cannot write the data cache {path}: {e.strerror or e}") from None


def _resolution_tag(resolution: int | None) -> str:
    return f"r{resolution}" if resolution else "native"


def _folder_cache_file(root: Path, resolution: int | None, cache_root: Path) -> tuple[Path, list[Path]]:
    """Where a folder of the user's is cached: keyed on its path and on every image's name, size and
    modification time (images added, removed, moved or edited: decoded again), and the decodings of the
    same folder at earlier states (removed when the new one is written: one file per folder and size)."""
    tag = _resolution_tag(resolution)
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    path = cache_root / f"{root.name}-{where}-{_tree_signature(root)}-{tag}.npz"
    earlier = [e for e in _listing(cache_root) if e != path and (m := _FOLDER_ENTRY.fullmatch(e.name))
               and m["where"] == where and m["tag"] == tag]
    return path, earlier


def _tree_signature(root: Path) -> str:
    """A hash of the name, size and modification time of every file decoding would read (the images in each
    class folder of ``train/``, ``test/`` and ``val/``; links followed, as decoding does). A link to nothing,
    or a folder that cannot be listed, is refused, as decoding would refuse it."""
    h = hashlib.sha256()
    for split in ("train", "test", "val"):
        if not (root / split).is_dir():
            continue
        for d in sorted(p for p in _folder(root / split) if p.is_dir()):
            for f in sorted(p for p in _folder(d) if p.suffix.lower() in IMAGE_SUFFIXES):
                try:
                    st = f.stat()
                except OSError as e:
                    what = "a symbolic link to a missing file" if f.is_symlink() else e.strerror or str(e)
                    raise DataError(f"cannot read image {f}: {what} (remove it, or restore what it names)") \
                        from None
                h.update(f"{split}/{d.name}/{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode(errors="surrogateescape"))
    return h.hexdigest()[:10]


def _folder(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except OSError as e:
        raise DataError(f"cannot list the folder {d}: {e.strerror or e}") from None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _archive_digest(archive: Path, cache_root: Path) -> tuple[str, str | None]:
    """The sha256 of the archive's bytes (copies and touched files share a decoding), hashed once per
    (path, size, modification time) thanks to a small index in the cache; and the digest this path had
    before if its content changed (no other indexed path holding it), whose decodings are then stale."""
    try:
        st = archive.stat()
        key = str(archive.resolve())
        index = _read_index(cache_root)
        known = index.pop(key, None)
        if known and known[:2] == [st.st_size, st.st_mtime_ns]:
            return known[2], None
        digest = _file_sha256(archive)
    except OSError as e:
        raise DataError(f"cannot read {archive}: {e.strerror or e}") from None
    index[key] = [st.st_size, st.st_mtime_ns, digest]
    for old in list(index)[:-HASH_INDEX_SIZE]:
        del index[old]
    _write_atomically(cache_root / HASH_INDEX, dumps_strict(index))
    replaced = known[2] if known and known[2] != digest and all(v[2] != known[2] for v in index.values()) else None
    return digest, replaced


def _read_index(cache_root: Path) -> dict[str, list[Any]]:
    try:
        raw = json.loads((cache_root / HASH_INDEX).read_text())
    except (OSError, ValueError, RecursionError):  # damaged: the digests are computed again
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, list) and len(v) == 3 and type(v[0]) is int
            and type(v[1]) is int and isinstance(v[2], str) and re.fullmatch(r"[0-9a-f]{64}", v[2])}


def _write_atomically(path: Path, text: str) -> None:
    """Best effort (the hash index only saves time): a reader sees the old file or the new one. Not
    ``hwnas.atomic.write_atomic``: a cache file's temporary name carries the writer's ``process_tag`` (pid and
    start time), which is how ``hwnas cache`` tells a write under way from one a dead process left behind."""
    tmp = path.with_name(f".{path.name}.{process_tag()}.tmp")
    try:
        _mark_cache(path.parent)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


# ---- the cache folder: what is in it, clearing it --------------------------------------------------------
CACHE_MARKER = ".hwnas-cache"  # written into every folder hwnas caches into; `clear_cache` needs it (or old entries)
HASH_INDEX = "archive-hashes.json"
HASH_INDEX_SIZE = 256  # archives whose digest is remembered
TRASH_PREFIX = ".hwnas-trash-"  # a folder being deleted (renamed first, so a killed clear leaves nothing half-read)
_ARCHIVE_ENTRY = re.compile(r"(?P<stem>.+)-(?P<digest>[0-9a-f]{16})-(?P<tag>native|r\d+)\.npz")
_FOLDER_ENTRY = re.compile(r"(?P<name>.+)-(?P<where>[0-9a-f]{10})-(?P<sig>[0-9a-f]{10})-(?P<tag>native|r\d+)\.npz")
_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-(?P<start>\d+|x)\.tmp")
_OLD_PARTIAL = re.compile(r".+\.npz\.tmp\.npz")  # an older hwnas's interrupted save
_OLD_TREE = re.compile(r".+-[0-9a-f]{10}")  # an older hwnas's unpacked archive, with its .complete marker
SAFE_TO_DELETE = ("everything in the cache is derived data: safe to delete (hwnas cache clear); hwnas decodes "
                  "the images again when it next needs them")


@dataclass
class CacheEntry:
    """One thing in the cache folder. ``kind``: ``archive`` / ``folder`` (a decoding, ``details`` from its
    file: source, classes, train, test, resolution), ``old unpacked archive`` (an older hwnas's layout, no
    longer read), ``partial write``, ``interrupted clear``, ``hash index``. ``size``: bytes on disk."""

    path: Path
    kind: str
    size: int
    details: dict[str, Any] = field(default_factory=dict)
    removable: bool = True  # False: a file another process is writing now


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:  # not there (yet), or not a folder
        return []


def _mark_cache(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    marker = root / CACHE_MARKER
    if not marker.exists():
        marker.write_text("hwnas data cache: decoded images, re-created on demand (hwnas cache info|clear)\n")


def disk_usage(path: Path) -> int:
    """Bytes on disk of a file or a folder tree (symbolic links not followed)."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    size = getattr(st, "st_blocks", None)
    total = size * 512 if size is not None else st.st_size
    if path.is_dir() and not path.is_symlink():
        total += sum(disk_usage(p) for p in _listing(path))
    return total


def _partial_writes(root: Path, dead_only: bool = False) -> list[tuple[Path, bool]]:
    """Temporary files of interrupted (or ongoing: alive) writes, with whether their process is alive."""
    out = []
    for p in _listing(root):
        m = _PARTIAL.fullmatch(p.name)
        if m and p.is_file():
            alive = process_alive(int(m["pid"]), m["start"])
        elif _OLD_PARTIAL.fullmatch(p.name) and p.is_file():
            alive = False
        else:
            continue
        if not (dead_only and alive):
            out.append((p, alive))
    return out


def _classify(p: Path) -> str | None:
    name = p.name
    if p.is_symlink():
        return None
    if p.is_file():
        if name == HASH_INDEX:
            return "hash index"
        if _FOLDER_ENTRY.fullmatch(name):
            return "folder"
        if _ARCHIVE_ENTRY.fullmatch(name):
            return "archive"
        if _PARTIAL.fullmatch(name) or _OLD_PARTIAL.fullmatch(name):
            return "partial write"
    elif p.is_dir():
        if name.startswith(TRASH_PREFIX):
            return "interrupted clear"
        if _OLD_TREE.fullmatch(name) and (p / ".complete").is_file():  # (a user's "x-2024010112" has none)
            return "old unpacked archive"
    return None


def describe_npz(path: Path) -> dict[str, Any]:
    """What a cached decoding holds (source, classes, train, test, resolution), read without its images."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            train, test = (_npy_header(z, key, size)[0] for key in ("train_x", "test_x"))
        z = _read_npz(path, ("source", "classes"))
        return {"source": str(z["source"]), "classes": len(z["classes"]), "train": int(train[0]),
                "test": int(test[0]), "resolution": int(train[1])}
    except _NPZ_ERRORS as e:
        return {"error": f"unreadable ({_npz_error(e)})"}


def is_hwnas_cache(root: Path) -> bool:
    """Marked by hwnas, or (an older hwnas's cache, made before the marker) holding only hwnas's entries."""
    if (root / CACHE_MARKER).is_file():
        return True
    items = _listing(root)
    return bool(items) and all(_classify(p) for p in items)


def cache_entries(root: Path) -> tuple[list[CacheEntry], list[Path]]:
    """hwnas's entries in the cache folder ``root`` and the other things in it (not hwnas's: never deleted)."""
    live = {p for p, alive in _partial_writes(root) if alive}
    entries, others = [], []
    for p in _listing(root):
        if p.name == CACHE_MARKER:
            continue
        kind = _classify(p)
        if kind is None:
            others.append(p)
            continue
        details: dict[str, Any] = describe_npz(p) if kind in ("archive", "folder") else {}
        try:
            details["last_used"] = p.lstat().st_mtime
        except OSError:
            continue  # deleted meanwhile
        entries.append(CacheEntry(p, kind, disk_usage(p), details, removable=p not in live))
    return entries, others


def clear_cache(root: Path) -> tuple[int, int, list[str]]:
    """Delete hwnas's entries in ``root``: (bytes freed, entries removed, names kept: not hwnas's, or being
    written by a live process). Refuses (DataError) a folder that is not an hwnas cache. Files are unlinked
    (one atomic step each) and folders renamed out of the way first, so an interrupted clear leaves only
    whole entries and ``.hwnas-trash-*`` folders that no load reads and the next clear removes."""
    if not root.exists():
        return 0, 0, []
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    if not is_hwnas_cache(root) and _listing(root):
        raise DataError(f"{root} does not look like an hwnas cache (no {CACHE_MARKER} file, and it holds files "
                        "hwnas did not write): nothing deleted")
    entries, others = cache_entries(root)
    if not entries:
        return 0, 0, [p.name for p in others]
    _mark_cache(root)  # an older hwnas's cache (no marker) stays recognisable once emptied
    freed = removed = 0
    kept = [p.name for p in others]
    for e in entries:
        if not e.removable:
            kept.append(e.path.name)
            continue
        try:
            if e.path.is_dir():
                trash = e.path
                if not e.path.name.startswith(TRASH_PREFIX):
                    trash = root / f"{TRASH_PREFIX}{os.urandom(5).hex()}"
                    e.path.rename(trash)
                shutil.rmtree(trash)
            else:
                e.path.unlink()
        except FileNotFoundError:  # another clear was first
            continue
        except OSError as err:
            raise DataError(f"cannot delete {e.path}: {err.strerror or err} (freed {freed} bytes so far)") from None
        freed += e.size
        removed += 1
    return freed, removed, kept


# ---- temporary folders of processes (the evaluator pool's data) ------------------------------------------
POOL_PREFIX = "hwnas-pool-"
_POOL_DIR = re.compile(rf"{POOL_PREFIX}(?P<pid>\d+)-(?P<start>\d+|x)-.+")
_OLD_POOL_DIR = re.compile(rf"{POOL_PREFIX}[a-z0-9_]+")  # an older hwnas's: no owner in the name


def pool_dir_prefix() -> str:
    """The prefix of an evaluator pool's temporary folder: this process's tag, then a random part."""
    return f"{POOL_PREFIX}{process_tag()}-"


def pool_dirs(tmp: Path) -> list[tuple[Path, str]]:
    """This user's evaluator-pool folders in the temporary folder ``tmp``, each with its owner's state:
    ``live``, ``dead`` (stale: a process killed before it could clean up) or ``unknown`` (an older hwnas's)."""
    out = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    for p in _listing(tmp):
        if not p.name.startswith(POOL_PREFIX) or p.is_symlink() or not p.is_dir():
            continue
        try:
            if uid is not None and p.stat().st_uid != uid:
                continue
        except OSError:
            continue
        if m := _POOL_DIR.fullmatch(p.name):
            out.append((p, "live" if process_alive(int(m["pid"]), m["start"]) else "dead"))
        elif _OLD_POOL_DIR.fullmatch(p.name):
            out.append((p, "unknown"))
    return out


def remove_stale_pool_dirs(tmp: Path, include_unknown: bool = False) -> int:
    """Delete the pool folders in ``tmp`` whose process is gone (and, if asked, older hwnas's); bytes freed."""
    freed = 0
    for p, state in pool_dirs(tmp):
        if state == "dead" or (include_unknown and state == "unknown"):
            size = disk_usage(p)
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                freed += size
    return freed


def subset_archive(root: Path, out: Path, per_class_train: int, per_class_test: int) -> dict[str, int]:
    """Pack the first ``per_class_*`` images (by file name) of each class of an ImageFolder tree into a
    .tar.xz, copying the image files byte for byte (no re-encoding). Returns image counts per split."""
    held = _held_out_dir(root)
    if held is None:
        raise DataError(f"{root} has no test/ or val/ folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    top = out.name.split(".")[0]
    counts = {"train": 0, "test": 0}
    with tarfile.open(out, "w:xz", preset=9) as tar:
        for split, d, k in (("train", root / "train", per_class_train), ("test", held, per_class_test)):
            for cls in sorted(p for p in d.iterdir() if p.is_dir()):
                for f in sorted(x for x in cls.iterdir() if x.suffix.lower() in IMAGE_SUFFIXES)[:k]:
                    info = tarfile.TarInfo(f"{top}/{split}/{cls.name}/{f.name}")
                    info.size, info.mtime, info.mode = f.stat().st_size, 0, 0o644
                    with f.open("rb") as fh:
                        tar.addfile(info, fh)
                    counts[split] += 1
    return counts
