"""Image-classification data as uint8 tensors, loaded once (then kept on the training device).

Accepted sources (all given as explicit paths by the CLI):

* an ImageFolder tree: ``ROOT/train/<class>/<image>`` and ``ROOT/test/<class>/<image>`` (``val/`` is
  accepted for the held-out split, as in Imagenette), e.g. the archives in ``shared/data`` unpacked;
* an archive of such a tree (``.tar.xz``, ``.tar.gz``, ``.tgz``, ``.tar``), unpacked into a cache folder;
* torchvision's CIFAR-10 folder (``ROOT/cifar-10-batches-py``), downloadable on connected machines;
* hwnas's own cache file (``.npz``: uint8 arrays, loaded without pickle).

Every image is decoded once and the result cached as ``.npz`` next to the unpacked tree. A fixed
validation split (``val_size`` images, stratified, seed 0, independent of any training seed) is carved
from the training split: a search sees train/val only; the test split is for final reports.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
            take[ix[:quota[c]]] = True
        return self.train_x[~take], self.train_y[~take], self.train_x[take], self.train_y[take]


# ---- cache files ---------------------------------------------------------------------------------
def save_npz(data: ImageData, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, train_x=data.train_x, train_y=data.train_y, test_x=data.test_x, test_y=data.test_y,
             classes=np.array(data.classes), name=np.array(data.name), source=np.array(data.source))
    tmp.replace(path)


def load_npz(path: Path) -> ImageData:
    try:
        with np.load(path, allow_pickle=False) as z:
            if z["name"].ndim != 0 or z["classes"].ndim != 1:
                raise ValueError(f"name {z['name'].shape} and classes {z['classes'].shape} must be 0-d and 1-d")
            data = ImageData(str(z["name"]), tuple(str(c) for c in z["classes"]), z["train_x"], z["train_y"],
                             z["test_x"], z["test_y"], str(z["source"]))
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as e:  # TypeError: 0-d classes
        raise DataError(f"{path} is not a readable hwnas data cache ({e or type(e).__name__}); delete it and "
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


def _decode(file: Path, resolution: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(file) as im:
            return _fit(im.convert("RGB"), resolution)
    except (OSError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise DataError(f"cannot decode image {file}: {str(e)[:200]}") from None


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
    total, done = len(files["train"]) + len(files["test"]), 0
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    res = resolution or _decode(files["train"][0][0], resolution).shape[0]
    for split, items in files.items():
        x = np.empty((len(items), res, res, 3), dtype=np.uint8)
        for j, (f, _) in enumerate(items):
            img = _decode(f, resolution)
            if img.shape != (res, res, 3):
                raise DataError(f"{f} is {img.shape[1]}x{img.shape[0]}, others are {res}x{res}: "
                                f"pass a resolution to resize")
            x[j] = img
            done += 1
            if progress and done % 500 == 0:
                progress(done, total)
        arrays[split] = (x, np.array([c for _, c in items], dtype=np.int64))
    return ImageData(name, classes, *arrays["train"], *arrays["test"], source=str(root))


# ---- archives ------------------------------------------------------------------------------------
def is_archive(path: Path) -> bool:
    return path.is_file() and any(path.name.endswith(s) for s in ARCHIVE_SUFFIXES)


def archive_cache_dir(archive: Path, cache_root: Path) -> Path:
    st = archive.stat()
    tag = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = archive.name
    for s in ARCHIVE_SUFFIXES:
        stem = stem.removesuffix(s)
    return cache_root / f"{stem}-{tag}"


def extract_archive(archive: Path, dest: Path) -> Path:
    """Unpack once (a completed unpack leaves a marker); refuses members that would escape ``dest``."""
    marker = dest / ".complete"
    if marker.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot unpack {archive}: {first.rstrip(':')} (corrupt or not a tar archive?)") from None
    marker.write_text("ok\n")
    return dest


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
    """Load from any accepted source (see module doc), decoding at most once per source."""
    data = _load_any(path, name, cache_root, resolution, download, progress)
    if data.resolution < MIN_IMAGE_PX:
        raise DataError(f"{path}: the images are {data.resolution} px; hwnas trains at {MIN_IMAGE_PX} px or more "
                        "(--image-size resizes them)")
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
        tree = extract_archive(path, archive_cache_dir(path, cache_root))
    elif path.is_dir():
        tree = path
    elif not path.exists():
        raise DataError(f"data not found: {path} (give an ImageFolder folder, an archive such as "
                        f"cifar10-jpg.tar.xz, a torchvision CIFAR-10 folder, or --download)")
    else:
        raise DataError(f"{path} is neither a folder, an archive ({', '.join(ARCHIVE_SUFFIXES)}) nor a .npz cache")
    root = find_imagefolder_root(tree)
    if root is None:
        raise DataError(f"{path} holds no train/ and test/ (or val/) class folders, nor cifar-10-batches-py/")
    cache, stale = _tree_cache_file(root, resolution, cache_root if path.is_dir() else None)
    if cache.is_file():
        data = load_npz(cache)
        data.name = name  # a label of this run, not of the first one
        return data
    data = load_imagefolder(root, name, resolution, progress)
    for old in cache.parent.glob(stale) if stale else ():  # decodings of an earlier state of the folder
        old.unlink(missing_ok=True)
    save_npz(data, cache)
    return data


def _tree_cache_file(root: Path, resolution: int | None, cache_root: Path | None) -> tuple[Path, str | None]:
    """Where the decoded tree is cached: next to an unpacked archive (whose folder is keyed on the archive's
    path, size and time), or for a folder of the user's, under ``cache_root`` keyed on its path and on every
    image's name, size and modification time (images added, removed, moved or edited: decoded again).
    Also a glob, in the same folder, of this tree's decodings at other states (none for an archive's)."""
    tag = f"r{resolution}" if resolution else "native"
    if cache_root is None:
        return root.parent / f"{root.name}-{tag}.npz", None
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    return cache_root / f"{root.name}-{where}-{_tree_signature(root)}-{tag}.npz", f"{root.name}-{where}-*-{tag}.npz"


def _tree_signature(root: Path) -> str:
    h = hashlib.sha256()
    for split in ("train", "test", "val"):
        for dirpath, dirnames, filenames in sorted(os.walk(root / split, followlinks=True)):  # as decoding
            dirnames.sort()
            for f in sorted(filenames):
                if Path(f).suffix.lower() in IMAGE_SUFFIXES:
                    st = os.stat(os.path.join(dirpath, f))
                    h.update(f"{os.path.relpath(dirpath, root)}/{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:10]


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
