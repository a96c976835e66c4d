"""Convert the shared tabular NAS benchmarks into compact, pickle-free package data (run once).

    python benchmarks/convert_tabular.py [--shared ../shared/data/benchmarks] [--out hwnas/tabular/data]

Reads the four archives of ``shared/data/benchmarks`` (see its README.md: provenance, licences, formats) straight
from the ``.tar.xz`` files (nothing is extracted to disk), checks them, and writes to ``--out``:

``nb201.npz`` (NAS-Bench-201, 15,625 architectures, row i = the official NB201 index i)
    ``arch``                 unicode (15625,)  ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` from ``configs.txt``, checked
                             against HELP's ``str_arch2idx.pt`` (they must agree on all 15,625 or the script fails)
    ``acc_cifar10``, ``acc_cifar100``, ``acc_imagenet16-120``
                             float64 (15625,)  test accuracy in percent, one seed, as published (LightOn's ``.npy``)
    ``lat_<device>``         float64 (15625,)  latency in ms as published by HELP, one per device file (27).
                             pixel2, samsung_a50, samsung_s7 and essential_ph_1 hold integer ms; float64 keeps every
                             value of every file exact (checked).
``macro.npz`` (NAS-Bench-Macro, CIFAR-10, 6,561 = 3^8 networks, rows sorted by code)
    ``code`` unicode (6561,) 8 digits (0 identity, 1 MBConv k3 e3, 2 MBConv k5 e6); ``test_acc`` float64 (6561, 3)
    (three seeds, percent); ``mean_acc``, ``std`` float64 (6561,); ``params``, ``flops`` int64 (6561,)
``transnas_micro.npz`` (TransNAS-Bench-101 micro, 4,096 cells, NASLib's zero-cost benchmark files)
    ``arch``                 unicode (4096,)   the cell in NB201 string form with the ops ``none``, ``skip_connect``,
                             ``nor_conv_1x1``, ``nor_conv_3x3``; rows in ``itertools.product(range(4), repeat=6)``
                             order of NASLib's op-index tuple (see below)
    ``val_<task>``           float64 (4096,)   NASLib's ``val_accuracy`` field as published, for the 7 tasks (the
                             task's own metric: top-1 % for class_scene/class_object/jigsaw, accuracy % for
                             segmentsemantic, negative loss for room_layout, SSIM for normal/autoencoder)
    ``zen_<task>``           float64 (4096,)   NASLib's Zen-score as published; -1e8 is NASLib's sentinel for a
                             cell whose output is cut off from its input (169 cells; their val is one constant
                             in the classification and segmentsemantic tasks, near-constant in room_layout)

NASLib's TransNAS-Bench-101 micro encoding (read in automl/NASLib at commit 7a5496e2211d8ab65da40e0e2d5333aba87df614,
the commit the zip comes from): ``naslib/runners/benchmarks/runner.py`` writes ``'arch': str(arch)`` for the
op-index tuple it passed to ``graph.set_spec`` and takes ``val_accuracy`` from ``graph.query``;
``naslib/search_spaces/__init__.py`` builds ``TransBench101SearchSpaceMicro`` with ``create_graph=False`` for these
seven tasks, so ``naslib/search_spaces/transbench101/graph.py`` (``query``, ``set_op_indices``) turns the tuple
``(a, b, c, d, e, f)`` into TransNAS-Bench's own string with ``convert_op_indices_micro_to_str`` in
``naslib/search_spaces/transbench101/conversions.py``: ``'64-41414-{a}_{b}{c}_{d}{e}{f}'``. TransNAS-Bench parses
that (``tnb101/models/net_infer/net_macro.py``: ``[''] + code.split('_')``; ``tnb101/models/net_infer/cell_micro.py``:
node n takes one op from each node < n) with ``tnb101/models/net_ops/cell_ops.py``'s ``OPS``:
``'0'`` Zero, ``'1'`` Identity (FactorizedReduce where the cell reduces), ``'2'`` ReLUConvBN 1x1,
``'3'`` ReLUConvBN 3x3.
So the tuple is in target-node order, the same edge order as the NB201 string:
``a: 1<-0, b: 2<-0, c: 2<-1, d: 3<-0, e: 3<-1, f: 3<-2`` and ops ``0 none, 1 skip_connect, 2 nor_conv_1x1,
3 nor_conv_3x3``. Trap: ``conversions.py`` also defines ``OP_NAMES = ['Identity', 'Zero', 'ReLUConvBN3x3',
'ReLUConvBN1x1']`` with the source-major ``EDGE_LIST = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))``; those
apply only to ``create_graph=True`` (svhn, ninapro, scifar100), not to these files. The script checks the decoding
on the data: the cells it decodes as output-disconnected must be exactly those with the Zen sentinel, in every task.

The ``.npz`` files are written with fixed zip timestamps, so a rebuild from the same archives is byte-identical.
``LICENSES.md`` (each source's LICENSE) and ``PROVENANCE.md`` (sources, archive and output sha256s, what was done)
are written beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import math
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.spaces.nb201 import parse_cell

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "data" / "benchmarks"
DEFAULT_OUT = REPO / "hwnas" / "tabular" / "data"
REBUILD = "python benchmarks/convert_tabular.py"

N_NB201 = 15_625
N_MACRO = 6_561
N_TRANSNAS = 4_096
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_ACC_FILES = {"cifar10": "cifar10_test_accs.npy", "cifar100": "cifar100_test_accs.npy",
                   "imagenet16-120": "ImageNet16-120_test_accs.npy"}
NB201_DEVICES = tuple(sorted(
    [f"{gpu}_{batch}" for gpu in ("1080ti", "2080ti", "titan_rtx", "titanx", "titanxp") for batch in (1, 32, 256)]
    + ["gold_6226", "gold_6240", "silver_4114", "silver_4210r", "pixel2", "pixel3", "samsung_a50", "samsung_s7",
       "essential_ph_1", "raspi4", "eyeriss", "fpga"]))
TRANSNAS_TASKS = ("class_scene", "class_object", "room_layout", "jigsaw", "segmentsemantic", "normal", "autoencoder")
TRANSNAS_CHUNKS = (0, 1000, 2000, 3000, 4000)
# NASLib op index -> TransNAS-Bench op -> NB201 op name (cell_ops.py OPS: '0' Zero, '1' Identity, '2' 1x1, '3' 3x3)
TRANSNAS_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
# tuple position -> (target node, source node): target-node order, as in '64-41414-{a}_{b}{c}_{d}{e}{f}'
TRANSNAS_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
ZEN_SENTINEL = -1e8


@dataclass(frozen=True)
class Source:
    """One archive of shared/data/benchmarks, as its README.md describes it."""

    archive: str
    sha256: str
    licence: str
    repo: str
    commit: str
    files: str
    covers: str


SOURCES = (
    Source("nb201-accuracy.tar.xz", "95be01953e69f0cfc483c45b5eb840a066e1fbf930859748eb578921916e67c1", "MIT (LightOn)",
           "github.com/lightonai/contrastive-embeddings-for-neural-architectures",
           "8606a4a4d7ea9ed9c01964660e8b2afb1e003480",
           "SearchSpaces/Bench201/{configs.txt, cifar10_test_accs.npy, cifar100_test_accs.npy, "
           "ImageNet16-120_test_accs.npy}",
           "`nb201.npz`: `arch`, `acc_*`"),
    Source("nb201-latency.tar.xz", "65da0cd708d02392d8bb4fddc40c9e55e5b0ae2e86636e8452e99fb946fa98db",
           "MIT (HELP authors)", "github.com/HayeonLee/HELP", "45f70eb92d0d735970a33b608d1544ad3c52f285",
           "data/nasbench201/latency/*.pt (27 devices), data/nasbench201/str_arch2idx.pt",
           "`nb201.npz`: `lat_*` (and the check of `arch`); HELP redistributes HW-NAS-Bench's measurements as "
           "`raspi4`, `pixel3`, `eyeriss` and `fpga`"),
    Source("nas-bench-macro.tar.xz", "aed65bb92b937f8007a5bef2d3d49aae557c47c69be2c0dfd976e26d8dc53182", "Apache-2.0",
           "github.com/xiusu/NAS-Bench-Macro", "61a2bfc2ca0dce04d0997e6cf498047c27d6acf2",
           "data/nas-bench-macro_cifar10.json", "`macro.npz`"),
    Source("transnas-micro.tar.xz", "8f5c45e3f1a5882180673c63692ecc88064235f71c8b5d4b2ef31fdd3972861e",
           "Apache-2.0 (NASLib)", "github.com/automl/NASLib", "7a5496e2211d8ab65da40e0e2d5333aba87df614",
           "naslib/data/zc_benchmarks/all_benchmarks_zen.zip", "`transnas_micro.npz`"),
)


class ConversionError(RuntimeError):
    """The shared data is not what this script expects: nothing is written."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConversionError(message)


