"""Data loading on real images: the embedded CIFAR-10 subset, ImageFolder trees, archives, caches."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hwnas.data import (
    CIFAR10_CLASSES,
    DataError,
    load_dataset,
    load_npz,
    subset_archive,
)

EMBEDDED = Path(__file__).resolve().parents[1] / "hwnas" / "datasets" / "cifar10-mini.tar.xz"


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cache = tmp_path_factory.mktemp("cache")
    return load_dataset(EMBEDDED, "cifar10", cache), cache


def test_embedded_subset(mini) -> None:  # type: ignore[no-untyped-def]
    data, cache = mini
    assert data.classes == CIFAR10_CLASSES
    assert data.train_x.shape == (5000, 32, 32, 3) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (1000, 32, 32, 3)
    assert np.bincount(data.train_y).tolist() == [500] * 10 and np.bincount(data.test_y).tolist() == [100] * 10
    assert 60 < data.train_x.mean() < 200 and data.train_x.std() > 30  # real photographs, not blank
    # the second load reads the decoded cache
    caches = list(cache.rglob("*.npz"))
    assert len(caches) == 1
    again = load_dataset(EMBEDDED, "cifar10", cache)
    assert np.array_equal(again.train_x, data.train_x) and again.source == data.source
    assert np.array_equal(load_npz(caches[0]).test_y, data.test_y)


def test_validation_split_is_stratified_seeded_and_disjoint(mini) -> None:  # type: ignore[no-untyped-def]
    data, _ = mini
    tx, ty, vx, vy = data.split_validation(1000)
    assert len(vy) == 1000 and len(ty) == 4000
    assert np.bincount(vy).tolist() == [100] * 10
    _, _, vx2, _ = data.split_validation(1000)
    assert np.array_equal(vx, vx2)
    rows = {r.tobytes() for r in vx.reshape(len(vx), -1)}
    assert not any(r.tobytes() in rows for r in tx.reshape(len(tx), -1)[:500])
    odd = data.split_validation(7)
    assert len(odd[3]) == 7
    with pytest.raises(DataError, match="validation size 5000 must be between 1 and 4999"):
        data.split_validation(5000)


def _unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_imagefolder_folder_and_subset_archive(tmp_path: Path) -> None:
    tree = _unpack(EMBEDDED, tmp_path / "unpacked")
    root = tree / "cifar10-mini"
    assert (root / "train" / "cat").is_dir()
    out = tmp_path / "small.tar.xz"
    assert subset_archive(root, out, 3, 2) == {"train": 30, "test": 20}
    with tarfile.open(out) as tar:  # bytes copied, not re-encoded
        member = tar.extractfile("small/train/airplane/" + sorted((root / "train" / "airplane").iterdir())[0].name)
        assert member is not None
        assert member.read() == sorted((root / "train" / "airplane").iterdir())[0].read_bytes()
    small = load_dataset(out, "cifar10", tmp_path / "c")
    assert small.train_x.shape == (30, 32, 32, 3) and small.classes == CIFAR10_CLASSES
    from_dir = load_dataset(root, "cifar10", tmp_path / "c2")
    assert from_dir.train_x.shape[0] == 5000


def _write_tree(root: Path, sizes: list[tuple[int, int]], held: str = "val") -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", held):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i, (w, h) in enumerate(sizes):
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_resize_and_val_folder(tmp_path: Path) -> None:
    _write_tree(tmp_path / "ds", [(48, 40), (40, 64)])
    d = load_dataset(tmp_path / "ds", "toy", tmp_path / "cache", resolution=32)
    assert d.train_x.shape == (4, 32, 32, 3) and d.test_x.shape == (4, 32, 32, 3) and d.classes == ("a", "b")
    with pytest.raises(DataError, match="pass a resolution to resize"):
        load_dataset(tmp_path / "ds", "toy", tmp_path / "cache")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p, "data not found"),
        (lambda p: (p.mkdir(), p)[1], "holds no train/ and test/"),
        (lambda p: (p.with_suffix(".tar.xz").write_bytes(b"not an archive"), p.with_suffix(".tar.xz"))[1],
         "cannot unpack"),
        (lambda p: (p.with_suffix(".npz").write_bytes(b"junk"), p.with_suffix(".npz"))[1],
         "not a readable hwnas data cache"),
        (lambda p: (p.with_suffix(".txt").write_text("x"), p.with_suffix(".txt"))[1], "neither a folder"),
    ],
)
def test_bad_sources(tmp_path: Path, make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as ei:
        load_dataset(make(tmp_path / "src"), "x", tmp_path / "cache")
    assert fragment in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda d: setattr(d, "train_x", d.train_x.astype(np.float32)), "train images are float32 (20, 8, 8, 3), not "
     "uint8 N x S x S x 3"),
    (lambda d: setattr(d, "test_x", d.test_x[..., :1]), "test images are uint8 (10, 8, 8, 1)"),
    (lambda d: setattr(d, "train_y", d.train_y[:5]), "train labels are int64 (5,), not 20 integers"),
    (lambda d: setattr(d, "test_y", d.test_y + 7), "test labels lie in 7..9, not 0..2"),
    (lambda d: setattr(d, "train_y", d.train_y.astype(np.float64)), "train labels are float64"),
    (lambda d: setattr(d, "classes", ()), "no classes"),
    (lambda d: setattr(d, "classes", ("a", "a", "b")), "class names empty or repeated: ['a', 'a', 'b']"),
    (lambda d: setattr(d, "classes", "abc"), "is not a readable hwnas data cache (name () and classes () must be"),
    (lambda d: (setattr(d, "train_x", d.train_x[:, :4, :4]), setattr(d, "test_x", d.test_x[:, :4, :4])),
     "bad.npz: the images are 4 px; hwnas trains at 8 px or more (--image-size resizes them)"),
])
def test_a_cache_of_the_wrong_arrays_is_refused_when_loaded(tmp_path: Path, edit, fragment: str) -> None:  # type: ignore[no-untyped-def]
    from hwnas.data import ImageData, save_npz

    rng = np.random.default_rng(0)
    data = ImageData("x", ("a", "b", "c"), rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8),
                     np.arange(20) % 3, rng.integers(0, 255, (10, 8, 8, 3), dtype=np.uint8), np.arange(10) % 3, "t")
    save_npz(data, tmp_path / "ok.npz")
    assert load_npz(tmp_path / "ok.npz").num_classes == 3
    edit(data)
    save_npz(data, tmp_path / "bad.npz")
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "bad.npz", "x", tmp_path / "cache")
    assert fragment in str(ei.value) and "\n" not in str(ei.value)


def test_torchvision_format_without_files_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="--download on a connected machine"):
        load_dataset(tmp_path, "cifar10", tmp_path / "cache")


def test_download_without_network_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    import torchvision.datasets

    def offline(*a: object, **k: object) -> None:  # what torchvision raises where the host cannot be reached
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match=r"cannot download CIFAR-10 to .*new: \[Errno -2\] Name or service not "
                       "known \\(pass --data-dir"):
        load_dataset(tmp_path / "new", "cifar10", tmp_path / "cache", download=True)


def test_a_changed_folder_is_decoded_again_and_the_name_is_this_run_s(tmp_path: Path) -> None:
    from PIL import Image

    _write_tree(tmp_path / "ds", [(32, 32)] * 3)
    cache = tmp_path / "cache"
    first = load_dataset(tmp_path / "ds", "x", cache)
    assert first.train_x.shape[0] == 6 and first.classes == ("a", "b")
    assert load_dataset(tmp_path / "ds", "y", cache).name == "y"  # from the cache, labelled as asked
    (tmp_path / "ds" / "train" / "a" / "0.png").unlink()
    (tmp_path / "ds" / "train" / "c").mkdir()
    (tmp_path / "ds" / "val" / "c").mkdir()
    for split, n in (("train", 4), ("val", 1)):
        for i in range(n):
            Image.fromarray(np.full((32, 32, 3), 7 * i, np.uint8)).save(tmp_path / "ds" / split / "c" / f"{i}.png")
    changed = load_dataset(tmp_path / "ds", "x", cache)
    assert changed.classes == ("a", "b", "c") and np.bincount(changed.train_y).tolist() == [2, 3, 4]
    assert len(list(cache.glob("*.npz"))) == 1  # the stale decoding is gone


def test_decoded_sources_are_resized_like_an_image_folder(mini, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hwnas.data import resize_images, save_npz

    data, _ = mini
    npz = tmp_path / "d.npz"
    save_npz(data, npz)
    big = load_dataset(npz, "cifar10", tmp_path / "c", resolution=48)
    assert big.train_x.shape == (5000, 48, 48, 3) and big.test_x.shape == (1000, 48, 48, 3)
    assert np.array_equal(big.train_y, data.train_y) and "resized to 48 px" in big.source
    assert np.array_equal(load_dataset(npz, "cifar10", tmp_path / "c", resolution=32).train_x, data.train_x)
    assert np.array_equal(resize_images(data.test_x[:3], 32), data.test_x[:3])  # already that size: untouched


# ---- the cache: one decoded file per archive content, nothing partial ----------------------------------
def _toy(root: Path, counts: dict[str, tuple[int, int]], held: str = "test", px: int = 8) -> Path:
    """An ImageFolder tree of distinct px x px PNGs: ``counts`` maps a class to (train, held-out) images."""
    from PIL import Image

    for k, (cls, (n_train, n_held)) in enumerate(counts.items()):
        for split, n in (("train", n_train), (held, n_held)):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((px, px, 3), 40 * k + 3 * i, np.uint8)).save(root / split / cls / f"{i}.png")
    (root / held).mkdir(parents=True, exist_ok=True)
    return root


def _pack(tree: Path, out: Path, top: str = "toy") -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(tree, arcname=top)
    return out


def _entries(cache: Path) -> list[str]:
    """What the cache holds, with files of hwnas's bookkeeping (the marker, the hash index) left out."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.name not in (".hwnas-cache", "archive-hashes.json"))


