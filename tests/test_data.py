"""Data loading on real images: the embedded CIFAR-10 subset, ImageFolder trees, archives, caches."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from hwnas.data import (
    CIFAR10_CLASSES,
    DataError,
    extract_archive,
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


def test_imagefolder_folder_and_subset_archive(tmp_path: Path) -> None:
    tree = extract_archive(EMBEDDED, tmp_path / "unpacked")
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