class Archive:
    """The members of one ``.tar.xz``, read into memory (the largest is 1.5 MB)."""

    def __init__(self, path: Path, source: Source) -> None:
        _check(path.is_file(), f"{path}: missing")
        data = path.read_bytes()
        self.path = path
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.size = len(data)
        _check(self.sha256 == source.sha256,
               f"{path}: sha256 {self.sha256} differs from the README's {source.sha256}; review the new data first")
        self.members: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
            for info in tar.getmembers():
                if info.isfile():
                    handle = tar.extractfile(info)
                    assert handle is not None
                    self.members[info.name] = handle.read()

    def read(self, name: str) -> bytes:
        _check(name in self.members, f"{self.path}: no member {name}")
        return self.members[name]


# --------------------------------------------------------------------------------------------------------- NB201

def _finite_vector(values: Any, n: int, what: str, positive: bool = False) -> np.ndarray:
    """A float64 (n,) array holding exactly ``values`` (a list of Python numbers or an array)."""
    if isinstance(values, np.ndarray):
        _check(values.dtype == np.float64 and values.shape == (n,), f"{what}: {values.dtype} {values.shape}")
        array = values.astype(np.float64)
    else:
        _check(isinstance(values, list) and len(values) == n, f"{what}: not a list of {n}")
        _check(all(type(v) in (int, float) for v in values), f"{what}: not all int/float")
        array = np.array(values, dtype=np.float64)
        _check(all(float(a) == v for a, v in zip(array.tolist(), values, strict=True)), f"{what}: float64 not exact")
    _check(bool(np.isfinite(array).all()), f"{what}: non-finite values")
    if positive:
        _check(bool((array > 0).all()), f"{what}: non-positive values")
    return array