def test_an_archive_is_cached_as_one_decoded_file_keyed_by_its_content(tmp_path: Path) -> None:
    import os
    import shutil

    tree = _toy(tmp_path / "toy", {"a": (3, 2), "b": (2, 2)})
    archive = _pack(tree, tmp_path / "toy.tar.gz")
    cache = tmp_path / "cache"
    data = load_dataset(archive, "toy", cache)
    assert data.classes == ("a", "b") and data.train_x.shape == (5, 8, 8, 3) and data.test_x.shape == (4, 8, 8, 3)
    files = _entries(cache)
    assert len(files) == 1 and files[0].endswith("-native.npz") and files[0].startswith("toy-"), files
    # the same images, in the same order, as the unpacked folder's
    folder = load_dataset(tree, "toy", tmp_path / "other")
    for a in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(data, a), getattr(folder, a)), a
    # a copy under another name, and a touched archive, are the same content: the same cache file
    shutil.copy(archive, tmp_path / "copy.tar.gz")
    os.utime(archive, ns=(10**18, 10**18))
    for src in (tmp_path / "copy.tar.gz", archive):
        again = load_dataset(src, "toy2", cache)
        assert again.name == "toy2" and np.array_equal(again.train_x, data.train_x)
    assert _entries(cache) == files
    assert len(_entries(cache)) == 1
    assert load_dataset(archive, "toy", cache, resolution=16).resolution == 16  # another decoding: its own file
    assert len(_entries(cache)) == 2


