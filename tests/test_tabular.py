"""The tabular NAS benchmarks shipped as package data: counts, published facts, agreement with the shared archives,
and hostile files (each must give one TabularError line naming the file and the rebuild command)."""

from __future__ import annotations

import io
import itertools
import json
import os
import pickle
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hwnas.tabular as tabular
from hwnas.spaces.nb201 import TRANSNAS_MICRO_OPS, parse_cell
from hwnas.tabular import (
    NB201_DATASETS,
    NB201_DEVICES,
    REBUILD,
    TRANSNAS_TASKS,
    MacroTable,
    NB201Table,
    TabularError,
    TransNASTable,
)

SHARED = Path(__file__).resolve().parents[2] / "shared/data/benchmarks"
DATA = tabular.DATA_DIR
LOADERS: dict[str, Callable[[Path | None], Any]] = {
    "nb201.npz": tabular.nb201, "macro.npz": tabular.macro, "transnas_micro.npz": tabular.transnas_micro,
}
TRANSNAS_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
HOSTILE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _members(archive: str) -> dict[str, bytes]:
    path = SHARED / archive
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared/ is cloned beside the repository)")
    with tarfile.open(path, "r:xz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _assert_one_line(err: TabularError, filename: str) -> None:
    message = str(err)
    assert "\n" not in message and "Traceback" not in message
    assert filename in message and f"rebuild it with: {REBUILD}" in message
    assert err.__cause__ is None and err.__suppress_context__  # no chained traceback


def _expect_error(directory: Path, filename: str) -> TabularError:
    with pytest.raises(TabularError) as info:
        LOADERS[filename](directory)
    _assert_one_line(info.value, filename)
    return info.value


# ----------------------------------------------------------------------------------------------- contents

def test_nb201_counts_and_readme_facts() -> None:
    table = tabular.nb201()
    assert isinstance(table, NB201Table)
    assert len(table.archs) == len(table.index) == 15_625
    assert table.archs[0] == (
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
    assert all(table.index[a] == i for i, a in enumerate(table.archs))
    assert tuple(table.acc) == NB201_DATASETS and tuple(table.latency) == NB201_DEVICES
    assert len(NB201_DEVICES) == 27 and list(NB201_DEVICES) == sorted(NB201_DEVICES)
    for dataset, (best, index) in {"cifar10": (94.41, 3731), "cifar100": (73.66, 2778),
                                   "imagenet16-120": (47.33, 81)}.items():
        acc = table.acc[dataset]
        assert acc.shape == (15_625,) and acc.dtype == np.float64
        assert int(acc.argmax()) == index and round(float(acc.max()), 2) == best
    for latency in table.latency.values():
        assert latency.shape == (15_625,) and latency.dtype == np.float64 and (latency > 0).all()
    assert table.latency["pixel2"][:3].tolist() == [9.0, 17.0, 16.0]  # integer-ms phone files, exact


def test_macro_examples() -> None:
    table = tabular.macro()
    assert isinstance(table, MacroTable)
    assert len(table.codes) == 6_561 and list(table.codes) == sorted(table.codes)
    assert set(table.codes) == {"".join(c) for c in itertools.product("012", repeat=8)}
    assert table.test_acc.shape == (6_561, 3)
    assert table.params.dtype == table.flops.dtype == np.int64
    for code, params, flops in (("02012100", 890_666, 47_327_744), ("00000000", 387_882, 7_713_280)):
        i = table.index[code]
        assert (int(table.params[i]), int(table.flops[i])) == (params, flops)
    np.testing.assert_allclose(table.test_acc.mean(axis=1), table.mean_acc, rtol=0, atol=1e-9)


def test_transnas_counts_and_decoding() -> None:
    table = tabular.transnas_micro()
    assert isinstance(table, TransNASTable)
    assert tuple(table.val) == TRANSNAS_TASKS and len(TRANSNAS_TASKS) == 7
    expected = {f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"
                for a, b, c, d, e, f in itertools.product(TRANSNAS_OPS, repeat=6)}
    assert len(table.archs) == len(table.index) == 4_096 and set(table.archs) == expected
    # the decoding's witness: cells with no input-output path score one constant (chance) in class_scene
    cut = [i for i, a in enumerate(table.archs) if not parse_cell(a, TRANSNAS_MICRO_OPS).is_connected()]
    assert len(cut) == 169
    scene = table.val["class_scene"]
    assert len(set(scene[cut].tolist())) == 1 and scene[cut][0] < np.delete(scene, cut).min()


def test_default_loads_cached_read_only() -> None:
    table = tabular.nb201()
    assert tabular.nb201() is table and tabular.macro() is tabular.macro()
    assert tabular.nb201(DATA) is not table  # an explicit folder is read afresh
    for array in (*table.acc.values(), *table.latency.values(), tabular.macro().params,
                  *tabular.transnas_micro().val.values()):
        assert not array.flags.writeable
    with pytest.raises(ValueError):
        table.acc["cifar10"][0] = 0.0
    with pytest.raises(TypeError):
        table.index["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        table.latency.pop("fpga")


# ------------------------------------------------------------------------------------- the shared archives

def test_nb201_matches_shared_archives() -> None:
    members = _members("nb201-accuracy.tar.xz")
    table = tabular.nb201()
    assert list(table.archs) == members["nb201-accuracy/configs.txt"].decode().splitlines()
    for dataset, name in (("cifar10", "cifar10"), ("cifar100", "cifar100"), ("imagenet16-120", "ImageNet16-120")):
        published = np.load(io.BytesIO(members[f"nb201-accuracy/{name}_test_accs.npy"]), allow_pickle=False)
        assert np.array_equal(table.acc[dataset], published)
    latency = _members("nb201-latency.tar.xz")
    assert _plain_pt(latency["nb201-latency/str_arch2idx.pt"]) == table.index
    for device in NB201_DEVICES:
        assert table.latency[device].tolist() == _plain_pt(latency[f"nb201-latency/{device}.pt"])


class _PlainUnpickler(pickle.Unpickler):
    """Plain lists, dicts, numbers and strings only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _plain_pt(data: bytes) -> Any:
    """A PyTorch zip file whose payload is plain Python data (HELP's files), read without torch (an independent
    check of the converter, which uses torch.load(weights_only=True))."""
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        (name,) = [n for n in zipped.namelist() if n.endswith("/data.pkl")]
        return _PlainUnpickler(io.BytesIO(zipped.read(name))).load()


def test_macro_matches_shared_archive() -> None:
    published = json.loads(_members("nas-bench-macro.tar.xz")["nas-bench-macro/nas-bench-macro_cifar10.json"])
    table = tabular.macro()
    assert set(published) == set(table.codes)
    for code, entry in published.items():
        i = table.index[code]
        assert table.test_acc[i].tolist() == entry["test_acc"]
        assert (float(table.mean_acc[i]), float(table.std[i])) == (entry["mean_acc"], entry["std"])
        assert (int(table.params[i]), int(table.flops[i])) == (entry["params"], entry["flops"])


def test_transnas_matches_shared_archive() -> None:
    members = _members("transnas-micro.tar.xz")
    table = tabular.transnas_micro()
    with zipfile.ZipFile(io.BytesIO(members["transnas-micro/all_benchmarks_zen.zip"])) as zipped:
        for task in TRANSNAS_TASKS:
            seen = set()
            for chunk in range(0, 5000, 1000):
                for record in json.loads(zipped.read(f"zen/benchmark--transbench101_micro--{task}--{chunk}.json")):
                    a, b, c, d, e, f = (TRANSNAS_OPS[int(x)] for x in record["arch"].strip("()").split(","))
                    arch = f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"
                    assert float(table.val[task][table.index[arch]]) == record["val_accuracy"]
                    seen.add(arch)
            assert len(seen) == 4_096


# ----------------------------------------------------------------------------------------------- hostile

def _arrays(filename: str) -> dict[str, np.ndarray]:
    with np.load(DATA / filename, allow_pickle=False) as loaded:
        return {name: loaded[name] for name in loaded.files}


def _write(directory: Path, filename: str, arrays: dict[str, Any]) -> None:
    np.savez(directory / filename, **arrays)  # type: ignore[arg-type]


@pytest.mark.parametrize("filename", list(LOADERS))
def test_missing_file_or_folder(tmp_path: Path, filename: str) -> None:
    err = _expect_error(tmp_path, filename)
    assert "missing" in str(err)
    _expect_error(tmp_path / "nowhere", filename)
    (tmp_path / filename).mkdir()
    _expect_error(tmp_path, filename)


@HOSTILE
@given(filename=st.sampled_from(list(LOADERS)), fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_file(filename: str, fraction: float) -> None:
    data = (DATA / filename).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / filename).write_bytes(data[: int(len(data) * fraction)])
        _expect_error(Path(tmp), filename)


@HOSTILE
@given(filename=st.sampled_from(list(LOADERS)),
       prefix=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY\x01\x00", b"\x80\x04"]),
       noise=st.binary(max_size=512))
def test_random_bytes(filename: str, prefix: bytes, noise: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / filename).write_bytes(prefix + noise)
        _expect_error(Path(tmp), filename)


@HOSTILE
@given(position=st.integers(0, 10**9), flip=st.integers(1, 255))
def test_flipped_byte_never_gives_a_wrong_table(position: int, flip: int) -> None:
    data = bytearray((DATA / "macro.npz").read_bytes())
    data[position % len(data)] ^= flip
    good = tabular.macro()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "macro.npz").write_bytes(bytes(data))
        try:
            table = tabular.macro(Path(tmp))
        except TabularError as err:
            _assert_one_line(err, "macro.npz")
            return
    # a flip outside the data (a timestamp, say) may go unnoticed, but then every value is intact
    assert table.codes == good.codes and np.array_equal(table.test_acc, good.test_acc)
    assert np.array_equal(table.params, good.params) and np.array_equal(table.flops, good.flops)


def _drop(name: str) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        del arrays[name]
    return change


def _set(name: str, make: Callable[[np.ndarray], Any]) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[name] = make(arrays[name])
    return change


def _nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[7] = np.nan
    return a


def _duplicate(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[1] = a[0]
    return a


CORRUPTIONS: list[tuple[str, str, Callable[[dict[str, np.ndarray]], None], str]] = [
    ("nb201.npz", "missing latency", _drop("lat_pixel3"), "'lat_pixel3' is missing"),
    ("nb201.npz", "missing arch", _drop("arch"), "'arch' is missing"),
    ("nb201.npz", "short array", _set("acc_cifar10", lambda a: a[:-1]), "shape (15624,)"),
    ("nb201.npz", "2-d array", _set("lat_fpga", lambda a: a.reshape(125, 125)), "shape (125, 125)"),
    ("nb201.npz", "float32", _set("acc_cifar100", lambda a: a.astype(np.float32)), "dtype float32"),
    ("nb201.npz", "ints for floats", _set("lat_eyeriss", lambda a: a.astype(np.int64)), "dtype int64"),
    ("nb201.npz", "bytes for strings", _set("arch", lambda a: a.astype(np.bytes_)), "dtype |S"),
    ("nb201.npz", "nan", _set("lat_raspi4", _nan), "non-finite"),
    ("nb201.npz", "inf", _set("acc_imagenet16-120", lambda a: np.where(a > 47, np.inf, a)), "non-finite"),
    ("nb201.npz", "duplicate arch", _set("arch", _duplicate), "duplicate"),
    ("nb201.npz", "negative latency", _set("lat_titanx_1", lambda a: -a), "outside"),
    ("macro.npz", "wrong width", _set("test_acc", lambda a: a[:, :2]), "shape (6561, 2)"),
    ("macro.npz", "float params", _set("params", lambda a: a.astype(np.float64)), "dtype float64"),
    ("macro.npz", "structured", _set("flops", lambda a: a.astype([("x", "<i8")])), "structured"),
    ("macro.npz", "bad code", _set("code", lambda a: np.where(a == "00000000", "0000000x", a)), "8 digits"),
    ("transnas_micro.npz", "missing task", _drop("val_jigsaw"), "'val_jigsaw' is missing"),
    ("transnas_micro.npz", "nan", _set("val_normal", _nan), "non-finite"),
]


@pytest.mark.parametrize(("filename", "what", "change", "reason"), CORRUPTIONS, ids=[c[1] for c in CORRUPTIONS])
def test_corrupt_arrays(tmp_path: Path, filename: str, what: str,
                        change: Callable[[dict[str, np.ndarray]], None], reason: str) -> None:
    arrays = _arrays(filename)
    change(arrays)
    _write(tmp_path, filename, arrays)
    assert reason in str(_expect_error(tmp_path, filename)), what


class _Trap:
    """Unpickling this creates a folder: the loader must refuse the object array without unpickling it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("filename", list(LOADERS))
def test_pickled_object_array_is_refused_unread(tmp_path: Path, filename: str) -> None:
    marker = tmp_path / "unpickled"
    arrays: dict[str, Any] = _arrays(filename)
    key = "arch" if "arch" in arrays else "code"
    objects = np.empty(arrays[key].shape, dtype=object)
    objects[:] = [_Trap(marker)] * len(objects)
    arrays[key] = objects
    _write(tmp_path, filename, arrays)
    assert "object" in str(_expect_error(tmp_path, filename))
    assert not marker.exists()


def test_huge_declared_shape_is_refused_before_reading(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**15,)})
    with zipfile.ZipFile(tmp_path / "macro.npz", "w") as zf:
        for name, array in _arrays("macro.npz").items():
            if name == "mean_acc":
                zf.writestr("mean_acc.npy", header.getvalue() + b"\0" * 64)
            else:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                zf.writestr(f"{name}.npy", buffer.getvalue())
    assert f"shape ({10**15},)" in str(_expect_error(tmp_path, "macro.npz"))