def _nb201_string_ok(arch: str) -> bool:
    nodes = arch.split("+")
    if len(nodes) != 3:
        return False
    for target, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            return False
        edges = node[1:-1].split("|")
        if len(edges) != target:
            return False
        for source, edge in enumerate(edges):
            op, _, src = edge.partition("~")
            if op not in NB201_OPS or src != str(source):
                return False
    return True


def convert_nb201(accuracy: Archive, latency: Archive) -> tuple[dict[str, np.ndarray], list[str]]:
    import torch  # only the converter needs torch: HELP's files are PyTorch zips holding plain lists

    notes: list[str] = []
    text = accuracy.read("nb201-accuracy/configs.txt").decode("ascii")
    archs = text.splitlines()
    _check(len(archs) == N_NB201, f"configs.txt: {len(archs)} lines, expected {N_NB201}")
    _check(len(set(archs)) == N_NB201, "configs.txt: duplicate architecture strings")
    _check(all(_nb201_string_ok(a) for a in archs), "configs.txt: a line is not an NB201 architecture string")
    first = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    _check(archs[0] == first, "configs.txt: index 0 is not the README's architecture")

    str_arch2idx = torch.load(io.BytesIO(latency.read("nb201-latency/str_arch2idx.pt")), weights_only=True)
    _check(isinstance(str_arch2idx, dict) and len(str_arch2idx) == N_NB201, "str_arch2idx.pt: not a dict of 15,625")
    disagree = [i for i, a in enumerate(archs) if str_arch2idx.get(a) != i]
    _check(not disagree, f"configs.txt and str_arch2idx.pt disagree on {len(disagree)} indices, e.g. {disagree[:5]}")
    notes.append("configs.txt and HELP's str_arch2idx.pt agree on all 15,625 indices.")

    out: dict[str, np.ndarray] = {"arch": np.array(archs, dtype=np.str_)}
    for dataset, name in NB201_ACC_FILES.items():
        acc = np.load(io.BytesIO(accuracy.read(f"nb201-accuracy/{name}")), allow_pickle=False)
        acc = _finite_vector(acc, N_NB201, name)
        _check(bool(((acc >= 0) & (acc <= 100)).all()), f"{name}: accuracy outside [0, 100]")
        out[f"acc_{dataset}"] = acc
    for dataset, (best, index) in {"cifar10": (94.41, 3731), "cifar100": (73.66, 2778),
                                   "imagenet16-120": (47.33, 81)}.items():
        acc = out[f"acc_{dataset}"]
        _check(int(acc.argmax()) == index and round(float(acc.max()), 2) == best,
               f"{dataset}: maximum {acc.max()} at {acc.argmax()}, README says {best} at {index}")

    names = sorted(n.removeprefix("nb201-latency/").removesuffix(".pt") for n in latency.members
                   if n.endswith(".pt") and not n.endswith("/str_arch2idx.pt"))
    _check(tuple(names) == NB201_DEVICES, f"latency devices {names} differ from the README's 27")
    integer_devices = []
    for device in NB201_DEVICES:
        values = torch.load(io.BytesIO(latency.read(f"nb201-latency/{device}.pt")), weights_only=True)
        out[f"lat_{device}"] = _finite_vector(values, N_NB201, f"{device}.pt", positive=True)
        if all(type(v) is int for v in values):
            integer_devices.append(device)
    notes.append(f"Integer-ms latency files (stored as exact float64): {', '.join(integer_devices)}.")
    cut = np.array([not parse_cell(a).is_connected() for a in archs])  # no input-output path
    notes.append(f"{int(cut.sum())} NB201 cells have no path from input to output (CIFAR-10 accuracy "
                 f"{sorted(set(out['acc_cifar10'][cut].tolist()))}).")
    for device in NB201_DEVICES:
        tiny = out[f"lat_{device}"] < 0.1
        if tiny.any():
            notes.append(f"{device}: {int(tiny.sum())} latencies under 0.1 ms (min {out[f'lat_{device}'].min():.3g}); "
                         f"{int((tiny & cut).sum())} of them are cells without an input-output path, "
                         f"{int((tiny & ~cut).sum())} are not.")
    return out, notes