def test_an_archive_is_hashed_once_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import hwnas.data

    archive = _pack(_toy(tmp_path / "toy", {"a": (2, 1), "b": (2, 1)}), tmp_path / "toy.tar.gz")
    hashed: list[Path] = []
    real = hwnas.data._file_sha256
    monkeypatch.setattr(hwnas.data, "_file_sha256", lambda p: (hashed.append(p), real(p))[1])
    cache = tmp_path / "cache"
    load_dataset(archive, "toy", cache)
    load_dataset(archive, "toy", cache)
    assert len(hashed) == 1
    os.utime(archive, ns=(10**18, 10**18))
    load_dataset(archive, "toy", cache)
    assert len(hashed) == 2 and len(_entries(cache)) == 1
    # an archive replaced by other content: decoded again, and the decoding of the old content goes
    _pack(_toy(tmp_path / "toy2", {"a": (3, 1), "b": (2, 1)}), archive)
    assert load_dataset(archive, "toy", cache).train_x.shape[0] == 5
    assert len(_entries(cache)) == 1


def test_a_failed_unpack_or_decode_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    tree = _toy(tmp_path / "toy", {"a": (2, 1), "b": (2, 1)})
    (tree / "train" / "b" / "9.png").write_bytes(b"not an image")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"cannot decode image .*toy.tar.gz.*9\.png"):
        load_dataset(_pack(tree, tmp_path / "toy.tar.gz"), "toy", cache)
    assert _entries(cache) == []
    good = _pack(_toy(tmp_path / "good", {"a": (2, 1), "b": (2, 1)}), tmp_path / "good.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot unpack"):
        load_dataset(tmp_path / "cut.tar.gz", "toy", cache)
    assert _entries(cache) == []


