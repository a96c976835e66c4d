"""Tabular NAS benchmarks as package data: published accuracies and latencies for scoring search strategies on a CPU.

Three pickle-free ``.npz`` files in ``data/``, built once by ``python benchmarks/convert_tabular.py`` from the
archives in ``shared/data/benchmarks`` (``data/PROVENANCE.md``: sources, commits, sha256s; ``data/LICENSES.md``:
the sources' licences; cite the benchmark papers listed there when you report figures):

``nb201.npz``: NAS-Bench-201, 15,625 cells, row i = official NB201 index i.
    ``arch`` unicode: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (edges ``1<-0 | 2<-0, 2<-1 | 3<-0, 3<-1, 3<-2``; ops
    ``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3``). ``acc_<dataset>`` float64:
    test accuracy in %, one seed (LightOn). ``lat_<device>`` float64: latency in ms for 27 device settings (HELP;
    ``raspi4``, ``pixel3``, ``eyeriss``, ``fpga`` are HW-NAS-Bench's CIFAR-10 measurements).
``macro.npz``: NAS-Bench-Macro, CIFAR-10, 6,561 networks, rows sorted by ``code``.
    ``code`` unicode, 8 digits (0 identity, 1 MBConv k3 e3, 2 MBConv k5 e6); ``test_acc`` float64 (n, 3), 3 seeds, %;
    ``mean_acc``, ``std`` float64; ``params``, ``flops`` (multiply-adds at 32x32) int64.
``transnas_micro.npz``: TransNAS-Bench-101 micro, 4,096 cells (NASLib's zero-cost benchmark files).
    ``arch`` unicode in the NB201 string format with ops ``none``, ``skip_connect``, ``nor_conv_1x1``,
    ``nor_conv_3x3`` (NASLib's tuple ``(a, b, c, d, e, f)`` = ``|a~0|+|b~0|c~1|+|d~0|e~1|f~2|``, op index 0..3 in
    that order); ``val_<task>`` float64: NASLib's ``val_accuracy`` (the task's metric: top-1 % for class_scene,
    class_object, jigsaw; accuracy % for segmentsemantic; negative loss for room_layout; SSIM for normal and
    autoencoder: larger is better in every task). The file also holds ``zen_<task>`` (Zen-score; -1e8 marks cells
    whose output is cut off from the input), which this loader does not read.

Loading needs numpy only. Every array is checked (names, dtypes, shapes, finiteness, unique keys) before use and
returned read-only; any problem with a file raises :class:`TabularError`, one line naming the file and the rebuild
command. The default data folder's tables are cached; treat the returned dicts as read-only (they refuse changes).
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

__all__ = [
    "NB201_DATASETS",
    "NB201_DEVICES",
    "REBUILD",
    "TRANSNAS_TASKS",
    "MacroTable",
    "NB201Table",
    "TabularError",
    "TransNASTable",
    "macro",
    "nb201",
    "transnas_micro",
]

REBUILD = "python benchmarks/convert_tabular.py"
DATA_DIR = Path(__file__).resolve().parent / "data"
NB201_FILE = "nb201.npz"
MACRO_FILE = "macro.npz"
TRANSNAS_FILE = "transnas_micro.npz"

NB201_DATASETS = ("cifar10", "cifar100", "imagenet16-120")
NB201_DEVICES: tuple[str, ...] = (
    "1080ti_1", "1080ti_256", "1080ti_32", "2080ti_1", "2080ti_256", "2080ti_32", "essential_ph_1", "eyeriss", "fpga",
    "gold_6226", "gold_6240", "pixel2", "pixel3", "raspi4", "samsung_a50", "samsung_s7", "silver_4114",
    "silver_4210r", "titan_rtx_1", "titan_rtx_256", "titan_rtx_32", "titanx_1", "titanx_256", "titanx_32",
    "titanxp_1", "titanxp_256", "titanxp_32",
)
TRANSNAS_TASKS = ("class_scene", "class_object", "room_layout", "jigsaw", "segmentsemantic", "normal", "autoencoder")

N_NB201 = 15_625
N_MACRO = 6_561
N_TRANSNAS = 4_096
_MAX_CHARS = 256  # longest accepted key string (NB201's longest is 104)


class TabularError(ValueError):
    """A tabular benchmark file is missing or unreadable; the message is one line naming it and the rebuild command."""


class _FrozenDict(dict):  # type: ignore[type-arg]
    """A dict that refuses changes (the tables are shared through the cache)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("tabular benchmark tables are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


@dataclass(frozen=True, eq=False)
class NB201Table:
    """NAS-Bench-201: ``archs[i]`` is official index i; ``acc[dataset][i]`` in %, ``latency[device][i]`` in ms."""

    archs: tuple[str, ...]
    index: dict[str, int]
    acc: dict[str, np.ndarray]
    latency: dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class MacroTable:
    """NAS-Bench-Macro (CIFAR-10): row i is ``codes[i]``; ``test_acc`` (n, 3) and ``mean_acc``, ``std`` in %."""

    codes: tuple[str, ...]
    index: dict[str, int]
    test_acc: np.ndarray
    mean_acc: np.ndarray
    std: np.ndarray
    params: np.ndarray
    flops: np.ndarray


@dataclass(frozen=True, eq=False)
class TransNASTable:
    """TransNAS-Bench-101 micro: ``archs[i]`` an NB201-format cell string; ``val[task][i]`` the task's metric."""

    archs: tuple[str, ...]
    index: dict[str, int]
    val: dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------------------- reading

def _fail(path: Path, reason: object) -> NoReturn:
    text = " ".join(str(reason).split())
    if len(text) > 200:
        text = text[:197] + "..."
    raise TabularError(f"{path}: {text}; rebuild it with: {REBUILD}") from None


def _read_member(handle: IO[bytes], name: str, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """One ``.npy`` member, its header checked against ``kind`` (``f``, ``i`` or ``U``) and ``shape`` before its data
    is read (so a hostile header can neither unpickle anything nor make us allocate more than the expected array)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f"array {name!r} has unsupported .npy version {version}")
    got_shape, fortran, dtype = header
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        raise ValueError(f"array {name!r} has dtype {dtype} (object or structured arrays are refused)")
    if kind == "U":
        ok = dtype.kind == "U" and 0 < dtype.itemsize <= 4 * _MAX_CHARS
    else:
        ok = dtype.kind == kind and dtype.itemsize == 8
    if not ok:
        raise ValueError(f"array {name!r} has dtype {dtype}, expected {'unicode' if kind == 'U' else kind + '8'}")
    if tuple(got_shape) != shape:
        raise ValueError(f"array {name!r} has shape {tuple(got_shape)}, expected {shape}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data = handle.read(nbytes + 1)  # one byte more: reaches the member's end, so zipfile checks its CRC
    if len(data) != nbytes:
        raise ValueError(f"array {name!r} holds {len(data)} data bytes, expected {nbytes}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    array = np.ascontiguousarray(array.astype(dtype.newbyteorder("="), copy=True))
    array.setflags(write=False)
    return array


def _read_npz(path: Path, spec: Mapping[str, tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """The arrays of ``spec`` (name -> (kind, shape)) from the ``.npz`` at ``path``; extra members are ignored."""
    if not path.is_file():
        _fail(path, "missing" if not path.exists() else "not a file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            arrays: dict[str, np.ndarray] = {}
            for name, (kind, shape) in spec.items():
                if f"{name}.npy" not in members:
                    raise ValueError(f"array {name!r} is missing")
                with archive.open(f"{name}.npy") as handle:
                    arrays[name] = _read_member(handle, name, kind, shape)
    except Exception as exc:  # any failure of a hostile or damaged file becomes one line
        reason = str(exc) if isinstance(exc, ValueError) and str(exc).startswith("array ") else (
            f"unreadable ({type(exc).__name__}: {exc})")
        _fail(path, reason)
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not bool(np.isfinite(array).all()):
            _fail(path, f"array {name!r} has non-finite values")
    return arrays


def _keys(path: Path, name: str, array: np.ndarray) -> tuple[tuple[str, ...], dict[str, int]]:
    keys = tuple(str(k) for k in array.tolist())
    if any(not k for k in keys):
        _fail(path, f"array {name!r} has an empty string")
    index = {k: i for i, k in enumerate(keys)}
    if len(index) != len(keys):
        _fail(path, f"array {name!r} has duplicate entries")
    return keys, _FrozenDict(index)


def _in_range(path: Path, name: str, array: np.ndarray, low: float, high: float) -> None:
    if not bool(((array >= low) & (array <= high)).all()):
        _fail(path, f"array {name!r} has values outside [{low:g}, {high:g}]")


def _frozen(items: Iterable[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return _FrozenDict(items)


# ------------------------------------------------------------------------------------------------------ tables

def _load_nb201(path: Path) -> NB201Table:
    n = (N_NB201,)
    spec = {"arch": ("U", n)} | {f"acc_{d}": ("f", n) for d in NB201_DATASETS}
    spec |= {f"lat_{d}": ("f", n) for d in NB201_DEVICES}
    arrays = _read_npz(path, spec)
    archs, index = _keys(path, "arch", arrays["arch"])
    if not all(a.startswith("|") and a.endswith("|") and a.count("+") == 2 for a in archs):
        _fail(path, "array 'arch' holds a string that is not an NB201 cell")
    for d in NB201_DATASETS:
        _in_range(path, f"acc_{d}", arrays[f"acc_{d}"], 0.0, 100.0)
    for d in NB201_DEVICES:
        _in_range(path, f"lat_{d}", arrays[f"lat_{d}"], 1e-9, 1e9)
    return NB201Table(archs=archs, index=index,
                      acc=_frozen((d, arrays[f"acc_{d}"]) for d in NB201_DATASETS),
                      latency=_frozen((d, arrays[f"lat_{d}"]) for d in NB201_DEVICES))


def _load_macro(path: Path) -> MacroTable:
    n = (N_MACRO,)
    arrays = _read_npz(path, {"code": ("U", n), "test_acc": ("f", (N_MACRO, 3)), "mean_acc": ("f", n),
                              "std": ("f", n), "params": ("i", n), "flops": ("i", n)})
    codes, index = _keys(path, "code", arrays["code"])
    if not all(len(c) == 8 and set(c) <= {"0", "1", "2"} for c in codes):
        _fail(path, "array 'code' holds a string that is not 8 digits of 0, 1, 2")
    for name in ("test_acc", "mean_acc"):
        _in_range(path, name, arrays[name], 0.0, 100.0)
    _in_range(path, "std", arrays["std"], 0.0, 100.0)
    for name in ("params", "flops"):
        if not bool((arrays[name] > 0).all()):
            _fail(path, f"array {name!r} has non-positive values")
    return MacroTable(codes=codes, index=index, test_acc=arrays["test_acc"], mean_acc=arrays["mean_acc"],
                      std=arrays["std"], params=arrays["params"], flops=arrays["flops"])


def _load_transnas(path: Path) -> TransNASTable:
    n = (N_TRANSNAS,)
    arrays = _read_npz(path, {"arch": ("U", n)} | {f"val_{t}": ("f", n) for t in TRANSNAS_TASKS})
    archs, index = _keys(path, "arch", arrays["arch"])
    if not all(a.startswith("|") and a.endswith("|") and a.count("+") == 2 for a in archs):
        _fail(path, "array 'arch' holds a string that is not an NB201-format cell")
    return TransNASTable(archs=archs, index=index, val=_frozen((t, arrays[f"val_{t}"]) for t in TRANSNAS_TASKS))


@functools.lru_cache(maxsize=4)
def _cached(kind: str, data_dir: Path) -> NB201Table | MacroTable | TransNASTable:
    if kind == "nb201":
        return _load_nb201(data_dir / NB201_FILE)
    if kind == "macro":
        return _load_macro(data_dir / MACRO_FILE)
    return _load_transnas(data_dir / TRANSNAS_FILE)


def nb201(data_dir: Path | None = None) -> NB201Table:
    """NAS-Bench-201 accuracies (3 datasets) and latencies (27 devices); ``data_dir=None``: the package's (cached)."""
    if data_dir is None:
        table = _cached("nb201", DATA_DIR)
        assert isinstance(table, NB201Table)
        return table
    return _load_nb201(Path(data_dir) / NB201_FILE)


def macro(data_dir: Path | None = None) -> MacroTable:
    """NAS-Bench-Macro (CIFAR-10); ``data_dir=None``: the package's data (cached)."""
    if data_dir is None:
        table = _cached("macro", DATA_DIR)
        assert isinstance(table, MacroTable)
        return table
    return _load_macro(Path(data_dir) / MACRO_FILE)


def transnas_micro(data_dir: Path | None = None) -> TransNASTable:
    """TransNAS-Bench-101 micro, 7 tasks; ``data_dir=None``: the package's data (cached)."""
    if data_dir is None:
        table = _cached("transnas", DATA_DIR)
        assert isinstance(table, TransNASTable)
        return table
    return _load_transnas(Path(data_dir) / TRANSNAS_FILE)