# --------------------------------------------------------------------------------------------------------- Macro

def convert_macro(archive: Archive) -> tuple[dict[str, np.ndarray], list[str]]:
    table = json.loads(archive.read("nas-bench-macro/nas-bench-macro_cifar10.json"))
    _check(isinstance(table, dict), "macro json: not an object")
    expected = {"".join(c) for c in itertools.product("012", repeat=8)}
    _check(set(table) == expected, f"macro json: keys are not the {N_MACRO} 8-digit codes over 0, 1, 2")
    codes = sorted(table)
    fields = {"test_acc", "mean_acc", "std", "params", "flops"}
    for code in codes:
        entry = table[code]
        _check(isinstance(entry, dict) and set(entry) == fields, f"macro {code}: fields {sorted(entry)}")
        _check(isinstance(entry["test_acc"], list) and len(entry["test_acc"]) == 3, f"macro {code}: test_acc")
        _check(all(type(entry[k]) is int and entry[k] > 0 for k in ("params", "flops")), f"macro {code}: params")
    test_acc = np.array([table[c]["test_acc"] for c in codes], dtype=np.float64)
    _check(test_acc.shape == (N_MACRO, 3) and bool(np.isfinite(test_acc).all()), "macro: test_acc")
    out = {
        "code": np.array(codes, dtype=np.str_),
        "test_acc": test_acc,
        "mean_acc": _finite_vector([table[c]["mean_acc"] for c in codes], N_MACRO, "macro mean_acc"),
        "std": _finite_vector([table[c]["std"] for c in codes], N_MACRO, "macro std"),
        "params": np.array([table[c]["params"] for c in codes], dtype=np.int64),
        "flops": np.array([table[c]["flops"] for c in codes], dtype=np.int64),
    }
    for code, params, flops in (("02012100", 890_666, 47_327_744), ("00000000", 387_882, 7_713_280)):
        i = codes.index(code)
        _check((int(out["params"][i]), int(out["flops"][i])) == (params, flops), f"macro {code}: README example")
    worst = float(np.abs(test_acc.mean(axis=1) - out["mean_acc"]).max())
    notes = [f"mean_acc equals the mean of test_acc to within {worst:.1e}."]
    return out, notes