def test_members_outside_the_tree_are_not_read(tmp_path: Path) -> None:
    """Links and '..' names in an archive do not reach files outside it (nothing is unpacked to disk)."""
    tree = _toy(tmp_path / "toy", {"a": (2, 1), "b": (2, 1)})
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="toy")
        link = tarfile.TarInfo("toy/train/a/zz.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        dots = tarfile.TarInfo("toy/train/../../escape.png")
        payload = (tree / "train" / "a" / "0.png").read_bytes()
        dots.size = len(payload)
        tar.addfile(dots, io.BytesIO(payload))
    data = load_dataset(archive, "toy", tmp_path / "cache")
    assert data.train_x.shape[0] == 4 and not (tmp_path / "escape.png").exists()


def test_hard_links_are_read_only_to_a_regular_member_before_them(tmp_path: Path) -> None:
    """As tarfile reads them: a hard link (or a chain of them) to an earlier regular member is that file; one to
    a missing, later or non-regular member is skipped, as a symbolic link is (not a KeyError from tarfile)."""
    tree = _toy(tmp_path / "toy", {"a": (2, 1), "b": (2, 1)})
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="toy")
        for name, target in (("l1", "toy/train/a/0.png"), ("l2", "./toy/train/a/l1.png"), ("l3", "toy/train/a/l2.png"),
                             ("m1", "missing.png"), ("m2", "toy/train"), ("m3", "toy/train/a/9.png"),
                             ("m4", "/etc/passwd")):
            link = tarfile.TarInfo(f"toy/train/a/{name}.png")
            link.type, link.linkname = tarfile.LNKTYPE, target
            tar.addfile(link)
        later = tarfile.TarInfo("toy/train/a/9.png")
        payload = (tree / "train" / "a" / "0.png").read_bytes()
        later.size = len(payload)
        tar.addfile(later, io.BytesIO(payload))
    data = load_dataset(archive, "toy", tmp_path / "cache")
    # a: 0, 1, 9 (its files), l1 -> 0, l2 -> l1 -> 0, l3 -> l2 -> l1 -> 0; b: 0, 1
    assert data.train_x.shape[0] == 8 and np.bincount(data.train_y).tolist() == [6, 2]
    assert all(np.array_equal(data.train_x[i], data.train_x[0]) for i in (3, 4, 5))