# ------------------------------------------------------------------------------------------------------ TransNAS

def transnas_string(op_indices: tuple[int, ...]) -> str:
    """NASLib's TransNAS micro tuple ``(a, b, c, d, e, f)`` as an NB201-format cell string (see the docstring)."""
    ops = [TRANSNAS_OPS[i] for i in op_indices]
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def _output_disconnected(op_indices: tuple[int, ...]) -> bool:
    """Whether no path of non-``none`` edges joins node 0 to node 3."""
    reached = {0}
    for (target, source), op in zip(TRANSNAS_EDGES, op_indices, strict=True):
        if op != 0 and source in reached:
            reached.add(target)
    return 3 not in reached


def _parse_tuple(text: Any) -> tuple[int, ...]:
    _check(isinstance(text, str) and text.startswith("(") and text.endswith(")"), f"transnas arch {text!r}")
    parts = text[1:-1].split(",")
    _check(len(parts) == 6 and all(p.strip() in ("0", "1", "2", "3") for p in parts), f"transnas arch {text!r}")
    return tuple(int(p) for p in parts)


def convert_transnas(archive: Archive) -> tuple[dict[str, np.ndarray], list[str]]:
    zipped = zipfile.ZipFile(io.BytesIO(archive.read("transnas-micro/all_benchmarks_zen.zip")))
    order = list(itertools.product(range(4), repeat=6))
    out: dict[str, np.ndarray] = {"arch": np.array([transnas_string(t) for t in order], dtype=np.str_)}
    notes: list[str] = []
    idx_to_arch: dict[int, tuple[int, ...]] | None = None
    disconnected = {t for t in order if _output_disconnected(t)}
    for task in TRANSNAS_TASKS:
        rows: dict[tuple[int, ...], tuple[float, float]] = {}
        ids: dict[int, tuple[int, ...]] = {}
        exact_duplicates = 0
        for chunk in TRANSNAS_CHUNKS:
            name = f"zen/benchmark--transbench101_micro--{task}--{chunk}.json"
            records = json.loads(zipped.read(name))
            _check(isinstance(records, list) and records, f"{name}: not a list of records")
            for record in records:
                _check(isinstance(record, dict) and {"idx", "arch", "val_accuracy", "zen"} <= set(record),
                       f"{name}: record fields")
                arch = _parse_tuple(record["arch"])
                val, zen = record["val_accuracy"], record["zen"]["score"]
                _check(type(val) is float and math.isfinite(val), f"{name}: val_accuracy {val!r}")
                _check(type(zen) is float and math.isfinite(zen), f"{name}: zen {zen!r}")
                if arch in rows:
                    _check(rows[arch] == (val, zen), f"{task}: conflicting duplicate records for {arch}")
                    exact_duplicates += 1
                rows[arch] = (val, zen)
                idx = int(record["idx"])
                _check(ids.setdefault(idx, arch) == arch, f"{task}: idx {idx} names two archs")
        _check(len(rows) == N_TRANSNAS and set(rows) == set(order), f"{task}: {len(rows)} distinct archs, not 4,096")
        _check(set(ids) == set(range(N_TRANSNAS)), f"{task}: idx is not 0..4095")
        if idx_to_arch is None:
            idx_to_arch = ids
        _check(ids == idx_to_arch, f"{task}: NASLib's idx -> arch differs from {TRANSNAS_TASKS[0]}'s")
        if exact_duplicates:
            notes.append(f"{task}: {exact_duplicates} exact duplicate records dropped.")
        sentinel = {t for t, (_, zen) in rows.items() if zen == ZEN_SENTINEL}
        _check(sentinel == disconnected,
               f"{task}: Zen sentinel cells ({len(sentinel)}) are not the cells decoded as disconnected "
               f"({len(disconnected)}): the tuple decoding is wrong")
        cut = sorted({rows[t][0] for t in disconnected})
        rest = [v for t, (v, _) in rows.items() if t not in disconnected]
        out[f"val_{task}"] = np.array([rows[t][0] for t in order], dtype=np.float64)
        out[f"zen_{task}"] = np.array([rows[t][1] for t in order], dtype=np.float64)
        cut_text = f"{cut[0]:.6g}" if len(cut) == 1 else f"{len(cut)} values in [{cut[0]:.6g}, {cut[-1]:.6g}]"
        notes.append(f"{task}: 4,096 distinct archs over {len(TRANSNAS_CHUNKS)} files; val_accuracy of the "
                     f"{len(disconnected)} disconnected cells (all Zen {ZEN_SENTINEL:g}): {cut_text}; of the others: "
                     f"[{min(rest):.6g}, {max(rest):.6g}].")
    assert idx_to_arch is not None
    product_order = [idx_to_arch[i] for i in range(N_TRANSNAS)] == order
    notes.append("NASLib's idx order " + ("is" if product_order else "is not") +
                 " itertools.product order; rows here are in product order of the tuple.")
    return out, notes