def test_a_dangling_symbolic_link_in_a_folder_is_refused_naming_it(tmp_path: Path) -> None:
    tree = _toy(tmp_path / "toy", {"a": (2, 1), "b": (2, 1)})
    (tree / "train" / "a" / "loop").symlink_to(".")  # not an image: not read, not followed
    (tree / "train" / "b" / "2.png").symlink_to(tree / "train" / "b" / "0.png")  # a link to an image is read
    assert load_dataset(tree, "toy", tmp_path / "cache").train_x.shape[0] == 5
    (tree / "train" / "a" / "9.png").symlink_to("missing.png")
    with pytest.raises(DataError) as ei:
        load_dataset(tree, "toy", tmp_path / "cache")
    assert f"cannot read image {tree / 'train' / 'a' / '9.png'}: a symbolic link to a missing file" in str(ei.value)
    assert "\n" not in str(ei.value)


def _npz_blob(lie: tuple[int, ...] | None = None, compression: int = 0) -> bytes:
    """A .npz of a valid cache's arrays, ``train_y``'s .npy header claiming the shape ``lie``."""
    import zipfile

    arrays = {"train_x": np.zeros((4, 8, 8, 3), np.uint8), "train_y": np.array([0, 1, 0, 1]),
              "test_x": np.zeros((2, 8, 8, 3), np.uint8), "test_y": np.array([0, 1]),
              "classes": np.array(["a", "b"]), "name": np.array("n"), "source": np.array("s")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for key, a in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, a, allow_pickle=False)
            raw = npy.getvalue()
            if lie is not None and key == "train_y":
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": a.dtype.str, "fortran_order": False,
                                                             "shape": lie})
                raw = header.getvalue() + a.tobytes()
            z.writestr(f"{key}.npy", raw)
    return buf.getvalue()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return header.getvalue()


def _damaged_stream(blob: bytes) -> bytes:
    import zipfile

    raw = bytearray(blob)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        info = z.getinfo("train_x.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start:start + 8] = b"\xff" * 8
    return bytes(raw)


def _lying_file_size(blob: bytes) -> bytes:
    """The stored member ``train_y.npy`` claiming 2**31 uncompressed bytes (local and central headers)."""
    import struct

    raw = bytearray(blob)
    at = raw.index(b"train_y.npy")  # the local header's name
    raw[at - 8:at - 4] = struct.pack("<I", 2**31)
    at = raw.index(b"train_y.npy", at + 1)  # the central directory's
    raw[at - 22:at - 18] = struct.pack("<I", 2**31)
    return bytes(raw)


@pytest.mark.parametrize(("blob", "fragment"), [
    (lambda: _npz_blob((2**40,)), "train_y.npy claims int64 (1099511627776,), more than its 32 bytes"),
    (lambda: _npz_blob((2**40,), 8), "train_y.npy claims int64 (1099511627776,), more than its 32 bytes"),
    (lambda: _npz_blob((-1,)), "train_y.npy claims the shape (-1,)"),
    (lambda: _damaged_stream(_npz_blob(compression=8)), "Error -3 while decompressing data"),
    (lambda: _lying_file_size(_npz_blob()), "train_y.npy claims 2147483648 bytes"),
    (lambda: _npy_header((2**40,)), "File is not a zip file"),  # a .npy claiming a terabyte, named .npz
])
def test_a_damaged_or_lying_cache_file_is_refused_before_it_is_read(tmp_path: Path, blob, fragment: str) -> None:  # type: ignore[no-untyped-def]
    from hwnas.data import describe_npz

    path = tmp_path / "data.npz"
    path.write_bytes(blob())
    with pytest.raises(DataError) as ei:
        load_dataset(path, "x", tmp_path / "cache")
    assert "is not a readable hwnas data cache" in str(ei.value) and fragment in str(ei.value), str(ei.value)
    assert "\n" not in str(ei.value)
    assert "error" in describe_npz(path) or describe_npz(path)["train"] == 4  # never raises
    path.write_bytes(_npz_blob(compression=8))  # deflated (numpy's savez_compressed): read
    assert load_npz(path).train_y.tolist() == [0, 1, 0, 1]


def test_a_changed_folder_keeps_one_decoding_whatever_its_name(tmp_path: Path) -> None:
    """Earlier decodings of a folder are found by name, not by a glob its name could break ("[1]")."""
    from PIL import Image

    tree = _toy(tmp_path / "ds[1]", {"a": (2, 1), "b": (2, 1)})
    cache = tmp_path / "cache"
    load_dataset(tree, "toy", cache)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tree / "train" / "a" / "9.png")
    assert load_dataset(tree, "toy", cache).train_x.shape[0] == 5
    assert len(_entries(cache)) == 1

# ---- data that cannot rank networks ---------------------------------------------------------------------
@pytest.mark.parametrize(("counts", "held", "fragment"), [
    ({"a": (3, 2)}, "test", "1 class (a): at least 2 are needed"),
    ({"a": (3, 2), "b": (0, 2)}, "test", "class b has no training images"),
    ({"a": (3, 2), "b": (3, 0)}, "val", "class b has no val images"),
])
@pytest.mark.parametrize("packed", [False, True])
def test_data_that_cannot_rank_networks_is_refused(tmp_path: Path, counts: dict[str, tuple[int, int]], held: str,
                                                   fragment: str, packed: bool) -> None:
    src = _toy(tmp_path / "toy", counts, held)
    if packed:
        src = _pack(src, tmp_path / "toy.tar.gz")
    with pytest.raises(DataError) as ei:
        load_dataset(src, "toy", tmp_path / "cache")
    assert fragment in str(ei.value) and "\n" not in str(ei.value), str(ei.value)
    assert _entries(tmp_path / "cache") == []


def test_a_one_class_cache_file_is_refused(tmp_path: Path) -> None:
    from hwnas.data import ImageData, save_npz

    x = np.zeros((4, 8, 8, 3), np.uint8)
    save_npz(ImageData("x", ("a",), x, np.zeros(4, np.int64), x, np.zeros(4, np.int64), "t"), tmp_path / "one.npz")
    with pytest.raises(DataError, match=r"one.npz has 1 class \(a\): at least 2 are needed"):
        load_dataset(tmp_path / "one.npz", "x", tmp_path / "cache")


def test_a_validation_split_that_takes_a_class_s_last_image_is_refused(tmp_path: Path) -> None:
    data = load_dataset(_toy(tmp_path / "toy", {"a": (1, 1), "b": (1, 1), "c": (4, 1)}), "toy", tmp_path / "c")
    assert len(data.split_validation(1)[3]) == 1  # from c, the largest class
    with pytest.raises(DataError, match="validation size 4 leaves class a without training images"):
        data.split_validation(4)  # quotas 1, 1, 3 rounded down to 1, 1, 2


# ---- the same through the command line: one line, exit code 2 -------------------------------------------
def test_train_and_prepare_refuse_data_that_cannot_rank_networks(tmp_path: Path) -> None:
    from conftest import assert_usage_error, hwnas_here

    one = _toy(tmp_path / "one", {"cat": (4, 2)})
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert_usage_error(hwnas_here("train", "mobilenetv2", "--data-dir", str(one), "--epochs", "0.1", "--batch-size",
                                  "2",
                             "--device", "cpu", *cache), "1 class (cat): at least 2 are needed")
    no_test = _toy(tmp_path / "no-test", {"cat": (4, 2), "dog": (4, 0)})
    assert_usage_error(hwnas_here("data", "prepare", "--data-dir", str(no_test), *cache),
                                  "class dog has no test images")
    small = _toy(tmp_path / "small", {"cat": (2, 1), "dog": (2, 1)})
    assert_usage_error(hwnas_here("train", "mobilenetv2", "--data-dir", str(small), "--epochs", "0.1", "--batch-size",
                                  "8", "--device", "cpu", *cache), "4 training images are fewer than one batch (8)")