# ------------------------------------------------------------------------------------------------------- writing

def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps (reproducible bytes); refuses object arrays."""
    tmp = path.with_suffix(".npz.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            _check(not array.dtype.hasobject, f"{name}: object array")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
    tmp.replace(path)


def _verify(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with np.load(path, allow_pickle=False) as loaded:
        _check(set(loaded.files) == set(arrays), f"{path}: written arrays differ")
        for name, array in arrays.items():
            got = loaded[name]
            _check(got.dtype == array.dtype and np.array_equal(got, array), f"{path}: {name} does not read back")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def licenses_md(archives: Mapping[str, Archive]) -> str:
    parts = ["# Licences of the tabular benchmark data", "",
             "Each data file in this folder is derived from published benchmark results; the source's LICENSE is "
             "copied below verbatim from its archive in `shared/data/benchmarks/` (see PROVENANCE.md).", ""]
    for source in SOURCES:
        folder = source.archive.removesuffix(".tar.xz")
        text = archives[source.archive].read(f"{folder}/LICENSE").decode("utf-8")
        parts += [f"## {source.licence}: {source.repo}", "",
                  f"Covers {source.covers} (from `{source.archive}`, `{folder}/LICENSE`).", "", "```text",
                  text.rstrip("\n"), "```", ""]
    return "\n".join(parts)


def provenance_md(archives: Mapping[str, Archive], outputs: Mapping[str, Path], notes: list[str]) -> str:
    rows = ["| archive | bytes | sha256 | source | commit | files | licence |", "|---|---|---|---|---|---|---|"]
    for s in SOURCES:
        a = archives[s.archive]
        rows.append(f"| `{s.archive}` | {a.size:,} | `{a.sha256}` | {s.repo} | `{s.commit}` | {s.files} "
                    f"| {s.licence} |")
    out_rows = ["| file | bytes | sha256 |", "|---|---|---|"]
    out_rows += [f"| `{name}` | {path.stat().st_size:,} | `{_sha256(path)}` |" for name, path in outputs.items()]
    return "\n".join([
        "# Provenance of the tabular benchmark data", "",
        "Converted from the offline copies in `shared/data/benchmarks/` (its README.md gives the formats and the "
        "papers to cite: NAS-Bench-201, HW-NAS-Bench and HELP, NAS-Bench-Macro, TransNAS-Bench-101).", "",
        "## Sources", "", *rows, "",
        "## Outputs", "", *out_rows, "",
        "## What the conversion did", "",
        "- `nb201.npz`: `arch` = the lines of `configs.txt` (official NB201 index order, checked against HELP's "
        "`str_arch2idx.pt`); `acc_cifar10`, `acc_cifar100`, `acc_imagenet16-120` = LightOn's `.npy` test accuracies "
        "(%, one seed) unchanged; `lat_<device>` = HELP's 27 latency lists (ms) as float64 (exact, checked).",
        "- `macro.npz`: NAS-Bench-Macro's JSON, rows sorted by the 8-digit `code`; `test_acc` (3 seeds, %), "
        "`mean_acc`, `std` float64; `params`, `flops` int64; values unchanged.",
        "- `transnas_micro.npz`: NASLib's 35 Zen benchmark JSONs (7 tasks x chunks 0..4000); NASLib's op-index "
        "tuple `(a, b, c, d, e, f)` = TransNAS-Bench string `64-41414-a_bc_def`, decoded to "
        "`|a~0|+|b~0|c~1|+|d~0|e~1|f~2|` with ops 0 `none`, 1 `skip_connect`, 2 `nor_conv_1x1`, 3 `nor_conv_3x3` "
        "(NASLib `naslib/search_spaces/transbench101/conversions.py` `convert_op_indices_micro_to_str`, used by "
        "`graph.py` because `create_graph=False` for these tasks); rows in `itertools.product(range(4), repeat=6)` "
        "order of the tuple; `val_<task>` = `val_accuracy`, `zen_<task>` = Zen score, as published.",
        "- The encoding was read in NASLib at the commit above: `naslib/runners/benchmarks/runner.py` (writes "
        "`str(arch)` and `graph.query`'s val accuracy), `naslib/search_spaces/__init__.py` (`create_graph=False` "
        "for these tasks), `naslib/search_spaces/transbench101/graph.py` and `conversions.py` "
        "(`convert_op_indices_micro_to_str`), `tnb101/models/net_ops/cell_ops.py` (`OPS`: 0 Zero, 1 Identity, "
        "2 ReLUConvBN 1x1, 3 ReLUConvBN 3x3). Not `conversions.py`'s `OP_NAMES`/`EDGE_LIST` (Identity=0, Zero=1, "
        "source-major edges), which serve only `create_graph=True`. Checked on the data: the 169 cells decoded as "
        "having no input-output path are exactly those with NASLib's Zen sentinel -1e8, in all 7 tasks.",
        "- Each archive's sha256 is checked against the one in `shared/data/benchmarks/README.md` before use.",
        "- Written without pickle (no object arrays) and with fixed zip timestamps, so a rebuild is "
        "byte-identical.", "",
        "## Checks and observations", "", *[f"- {n}" for n in notes], "",
        "## Rebuild", "", "From the repository root, with `shared/` cloned beside it and torch installed:", "",
        "```sh", f"{REBUILD} --shared ../shared/data/benchmarks --out hwnas/tabular/data", "```", "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder of the benchmark archives")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="package data folder to write")
    args = parser.parse_args(argv)
    try:
        archives = {s.archive: Archive(args.shared / s.archive, s) for s in SOURCES}
        nb201, nb201_notes = convert_nb201(archives["nb201-accuracy.tar.xz"], archives["nb201-latency.tar.xz"])
        macro, macro_notes = convert_macro(archives["nas-bench-macro.tar.xz"])
        transnas, transnas_notes = convert_transnas(archives["transnas-micro.tar.xz"])
    except ConversionError as exc:
        print(f"convert_tabular: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    for name, arrays in (("nb201.npz", nb201), ("macro.npz", macro), ("transnas_micro.npz", transnas)):
        path = args.out / name
        write_npz(path, arrays)
        _verify(path, arrays)
        outputs[name] = path
    (args.out / "LICENSES.md").write_text(licenses_md(archives), encoding="utf-8")
    notes = nb201_notes + macro_notes + transnas_notes
    (args.out / "PROVENANCE.md").write_text(provenance_md(archives, outputs, notes), encoding="utf-8")
    for path in outputs.values():
        print(f"{path}: {path.stat().st_size:,} bytes")
    for note in notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
