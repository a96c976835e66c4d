"""Fuzz tests (issue #23): hostile versions of every file type the CLI reads.

Each example writes one hostile input file (or folder) and runs a command that reads it, in this process
(``hwnas.cli.main``). The contract, checked for every example:

* the command succeeds (exit 0) or refuses the input with exit 2 and exactly one line on stderr,
  ``hwnas: error: ...`` -- never a traceback, another exit code or a hang (a Python warning printed before the
  error line counts as a line; ``--json`` output of a success is strict JSON);
* the input is left as it was: every file's bytes and modification time;
* nothing new is left beside it: the example's folder lists what it listed before, plus the outputs the
  command was asked to write.

Inputs start from valid seed files and are mutated structurally -- keys dropped, duplicated, renamed or added;
values of the wrong type; a 400-digit integer, 1e400, -0, NaN, deep nesting, unicode, empty strings --
then sometimes at the byte level (truncation, flipped bytes, another encoding):

=====================  ==================================================================================
file type              commands
=====================  ==================================================================================
TOML recipe            space info/sample --recipe; search --recipe; transfer --recipe; bench --recipes
latency table JSON     latency predict --table; scale family --table; search --table
Optuna study (SQLite)  export --storage (--trial N / --pareto); search --resume (a benchmark study);
                       transfer --source-storage; report --storage
checkpoint (.pt)       export --weights; train ARCH --resume
ImageFolder folder     data prepare --data-dir
archive (.tar[.gz|xz]) data prepare --data-dir
genotype JSON          describe; latency predict; scale family
scale search result    scale family --from-search
data cache (.npz)      data prepare --data-dir
=====================  ==================================================================================

Nothing trains or searches for real: ``search`` and ``transfer`` run with their study file's place taken by a
folder, so they stop with a one-line error right after they have read and checked the recipe, the latency
table, the data and (transfer) the source study (``STOP``); ``train --resume`` is given a data folder that
does not exist, so it stops after it has read and checked the checkpoint; ``bench`` is given an unknown
strategy, checked after the recipes. ``search --resume`` continues a benchmark study to the trials it has
(nothing new runs; its outputs are written again).

``test_inputs_the_fuzzers_found`` replays, deterministically, the smallest input of each kind of failure the
fuzzers have found.

Run (one process; ``DEFAULT_EXAMPLES`` examples per file type, about a minute and a half on one core)::

    .venv/bin/pytest -q -p no:cacheprovider -n 0 tests/test_fuzz.py

More examples (before a release, or after a change to a reader), or another random sequence::

    HWNAS_FUZZ_EXAMPLES=1000 .venv/bin/pytest -q -p no:cacheprovider -n 0 tests/test_fuzz.py
    .venv/bin/pytest -q -p no:cacheprovider -n 0 tests/test_fuzz.py --hypothesis-seed=12345

A failure shows its input: the draws, and notes that say how it was made (shrunk to a small one, except for
studies and checkpoints, see ``FUZZ_UNSHRUNK``), and a ``@reproduce_failure`` line that replays it.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import stat
import sys
import tarfile
import tempfile
import tomllib
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from hwnas.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXAMPLES = 30  # per file type; HWNAS_FUZZ_EXAMPLES overrides it
EXAMPLES = int(os.environ.get("HWNAS_FUZZ_EXAMPLES", str(DEFAULT_EXAMPLES)))
HANG_S = 120  # one command on one hostile input: longer is a hang
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])
# studies and checkpoints: an example can take seconds (an ONNX export), and shrinking one failure took five
# minutes; their failures are reported as found (the notes say how the input was made, and the
# @reproduce_failure line replays it)
FUZZ_UNSHRUNK = settings(FUZZ, phases=[Phase.explicit, Phase.reuse, Phase.generate])
ERROR_LINE = re.compile(r"hwnas( [a-z-]+)*: error: ")
TINY_ARCH = "relu6,stem8,ds_r1_k3_s1_c8,head16"  # a checkpoint's network: exported in well under a second
STOP = "x"  # --study-name of the stopped searches: RUN_DIR/x.db is a folder, which Optuna cannot open

pytestmark = pytest.mark.xdist_group("fuzz")  # one process: the seeds (a study, decoded data) are made once


# ==== the contract ========================================================================================
class Hang(BaseException):
    """A command ran past ``HANG_S`` (a BaseException: no ``except Exception`` of the product catches it)."""


@dataclass
class Run:
    argv: list[str]
    rc: int | None
    out: str
    err: str
    warned: list[str] = field(default_factory=list)
    tb: str | None = None


Snapshot = dict[str, tuple[int, int, str]]


def snapshot(root: Path) -> Snapshot:
    """Every entry under ``root`` (links not followed): relative path -> (type, mtime, content digest). Folder
    times are left out: writing an allowed output into a folder changes its time."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            p = Path(dirpath, name)
            st_ = p.lstat()
            kind = stat.S_IFMT(st_.st_mode)
            if stat.S_ISREG(st_.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st_.st_mode):
                digest = os.readlink(p)
            else:
                digest = ""
            out[str(p.relative_to(root))] = (kind, 0 if stat.S_ISDIR(st_.st_mode) else st_.st_mtime_ns, digest)
    return out


def _under(rel: str, prefixes: tuple[str, ...]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in prefixes)


@contextlib.contextmanager
def _hang_guard(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def call(argv: list[str], capfd: pytest.CaptureFixture[str], cwd: Path) -> Run:
    """``hwnas ARGV`` in this process, in ``cwd``. stdout is a strict UTF-8 stream as a real one is (a string
    it cannot encode is an error there, not a replacement character); Python warnings are recorded with the
    interpreter's default filters: the real command would print them on stderr."""
    capfd.readouterr()
    raw = io.BytesIO()
    strict = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    saved_out, here = sys.stdout, os.getcwd()
    rc: int | None = None
    tb = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", hidden)
        try:
            os.chdir(cwd)
            sys.stdout = strict
            with _hang_guard(HANG_S):
                rc = main(argv)
        except SystemExit as e:  # argparse, and --version/--help
            rc = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except (Exception, Hang):
            tb = traceback.format_exc()
        finally:
            sys.stdout = saved_out
            os.chdir(here)
    strict.flush()
    cap = capfd.readouterr()
    out = raw.getvalue().decode("utf-8", "replace") + cap.out
    warned = [f"{w.category.__name__}: {w.message}" for w in caught]
    return Run(argv, rc, out, cap.err, warned, tb)


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def check(capfd: pytest.CaptureFixture[str], work: Path, argv: list[str], outputs: tuple[str, ...] = (),
          changeable_on_success: tuple[str, ...] = (), json_out: bool = False) -> Run:
    """Run ``argv`` in ``work`` and assert the contract (module docstring). ``outputs``: paths under ``work``
    the command is asked to write; ``changeable_on_success``: inputs a successful run may write (a resumed
    study)."""
    if currently_in_test_context():
        note(f"argv: {argv}")
    before = snapshot(work)
    r = call(argv, capfd, work)
    after = snapshot(work)
    head = f"hwnas {' '.join(argv)}\n"

    def fail(why: str) -> None:
        raise AssertionError(f"{why}\n{head}exit {r.rc}\nstderr:\n{r.err[-3000:]}\nwarnings: {r.warned}\n"
                             f"{r.tb or ''}")

    if r.tb is not None:
        fail("an exception escaped main() (a traceback)")
    if "Traceback (most recent call last)" in r.err:
        fail("a traceback on stderr")
    if r.rc == 2:
        lines = r.err.strip().splitlines() + r.warned
        if len(lines) != 1 or not ERROR_LINE.match(lines[0]):
            fail(f"exit 2 must print exactly one line 'hwnas: error: ...' (got {len(lines)})")
    elif r.rc == 0:
        if json_out:
            try:
                _strict_json(r.out)
            except ValueError as e:
                fail(f"--json output is not strict JSON: {e}; stdout starts {r.out[:300]!r}")
    else:
        fail(f"exit code {r.rc}: expected 0 (success) or 2 (one-line refusal)")
    may_change = changeable_on_success if r.rc == 0 else ()
    for rel, entry in before.items():
        if _under(rel, outputs) or _under(rel, may_change):
            continue
        if rel not in after:
            fail(f"input {rel} was removed")
        if after[rel] != entry:
            fail(f"input {rel} was changed (type, mtime or bytes): {entry} -> {after[rel]}")
    new = sorted(rel for rel in set(after) - set(before) if not _under(rel, outputs))
    if new:
        fail(f"new files left beside the input: {new[:10]}")
    return r


def example_dir() -> tempfile.TemporaryDirectory[str]:
    """A fresh folder for one example (removed after it)."""
    return tempfile.TemporaryDirectory(prefix="hwnas-fuzz-")


class Quiet:
    """A drawn value shown short in Hypothesis's reports (its notes say how it was made)."""

    def __init__(self, value: Any, what: str) -> None:
        self.value, self.what = value, what

    def __repr__(self) -> str:
        size = f"{len(self.value)} bytes" if isinstance(self.value, bytes) else type(self.value).__name__
        return f"<{self.what}: {size}>"


@st.composite
def quiet(draw: st.DrawFn, strategy: st.SearchStrategy[Any], what: str) -> Quiet:
    return Quiet(draw(strategy), what)


# ==== writing documents ===================================================================================
class Raw(str):
    """Text put into a JSON or TOML document as it is: a number no float holds (1e400), -0, NaN, a date."""


@dataclass
class Pairs:
    """An object written with these (key, value) pairs, in order: duplicate keys are possible."""

    items: list[tuple[str, Any]]


def _items(v: dict[str, Any] | Pairs) -> list[tuple[str, Any]]:
    return v.items if isinstance(v, Pairs) else list(v.items())


def json_text(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, (dict, Pairs)):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {json_text(x)}" for k, x in _items(v)) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(json_text(x) for x in v) + "]"
    return json.dumps(v)  # NaN, Infinity as Python's json writes them; a lone surrogate as its escape


def _toml_key(k: Any) -> str:
    k = str(k)
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_str(k)


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)  # a lone surrogate stays: written as invalid UTF-8
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (dict, Pairs)):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(x)}" for k, x in _items(v) if x is not None) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v if x is not None) + "]"
    return _toml_str(repr(v))


def _is_table(v: Any) -> bool:
    return isinstance(v, (dict, Pairs))


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_text(doc: Any, prefix: tuple[str, ...] = ()) -> str:
    """A TOML document: scalars first, then ``[tables]`` and ``[[arrays of tables]]`` (None values left out)."""
    if not _is_table(doc):
        return f"value = {toml_value(doc)}\n"
    items = _items(doc)
    lines = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in items
             if v is not None and not _is_table(v) and not _is_table_array(v)]
    for k, v in items:
        name = ".".join(_toml_key(p) for p in (*prefix, k))
        if _is_table(v):
            lines += ["", f"[{name}]", toml_text(v, (*prefix, k)).rstrip("\n")]
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{name}]]", toml_text(item, (*prefix, k)).rstrip("\n")]
    return "\n".join(lines) + "\n"


# ==== structural mutation =================================================================================
BIG = 10**400
COMMON_HOSTILE: list[Any] = [
    True, False, 0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, BIG, -BIG, 0.5, -0.0, 1e308, 5e-324, math.nan,
    math.inf, -math.inf, "", " ", "0", "-1", "1e400", "NaN", "inf", "true", "null", "\x00", "\x7f", "é", "日本語",
    "💥", "\u202eevil", "x" * 5000, "../x", "C:\\x", "line1\nline2", "\ud800", "1" * 400, [], {}, [[]], {"": ""},
    [0] * 200,
]
JSON_HOSTILE: list[Any] = [None, Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("-Infinity"), Raw("Infinity"), Raw("-0"),
                           Raw("1" + "0" * 400), Raw("1e-400"), Raw("1E999999999999999999"), Raw("-0.0e-0")]
TOML_HOSTILE: list[Any] = [Raw("nan"), Raw("+inf"), Raw("-inf"), Raw("1e400"), Raw("-0.0"), Raw("0x7FFFFFFFFFFFFFFF"),
                           Raw("0o777"), Raw("0b1"), Raw("1_000_000"), Raw("9" * 400), Raw("1979-05-27T07:32:00Z"),
                           Raw("1979-05-27"), Raw("07:32:00"), Raw("'lit\\n'"), Raw('"""two\nlines"""'),
                           datetime.date(2024, 1, 1)]


def torch_hostile() -> list[Any]:
    import torch

    return [None, torch.zeros(0), torch.tensor(math.nan), torch.full((2,), math.inf), torch.zeros(2, 2,
            dtype=torch.complex64), torch.zeros(3, dtype=torch.bool), torch.zeros(1, dtype=torch.int8),
            torch.tensor(2**62), b"\x00\xff", (1, 2), complex(1, 2), torch.Size([2, 3]), torch.float16,
            OrderedDict(a=1), {1: 2}, {None: 1}]


def _paths(v: Any, path: tuple[Any, ...] = (), out: list[tuple[Any, ...]] | None = None,
           limit: int = 2000) -> list[tuple[Any, ...]]:
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    out.append(path)
    if isinstance(v, dict):
        for k, x in v.items():
            _paths(x, (*path, k), out, limit)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _paths(x, (*path, i), out, limit)
    return out


def _get(v: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        v = v[p]
    return v


def _put(v: Any, path: tuple[Any, ...], new: Any) -> Any:
    """``v`` with the node at ``path`` replaced by ``new`` (containers on the way copied)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(v, dict):
        c: Any = type(v)(v) if isinstance(v, OrderedDict) else dict(v)
    else:
        c = list(v)
    c[head] = _put(v[head], rest, new)
    return c


def _nest(v: Any, depth: int) -> Any:
    for _ in range(depth):
        v = [v]
    return v


def _tweaks(v: Any, flavor: str) -> list[Any]:
    """Values near ``v``: off by one, of another type, out of range."""
    if isinstance(v, bool):
        return [not v, int(v), str(v).lower(), None if flavor != "toml" else 1]
    if isinstance(v, int):
        near = [float(v), v + 0.5] if abs(v) < 2**1000 else [Raw(f"{v}.0") if flavor == "json" else 1e308]
        return [v + 1, v - 1, -v, v * 1000, v + 2**63, str(v), [v], BIG if v >= 0 else -BIG, *near]
    if isinstance(v, float):
        return [-v, v * 1e300, str(v), math.nan, v + 1e-9, int(v) if math.isfinite(v) else 0, -math.inf]
    if isinstance(v, str):
        return ["", v * 50, v.upper(), v + "\x00", v[: len(v) // 2], " " + v, v + "é", v.replace("_", "-"),
                Raw(v) if v.isidentifier() else v + "\ud800", [v], 3]
    if isinstance(v, list):
        return [v * 2, v[:1], v[::-1], [*v, *v[:1]], v[1:], [v], {str(i): x for i, x in enumerate(v)}]
    if flavor == "torch":
        import torch

        if isinstance(v, torch.Tensor):
            return [v.flatten(), v[:0] if v.dim() else v.reshape(1), v.unsqueeze(0), v.to(torch.float64),
                    v.to(torch.int64), v.to(torch.bfloat16), torch.full_like(v.float(), math.nan), v.t()
                    if v.dim() == 2 else v * 1e30]
    return [str(v), None]


@st.composite
def mutated(draw: st.DrawFn, value: Any, flavor: str, max_ops: int = 3) -> Any:
    """``value`` (a JSON/TOML document or a checkpoint) after 0..max_ops structural mutations."""
    hostile = COMMON_HOSTILE + {"json": JSON_HOSTILE, "toml": TOML_HOSTILE, "torch": []}[flavor]
    if flavor == "torch":
        hostile = hostile + torch_hostile()
    n = draw(st.integers(0, max_ops))
    for _ in range(n):
        path = draw(st.sampled_from(_paths(value)))
        node = _get(value, path)
        ops = ["hostile", "tweak", "wrap", "deep"]
        if isinstance(node, dict):
            ops += ["add_key"] + (["drop_key", "dup_key", "rename_key", "empty"] if node else [])
        if isinstance(node, list):
            ops += ["add_item"] + (["drop_item", "dup_item", "empty"] if node else [])
        op = draw(st.sampled_from(ops))
        note(f"mutation at {path!r:.200}: {op}")
        if op == "hostile":
            new = draw(st.sampled_from(hostile))
        elif op == "tweak":
            new = draw(st.sampled_from(_tweaks(node, flavor)))
        elif op == "wrap":
            new = draw(st.sampled_from([[node], {"value": node}, {"": node}]))
        elif op == "deep":  # a document's as text: 100,000 levels are more than Python's recursion limit
            depth = draw(st.sampled_from([30, 200] if flavor == "torch" else [30, 200, 100_000]))
            new = _nest(node, depth) if flavor == "torch" else \
                Raw("[" * depth + (json_text if flavor == "json" else toml_value)(node) + "]" * depth)
        elif op == "add_key":
            key = draw(st.sampled_from(["extra", "", "é", "a b", "\x00", "x" * 300, *list(node)[:5]]))
            new = {**node, (key if key not in node else key + "_"): draw(st.sampled_from(hostile))}
        elif op == "drop_key":
            key = draw(st.sampled_from(list(node)))
            new = {k: x for k, x in node.items() if k != key}
        elif op == "dup_key":
            key = draw(st.sampled_from(list(node)))
            if flavor == "torch":  # a dict holds each key once: the nearest thing is another spelling of it
                new = {**node, f"{key} ": node[key]}
            else:
                new = Pairs([*node.items(), (key, draw(st.sampled_from([node[key], *hostile[:20]])))])
        elif op == "rename_key":
            key = draw(st.sampled_from(list(node)))
            other = draw(st.sampled_from([str(key).upper(), f"{key}_", f" {key}", str(key).replace("_", "-"),
                                          f"{key}é"]))
            new = {(other if k == key else k): x for k, x in node.items()}
        elif op == "empty":
            new = type(node)()
        elif op == "add_item":
            new = [*node, draw(st.sampled_from([*node[:3], *hostile]))]
        elif op == "drop_item":
            i = draw(st.integers(0, len(node) - 1))
            new = node[:i] + node[i + 1:]
        else:  # dup_item
            i = draw(st.integers(0, len(node) - 1))
            new = [*node[: i + 1], node[i], *node[i + 1:]]
        value = _put(value, path, new)
        if isinstance(new, Pairs):  # written as it is: nothing below it is mutated further
            break
    return value


@st.composite
def byte_mutated(draw: st.DrawFn, data: bytes, text: bool = False, rate: int = 3) -> bytes:
    """``data`` after 0..2 byte-level mutations, in about one example in ``rate`` (the structure-aware ones
    find more)."""
    n = draw(st.sampled_from([0] * (2 * rate - 2) + [1, 2]))
    for _ in range(n):
        ops = ["truncate", "flip", "insert", "delete", "zero", "append"]
        if text:
            ops += ["bom", "utf16", "crlf", "latin1"]
        op = draw(st.sampled_from(ops))
        size = len(data)
        note(f"byte mutation: {op}")
        if op == "truncate":
            data = data[: draw(st.integers(0, max(0, size - 1)))]
        elif op == "flip" and size:
            i = draw(st.integers(0, size - 1))
            data = data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1:]
        elif op == "insert":
            i = draw(st.integers(0, size))
            data = data[:i] + draw(st.sampled_from([b"\x00", b"\xff\xfe", b"\x80", b"{", b"]", b'"', b"\n[x]\n"])) \
                + data[i:]
        elif op == "delete" and size:
            i = draw(st.integers(0, size - 1))
            data = data[:i] + data[i + draw(st.integers(1, 64)):]
        elif op == "zero" and size:
            i = draw(st.integers(0, size - 1))
            data = data[:i] + b"\x00" * min(512, size - i) + data[i + 512:]
        elif op == "append":
            data = data + draw(st.sampled_from([b"\x00" * 100, b"garbage", b"}", b"\xde\xad"]))
        elif op == "bom":
            data = b"\xef\xbb\xbf" + data
        elif op == "utf16":
            data = data.decode("utf-8", "surrogateescape").encode("utf-16", "surrogatepass")
        elif op == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif op == "latin1":
            data = data.decode("utf-8", "replace").encode("latin-1", "replace")
    return data


# ==== seeds ===============================================================================================
RECIPE_SEEDS = [*sorted((ROOT / "search").glob("*.toml")), ROOT / "tests" / "data" / "tiny-space.toml"]
SHIPPED_TABLES = ("cpu-epyc-2core-t1-fp32-bs1-r224", "cpu-epyc-2core-t1-onnxruntime-fp32-bs1-r224",
                  "h100-fp16-bs1-r224-32")
TABLE_ARCHS = ("mobilenetv2", "efficientnet-b0", "mnasnet-a1")


@functools.cache
def table_seed(name: str) -> dict[str, Any]:
    """A small valid table: a shipped table's metadata and fit, with the entries its reference networks need."""
    from hwnas.latency.table import LatencyTable
    from hwnas.references import reference

    d = json.loads((ROOT / "latency_tables" / f"{name}.json").read_text())
    table = LatencyTable.from_dict(d, name)
    keys = {layer.key() for arch in TABLE_ARCHS for res in table.resolutions
            for layer, _ in table.layer_times(reference(arch), res)}
    return {**d, "calibration": d["calibration"][:3], "entries": {k: d["entries"][k] for k in sorted(keys)}}


@functools.cache
def shared_dir() -> Path:
    """The files examples share (seed studies, the decoded data cache), made when first needed and removed
    after the module's tests (``_shared_files_removed``)."""
    return Path(tempfile.mkdtemp(prefix="hwnas-fuzz-shared-"))


@pytest.fixture(autouse=True, scope="module")
def _shared_files_removed() -> Iterator[None]:
    yield
    if shared_dir.cache_info().currsize:
        shutil.rmtree(shared_dir(), ignore_errors=True)
    for made in (shared_dir, mbconv_study_seed, transfer_study_seed, bench_study_seed):
        made.cache_clear()


def data_cache() -> Path:
    return shared_dir() / "cache"


class _Cheap:
    """A deterministic stand-in for training: bigger networks score higher."""

    def __call__(self, g: Any) -> Any:
        from hwnas.search.run import EvalResult
        from hwnas.walker import flops

        f = flops(g, 32)
        return EvalResult(1 - math.exp(-f / 3e6) * 0.8 - (sum(map(ord, g.to_string())) % 97) / 2000,
                          details={"train_seconds": 0.0})

    def many(self, gs: list[Any]) -> list[Any]:
        return [self(g) for g in gs]


def _study(space: Any, budget: float, resolution: int, file: str) -> bytes:
    from hwnas.search.problem import Problem
    from hwnas.search.run import create_search

    db = shared_dir() / file
    obj = _Cheap()
    s = create_search(Problem(space, budgets={"flops": budget}, resolution=resolution, num_classes=10),
                      f"sqlite:///{db}", "s", "random", obj, seed=1, population=4, evaluate_many=obj.many)
    s.run(5)
    return db.read_bytes()


@functools.cache
def mbconv_study_seed() -> bytes:
    """A real study of the tiny space (32 px, 10 classes, a FLOPs budget), as ``hwnas export`` reads one: its
    networks export in under a second."""
    from hwnas.space import SearchSpace

    tiny = SearchSpace.from_dict(tomllib.loads((ROOT / "tests" / "data" / "tiny-space.toml").read_text())["space"])
    return _study(tiny, 12e6, 32, "mbconv.db")


@functools.cache
def transfer_study_seed() -> bytes:
    """A study of the default space at 224 px under the transfer recipe's 400M budget: a source ``hwnas
    transfer`` can start from."""
    from hwnas.space import SearchSpace

    return _study(SearchSpace.default(), 400e6, 224, "source.db")


BENCH_STUDY_TRIALS = 3


@functools.cache
def bench_study_seed() -> bytes:
    """A study of ``hwnas search --benchmark nb201:cifar10`` (what ``search --resume`` continues)."""
    root = shared_dir() / "bench"
    rc = main(["search", "--benchmark", "nb201:cifar10", "--trials", str(BENCH_STUDY_TRIALS), "--device", "cpu",
               "--run-dir", str(root), "--study-name", "s"])
    assert rc == 0
    return (root / "s.db").read_bytes()


@functools.cache
def checkpoint_seeds() -> dict[str, dict[str, Any]]:
    """What ``hwnas train -o`` writes: a finished training and an interrupted one (with its resume state)."""
    import torch

    from hwnas.genotype import parse_genotype
    from hwnas.model import build_model

    g = parse_genotype(TINY_ARCH)
    torch.manual_seed(0)
    model = build_model(g, 10)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    finished = {"state_dict": sd, "genotype": g.to_dict(), "num_classes": 10,
                "classes": [f"c{i}" for i in range(10)], "input_size": 32,
                "metrics": {"val_acc": 0.5, "epochs": 1.0, "train_seconds": 1.0}, "dataset": "cifar10",
                "interrupted": False}
    gen = torch.Generator()
    gen.manual_seed(0)
    resume = {"step": 3, "total": 10, "epoch_start": 0, "perm": torch.randperm(100), "generator": gen.get_state(),
              "torch_rng": torch.get_rng_state(), "momentum": {k: torch.zeros_like(v) for k, v in sd.items()
                                                               if v.is_floating_point()},
              "loss_sum": 6.5, "final_loss": None, "train_seconds": 0.5,
              "settings": {"recipe": {"batch_size": 32}, "seed": 0, "train_images": 100, "held_out_images": 20,
                           "num_classes": 10, "resolution": 32, "device": "cpu"}}
    return {"finished": finished, "interrupted": {**finished, "interrupted": True, "resume": resume}}


def genotype_seeds() -> list[Any]:
    from hwnas.genotype import parse_genotype
    from hwnas.references import REFERENCE_NAMES, reference

    out: list[Any] = [reference(n).to_dict() for n in REFERENCE_NAMES]
    out.append(parse_genotype("relu,stem16,id_r2_s2_c24,ir_r1_k3_s1_e3_c24_se0.25_noskip,head64").to_dict())
    out.append({"genotype": reference("mobilenetv2").to_string(), "params": 1, "flops": 2})  # describe --json's form
    out.append({"genotype": reference("mnasnet-a1").to_dict()})
    return out


# ==== 1. TOML recipes =====================================================================================
RECIPE_COMMANDS = ("space-info", "space-sample", "search", "transfer", "bench")


def _stop_search(work: Path) -> list[str]:
    """Flags that end a search with a one-line error right after it read and checked its inputs: its study file
    is taken by a folder (Optuna cannot open it)."""
    (work / "runs" / f"{STOP}.db").mkdir(parents=True)
    return ["--device", "cpu", "--run-dir", str(work / "runs"), "--study-name", STOP, "--cache-dir", str(data_cache())]


@FUZZ
@given(data=st.data())
def test_fuzz_recipes(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    seed = data.draw(st.sampled_from(RECIPE_SEEDS), label="seed recipe")
    doc = data.draw(quiet(mutated(tomllib.loads(seed.read_text()), "toml"), "recipe"), label="recipe").value
    text = toml_text(doc).encode("utf-8", "surrogatepass")
    raw = data.draw(quiet(byte_mutated(text, text=True), "file"), label="file bytes").value
    command = data.draw(st.sampled_from(RECIPE_COMMANDS), label="command")
    with example_dir() as tmp:
        work = Path(tmp)
        recipe = work / "recipe.toml"
        recipe.write_bytes(raw)
        if command == "space-info":
            check(capfd, work, ["space", "info", "--recipe", str(recipe), "--json"], json_out=True)
        elif command == "space-sample":
            check(capfd, work, ["space", "sample", "--recipe", str(recipe), "-n", "3", "--seed", "1", "--json"],
                  json_out=True)
        elif command == "search":
            check(capfd, work, ["search", "--recipe", str(recipe), *_stop_search(work)], outputs=("runs",))
        elif command == "transfer":  # stops at the source study: the recipe's (none exists)
            check(capfd, work, ["transfer", "--recipe", str(recipe), "--device", "cpu", "--run-dir",
                                str(work / "runs"), "--cache-dir", str(data_cache())], outputs=("runs",))
        else:
            check(capfd, work, ["bench", "--recipes", str(recipe), "--strategies", "no-such-strategy", "-o",
                                str(work / "bench")], outputs=("bench",))


# ==== 2. latency tables ===================================================================================
@FUZZ
@given(data=st.data())
def test_fuzz_latency_tables(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    name = data.draw(st.sampled_from(SHIPPED_TABLES), label="seed table")
    doc = data.draw(quiet(mutated(copy.deepcopy(table_seed(name)), "json"), "table"), label="table").value
    raw = data.draw(quiet(byte_mutated(json_text(doc).encode("utf-8", "surrogatepass"), text=True), "file"),
                    label="file bytes").value
    command = data.draw(st.sampled_from(["predict", "predict", "scale-family", "search"]), label="command")
    arch = data.draw(st.sampled_from(TABLE_ARCHS), label="arch")
    with example_dir() as tmp:
        work = Path(tmp)
        table = work / "table.json"
        table.write_bytes(raw)
        if command == "predict":
            res = data.draw(st.sampled_from([[], ["--resolution", "224"], ["--resolution", "32"]]), label="res")
            check(capfd, work, ["latency", "predict", arch, "--table", str(table), "--json", *res], json_out=True)
        elif command == "scale-family":
            check(capfd, work, ["scale", "family", arch, "--preset", "efficientnet", "--phi", "0,1", "--table",
                                str(table), "--json"], json_out=True)
        else:
            check(capfd, work, ["search", "--table", str(table), "--budget-latency", "20ms", *_stop_search(work)],
                  outputs=("runs",))


# ==== 3. Optuna studies ===================================================================================
SQL_VALUES: list[Any] = [None, 0, -1, 1, 2**63 - 1, -(2**63), 1.5, math.inf, -math.inf, "", "x", "NaN", "💥",
                         b"\x00\xff", "x" * 5000]
SQL_COLUMN_VALUES: dict[str, list[Any]] = {
    "state": ["RUNNING", "WAITING", "FAIL", "PRUNED", "COMPLETE", "bogus"],
    "direction": ["MINIMIZE", "MAXIMIZE", "NOT_SET", "sideways"],
    "value_type": ["FINITE", "INF_POS", "INF_NEG", "NAN", "x"],
    "study_name": ["s", "", "other"],
    "number": [0, 1, 3, -1, 10**6],
    "version_num": ["v3.0.0.a", "v99", ""],
    "schema_version": [0, 12, 999],
}


def _tables(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]


@st.composite
def sql_mutated(draw: st.DrawFn, seed: bytes, work: Path) -> bytes:
    """The study file after 0..3 SQL-level mutations (values of the JSON columns mutated structurally), then
    maybe byte-level ones."""
    path = work / "edit.db"
    path.write_bytes(seed)
    with contextlib.closing(sqlite3.connect(path)) as db:
        for _ in range(draw(st.integers(0, 3))):
            tables = _tables(db)
            if not tables:
                break
            t = draw(st.sampled_from(tables))
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{t}")')]
            rowids = [r[0] for r in db.execute(f'SELECT rowid FROM "{t}"')]
            op = draw(st.sampled_from(["update", "update", "update", "json", "delete_row", "delete_all", "dup_row",
                                       "drop"]))
            note(f"sql: {op} on {t}")
            try:
                if op in ("update", "json") and rowids:
                    rid = draw(st.sampled_from(rowids))
                    json_cols = [c for c in cols if c.endswith("_json")]
                    if op == "json" and json_cols:
                        col = draw(st.sampled_from(json_cols))
                        (old,) = db.execute(f'SELECT "{col}" FROM "{t}" WHERE rowid=?', (rid,)).fetchone()
                        try:
                            parsed = json.loads(old)
                        except (TypeError, ValueError):
                            parsed = old
                        value: Any = json_text(draw(mutated(parsed, "json")))
                    else:
                        col = draw(st.sampled_from(cols))
                        value = draw(st.sampled_from(SQL_COLUMN_VALUES.get(col, []) + SQL_VALUES))
                    note(f"  {col} of row {rid} = {str(value)[:120]!r}")
                    db.execute(f'UPDATE "{t}" SET "{col}"=? WHERE rowid=?', (value, rid))
                elif op == "delete_row" and rowids:
                    db.execute(f'DELETE FROM "{t}" WHERE rowid=?', (draw(st.sampled_from(rowids)),))
                elif op == "delete_all":
                    db.execute(f'DELETE FROM "{t}"')
                elif op == "dup_row" and rowids:
                    keep = [c for c in cols[1:]] or cols
                    names = ", ".join(f'"{c}"' for c in keep)
                    db.execute(f'INSERT INTO "{t}" ({names}) SELECT {names} FROM "{t}" WHERE rowid=?',
                               (draw(st.sampled_from(rowids)),))
                elif op == "drop":
                    db.execute(f'DROP TABLE "{t}"')
                db.commit()
            except sqlite3.DatabaseError as e:  # a constraint refused the edit: the file stays as it was
                note(f"  refused: {e}")
                db.rollback()
    raw = path.read_bytes()
    path.unlink()
    return draw(byte_mutated(raw, rate=6))  # most byte flips make SQLite's check say "malformed": seen once


@FUZZ_UNSHRUNK
@given(data=st.data())
def test_fuzz_studies(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    # the slow successes: an export (about a second each: mostly one --trial), a resumed search (two)
    kind = data.draw(st.sampled_from(["export-trial"] * 5 + ["export-pareto"] + ["resume", "transfer", "report"] * 2),
                     label="command")
    seed = {"resume": bench_study_seed, "transfer": transfer_study_seed}.get(kind, mbconv_study_seed)()
    with example_dir() as tmp:
        work = Path(tmp)
        scratch = Path(tempfile.mkdtemp(dir=shared_dir()))
        try:
            raw = data.draw(quiet(sql_mutated(seed, scratch), "study file"), label="study file").value
        finally:
            shutil.rmtree(scratch)
        db = work / "study.db"
        db.write_bytes(raw)
        url = f"sqlite:///{db}"
        if kind == "resume":  # as many trials as the study has: nothing new runs, the outputs are written again
            check(capfd, work, ["search", "--benchmark", "nb201:cifar10", "--storage", url, "--study-name", "s",
                                "--resume", "--trials", str(BENCH_STUDY_TRIALS), "--device", "cpu", "--run-dir",
                                str(work / "runs")], outputs=("runs",), changeable_on_success=("study.db",))
        elif kind == "report":  # its outputs, from the problem recorded in it
            check(capfd, work, ["report", "--storage", url, "--study-name", "s", "-o", str(work / "out")],
                  outputs=("out",))
        elif kind == "transfer":  # the source study: read, its basic architecture chosen, then STOP
            check(capfd, work, ["transfer", "--source-storage", url, "--source-study", "s", *_stop_search(work)],
                  outputs=("runs",))
        else:
            which = ["--pareto"] if kind == "export-pareto" else \
                ["--trial", str(data.draw(st.integers(0, 7), label="trial"))]
            check(capfd, work, ["export", "--storage", url, "--study-name", "s", *which, "-o", str(work / "out"),
                                "--no-latency", "--json"], outputs=("out",), json_out=True)


# ==== 4. checkpoints ======================================================================================
def _save_checkpoint(obj: Any, path: Path, legacy: bool) -> bool:
    """torch.save; False if torch cannot write the mutated object at all (nothing to fuzz)."""
    import torch

    try:
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    except Exception as e:
        note(f"torch.save refused the object: {type(e).__name__}: {e}")
        return False
    return True


@FUZZ_UNSHRUNK
@given(data=st.data())
def test_fuzz_checkpoints(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    which = data.draw(st.sampled_from(["finished", "interrupted"]), label="seed checkpoint")
    obj = data.draw(quiet(mutated(checkpoint_seeds()[which], "torch"), "checkpoint"), label="checkpoint").value
    legacy = data.draw(st.sampled_from([False, False, False, True]), label="legacy format")
    command = data.draw(st.sampled_from(["export", "export-arch", "resume"]), label="command")
    with example_dir() as tmp:
        work = Path(tmp)
        ckpt = work / "m.pt"
        if not _save_checkpoint(obj, ckpt, legacy):
            return
        ckpt.write_bytes(data.draw(quiet(byte_mutated(ckpt.read_bytes()), "file"), label="file bytes").value)
        os.utime(ckpt, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
        if command == "resume":  # stops at the data (a folder that does not exist) once the checkpoint is read
            check(capfd, work, ["train", TINY_ARCH, "--resume", str(ckpt), "--data-dir", str(work / "no-data"),
                                "--device", "cpu", "--cache-dir", str(data_cache())])
        else:
            arch = [TINY_ARCH] if command == "export-arch" else []
            check(capfd, work, ["export", *arch, "--weights", str(ckpt), "-o", str(work / "out" / "m.onnx"),
                                "--no-latency", "--json"], outputs=("out",), json_out=True)


# ==== 5, 6. data folders and archives ======================================================================
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}


def _image_bytes(size: tuple[int, int], fmt: str, mode: str = "RGB", seed: int = 0) -> bytes:
    from PIL import Image

    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, 128))
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels and holds no image data (a decompression bomb's header)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@st.composite
def image_tree(draw: st.DrawFn) -> dict[str, bytes | str | None]:
    """An ImageFolder tree as relative path -> file bytes (str: a symbolic link's target; None: a folder),
    valid, then mutated (files dropped, broken, resized, misnamed; classes missing or extra; links)."""
    n_classes = draw(st.integers(2, 3))
    px = draw(st.sampled_from([8, 12]))
    suffix = draw(st.sampled_from(sorted(IMAGE_FORMATS)))
    held = draw(st.sampled_from(["test", "val"]))
    tree: dict[str, bytes | str | None] = {}
    for split, n in (("train", 2), (held, 1)):
        for c in range(n_classes):
            for i in range(n):
                tree[f"{split}/c{c}/{i}{suffix}"] = _image_bytes((px, px), IMAGE_FORMATS[suffix], seed=c * 10 + i)
    for _ in range(draw(st.integers(0, 3))):
        files = sorted(k for k, v in tree.items() if isinstance(v, bytes))
        dirs = sorted({str(Path(k).parent) for k in tree})
        op = draw(st.sampled_from([
            "drop_file", "drop_class", "extra_held_class", "empty_class", "class_is_file", "not_an_image",
            "truncated", "empty_file", "other_size", "mode", "tiny", "bomb", "big_header", "gif_as_png",
            "dangling_link", "loop_link", "odd_class_name", "hidden_file", "upper_suffix", "rename_split",
            "nested", "many_classes"]))
        note(f"tree mutation: {op}")
        f = draw(st.sampled_from(files)) if files else None
        d = draw(st.sampled_from(dirs)) if dirs else "train/c0"
        if op == "drop_file" and f:
            del tree[f]
        elif op == "drop_class":
            for k in [k for k in tree if k.startswith(d + "/")]:
                del tree[k]
            tree[d] = None if draw(st.booleans()) else tree.get(d)
            if tree[d] is None and draw(st.booleans()):
                del tree[d]
        elif op == "extra_held_class":
            tree[f"{held}/zz/0{suffix}"] = _image_bytes((px, px), IMAGE_FORMATS[suffix])
        elif op == "empty_class":
            tree["train/empty"] = None
        elif op == "class_is_file":
            for k in [k for k in tree if k.startswith(d + "/")]:
                del tree[k]
            tree[d] = b"not a folder"
        elif op == "not_an_image" and f:
            tree[f] = draw(st.sampled_from([b"hello", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"BM"]))
        elif op == "truncated" and isinstance(tree.get(f or ""), bytes):
            blob = tree[f]  # type: ignore[index]
            assert isinstance(blob, bytes)
            tree[f] = blob[: draw(st.integers(0, max(0, len(blob) - 1)))]  # type: ignore[index]
        elif op == "empty_file" and f:
            tree[f] = b""
        elif op == "other_size" and f:
            tree[f] = _image_bytes(draw(st.sampled_from([(px + 4, px + 4), (px * 2, px), (1, 1), (64, 2)])), "PNG")
        elif op == "mode" and f:
            mode, fmt = draw(st.sampled_from([("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("P", "PNG"),
                                              ("I;16", "PNG"), ("1", "PNG"), ("CMYK", "JPEG"), ("F", "TIFF")]))
            tree[f] = _image_bytes((px, px), fmt, mode)
        elif op == "tiny" and f:
            tree[f] = _image_bytes((1, 1), "PNG")
        elif op == "bomb" and f:
            tree[f] = _png_header(60_000, 60_000)
        elif op == "big_header" and f:
            tree[f] = _png_header(2**31 - 1, 1)
        elif op == "gif_as_png" and f:
            from PIL import Image

            buf = io.BytesIO()
            frames = [Image.new("RGB", (px, px), (i * 50, 0, 0)) for i in range(3)]
            frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
            tree[f] = buf.getvalue()
        elif op == "dangling_link":
            tree[f"{d}/link{suffix}"] = draw(st.sampled_from(["missing.png", "/nonexistent/x.png", "../../../x"]))
        elif op == "loop_link":
            tree[f"{d}/loop"] = "."
        elif op == "odd_class_name":
            name = draw(st.sampled_from(["a\nb", "é", " ", "-h", "x" * 200, "a:b", "\udcff"]))
            for split_ in ("train", held):
                tree[f"{split_}/{name}/0{suffix}"] = _image_bytes((px, px), IMAGE_FORMATS[suffix])
        elif op == "hidden_file":
            tree[f"{d}/.DS_Store"] = b"\x00\x00\x00\x01Bud1"
        elif op == "upper_suffix" and f:
            tree[f[: -len(suffix)] + suffix.upper()] = tree.pop(f)
        elif op == "rename_split":
            old = draw(st.sampled_from(["train", held]))
            new = draw(st.sampled_from(["Train", "TEST", "val", "test", "validation"]))
            tree = {(new + k[len(old):] if k.split("/")[0] == old else k): v for k, v in tree.items()}
        elif op == "nested":
            tree[f"{d}/sub/0{suffix}"] = _image_bytes((px, px), IMAGE_FORMATS[suffix])
        elif op == "many_classes":
            for c in range(40):
                for split_ in ("train", held):
                    tree[f"{split_}/m{c}/0{suffix}"] = _image_bytes((px, px), IMAGE_FORMATS[suffix])
    return tree


def _write_tree(root: Path, tree: dict[str, bytes | str | None]) -> None:
    for rel, v in sorted(tree.items(), key=lambda kv: kv[1] is None):
        p = root / rel
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if v is None:
                p.mkdir(parents=True, exist_ok=True)
            elif isinstance(v, str):
                p.symlink_to(v)
            else:
                p.write_bytes(v)
        except (OSError, UnicodeEncodeError) as e:  # a file where a folder goes (the tree made it so)
            note(f"not written: {rel!r}: {e}")


def _data_args(data: st.DataObject, work: Path) -> list[str]:
    size = data.draw(st.sampled_from([[], [], ["--image-size", "8"], ["--image-size", "16"]]), label="image size")
    return ["--cache-dir", str(work / "cache"), *size]


def _cache_has_no_partial_writes(work: Path) -> None:
    cache = work / "cache"
    if cache.is_dir():
        left = [p.name for p in cache.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]
        assert not left, f"partial writes left in the data cache: {left}"


@FUZZ
@given(data=st.data())
def test_fuzz_data_folders(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    tree = data.draw(quiet(image_tree(), "tree"), label="tree").value
    wrapped = data.draw(st.sampled_from(["", "", "wrap/"]), label="inside a folder")
    with example_dir() as tmp:
        work = Path(tmp)
        _write_tree(work / "data", {wrapped + k: v for k, v in tree.items()})
        (work / "data").mkdir(exist_ok=True)
        check(capfd, work, ["data", "prepare", "--data-dir", str(work / "data"), *_data_args(data, work)],
              outputs=("cache",), json_out=True)
        _cache_has_no_partial_writes(work)


ARCHIVES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.xz": "w:xz", ".txz": "w:xz"}


def _lie_about_size(tar: bytes, name: str, extra: int) -> bytes:
    """``tar`` with member ``name``'s header claiming ``extra`` more bytes than it holds (checksum fixed)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            member = next((m for m in t.getmembers() if m.name == name), None)
    except tarfile.TarError:  # an earlier lie already made it unreadable: that is the input
        return tar
    if member is None:
        return tar
    h = bytearray(tar)
    at = member.offset_data - 512  # the member's own header block (after any GNU or pax extension)
    h[at + 124:at + 136] = f"{member.size + extra:011o}\0".encode()
    h[at + 148:at + 156] = b" " * 8
    h[at + 148:at + 156] = f"{sum(h[at:at + 512]):06o}\0 ".encode()
    return bytes(h)


@st.composite
def archive_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, archive) of an ImageFolder tree, its members mutated (links out of the tree, ``..`` and
    absolute names, duplicates, devices, lying sizes, undecodable names), compressed as the suffix says or
    not, then maybe broken at the byte level."""
    tree = draw(image_tree())
    prefix = draw(st.sampled_from(["", "", "ds/", "./"]))
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for rel, v in sorted(tree.items()):
        info = tarfile.TarInfo(prefix + rel)
        if v is None:
            info.type = tarfile.DIRTYPE
            members.append((info, None))
        elif isinstance(v, str):
            info.type, info.linkname = tarfile.SYMTYPE, v
            members.append((info, None))
        else:
            info.size = len(v)
            members.append((info, v))
    names = [m.name for m, _ in members if m.isreg()] or ["train/c0/0.png"]
    liars: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["symlink_out", "hardlink_missing", "hardlink_ok", "dotdot", "absolute",
                                   "duplicate", "device", "fifo", "lying_size", "long_name", "bad_name",
                                   "dir_then_file", "pax"]))
        note(f"member mutation: {op}")
        where = str(Path(draw(st.sampled_from(names))).parent)
        info = tarfile.TarInfo(f"{where}/m-{op}.png")
        blob: bytes | None = None
        if op == "symlink_out":
            info.type, info.linkname = tarfile.SYMTYPE, draw(st.sampled_from(["/etc/passwd", "../../../../etc/passwd"]))
        elif op == "hardlink_missing":
            info.type, info.linkname = tarfile.LNKTYPE, draw(st.sampled_from(["missing.png", "/etc/passwd",
                                                                               "../../x.png"]))
        elif op == "hardlink_ok":
            info.type, info.linkname = tarfile.LNKTYPE, draw(st.sampled_from(names))
        elif op == "dotdot":
            info.name, blob = f"{where}/../../../escape.png", _image_bytes((8, 8), "PNG")
        elif op == "absolute":
            info.name, blob = f"/{where}/abs.png", _image_bytes((8, 8), "PNG")
        elif op == "duplicate":
            info.name = draw(st.sampled_from(names))
            blob = draw(st.sampled_from([b"junk", _image_bytes((9, 9), "PNG")]))
        elif op == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        elif op == "fifo":
            info.type = tarfile.FIFOTYPE
        elif op == "lying_size":
            blob = _image_bytes((8, 8), "PNG")
        elif op == "long_name":
            info.name, blob = f"{where}/{'n' * 300}.png", _image_bytes((8, 8), "PNG")
        elif op == "bad_name":
            info.name, blob = f"{where}/bad-\udcff.png", _image_bytes((8, 8), "PNG")
        elif op == "dir_then_file":
            info.name, info.type = draw(st.sampled_from(names)), tarfile.DIRTYPE
        elif op == "pax":
            info.pax_headers = {"path": f"{where}/pax-é.png", "size": "12"}
            blob = _image_bytes((8, 8), "PNG")
        if blob is not None:
            info.size = len(blob)
        members.append((info, blob))
        if op == "lying_size":
            liars.append(info.name)
    order = draw(st.sampled_from(["as is", "reversed"]))
    if order == "reversed":
        members.reverse()
    buf = io.BytesIO()
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for info, blob in members:
            try:
                tar.addfile(info, io.BytesIO(blob) if blob is not None else None)
            except (ValueError, OSError, tarfile.TarError, UnicodeError) as e:  # USTAR cannot hold it
                note(f"member not written: {info.name!r}: {e}")
    plain = buf.getvalue()
    for name in liars:
        plain = _lie_about_size(plain, name, draw(st.sampled_from([1, 10_000, 2**33])))
    suffix = draw(st.sampled_from(sorted(ARCHIVES)))
    packing = draw(st.sampled_from([ARCHIVES[suffix]] * 3 + ["w", "w:gz", "w:xz", "w:bz2"]))
    if packing == "w":
        packed = plain
    else:
        import bz2
        import gzip
        import lzma

        packed = {"w:gz": gzip.compress, "w:xz": lzma.compress, "w:bz2": bz2.compress}[packing](plain)
    return suffix, draw(byte_mutated(packed))


@FUZZ
@given(data=st.data())
def test_fuzz_archives(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    suffix, raw = data.draw(quiet(archive_bytes(), "archive"), label="archive").value
    with example_dir() as tmp:
        work = Path(tmp)
        archive = work / f"data{suffix}"
        archive.write_bytes(raw)
        check(capfd, work, ["data", "prepare", "--data-dir", str(archive), *_data_args(data, work)],
              outputs=("cache",), json_out=True)
        _cache_has_no_partial_writes(work)


# ==== 7. genotype JSON =====================================================================================
@FUZZ
@given(data=st.data())
def test_fuzz_genotype_json(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    seed = data.draw(st.sampled_from(genotype_seeds()), label="seed genotype")
    doc = data.draw(quiet(mutated(seed, "json"), "genotype"), label="genotype").value
    raw = data.draw(quiet(byte_mutated(json_text(doc).encode("utf-8", "surrogatepass"), text=True), "file"),
                    label="file bytes").value
    command = data.draw(st.sampled_from(["describe-json", "describe", "describe-small", "predict", "scale"]),
                        label="command")
    with example_dir() as tmp:
        work = Path(tmp)
        g = work / "g.json"
        g.write_bytes(raw)
        table = work / "table.json"
        if command == "describe-json":
            check(capfd, work, ["describe", str(g), "--json"], json_out=True)
        elif command == "describe":
            check(capfd, work, ["describe", str(g)])
        elif command == "describe-small":
            check(capfd, work, ["describe", str(g), "--resolution", "32", "--num-classes", "10", "--json"],
                  json_out=True)
        elif command == "predict":
            table.write_text(json.dumps(table_seed(SHIPPED_TABLES[0])))
            check(capfd, work, ["latency", "predict", str(g), "--table", str(table), "--json"], json_out=True)
        else:
            check(capfd, work, ["scale", "family", str(g), "--preset", "efficientnet", "--phi", "0,1", "--json"],
                  json_out=True)


# ==== 8. scale search results (JSON) =====================================================================
SCALE_SEARCH_SEED = {"base": "efficientnet-b0", "grid": {"evaluated": 2}, "candidates": [
    {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "product": 2.0, "accuracy": 0.5, "best": True, "baseline": False}],
    "best": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "product": 2.0, "accuracy": 0.5}}


@FUZZ
@given(data=st.data())
def test_fuzz_scale_search_results(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    doc = data.draw(quiet(mutated(SCALE_SEARCH_SEED, "json"), "result"), label="result").value
    raw = data.draw(quiet(byte_mutated(json_text(doc).encode("utf-8", "surrogatepass"), text=True), "file"),
                    label="file bytes").value
    with example_dir() as tmp:
        work = Path(tmp)
        result = work / "scale-search.json"
        result.write_bytes(raw)
        check(capfd, work, ["scale", "family", "mobilenetv2", "--from-search", str(result), "--phi", "0,1", "--json"],
              json_out=True)


# ==== 9. hwnas data caches (.npz) ==========================================================================
def _npy(arr: Any, shape: tuple[int, ...] | None = None) -> bytes:
    """``arr`` as .npy bytes; with ``shape``, a header that claims that shape over ``arr``'s data."""
    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    if shape is None:
        return buf.getvalue()
    header = f"{{'descr': {np.lib.format.dtype_to_descr(arr.dtype)!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    data = arr.tobytes()
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin-1") + data


@st.composite
def npz_bytes(draw: st.DrawFn) -> bytes:
    """An hwnas data cache (what ``save_npz`` writes), its arrays mutated: dtypes, shapes, labels out of range,
    class names, pickled objects, a header claiming a terabyte, keys missing or extra."""
    import zipfile

    import numpy as np

    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {
        "train_x": rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8), "train_y": np.array([0, 1, 0, 1, 0, 1]),
        "test_x": rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8), "test_y": np.array([0, 1]),
        "classes": np.array(["a", "b"]), "name": np.array("n"), "source": np.array("s")}
    lies: dict[str, tuple[int, ...]] = {}
    for _ in range(draw(st.integers(0, 3))):
        if not arrays:
            break
        key = draw(st.sampled_from(sorted(arrays)))
        a = arrays[key]
        op = draw(st.sampled_from(["drop", "dtype", "shape", "values", "object", "lie", "rename"]))
        note(f"npz mutation: {op} {key}")
        if op == "dtype":
            dtype = draw(st.sampled_from(["float32", "int8", "uint16", "bool", "<U3", "S2", "complex64", "float16",
                                          "uint64"]))
            try:
                arrays[key] = a.astype(dtype)
            except (ValueError, TypeError):  # class names as numbers
                arrays[key] = np.zeros(a.shape, dtype)
        elif op == "drop":
            del arrays[key]
        elif op == "rename":
            arrays[key.upper()] = arrays.pop(key)
        elif op == "shape":
            shapes = [a[None], a.reshape(-1), *([a[:0], np.array(a.flat[0]), a.T, np.repeat(a, 2, axis=-1)]
                                                if a.ndim and a.size else [])]
            arrays[key] = draw(st.sampled_from(shapes))
        elif op == "values":
            arrays[key] = draw(st.sampled_from([np.full(a.shape, -1), np.full(a.shape, 2**40), np.full(a.shape, 255),
                                                np.array(["a", "a"]), np.array(["", "b"]), np.array([1, 2]),
                                                np.full(a.shape, np.nan)]))
        elif op == "object":
            arrays[key] = np.array([{"x": 1}, None], dtype=object)
        else:
            lies[key] = draw(st.sampled_from([(10**12, 8, 8, 3), (2**62,), (-1,), (6, 8, 8, 3, 1), ()]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as z:
        for key, a in arrays.items():
            try:
                z.writestr(f"{key}.npy", _npy(a, lies.get(key)))
            except (ValueError, OverflowError) as e:
                note(f"not written: {key}: {e}")
    return draw(byte_mutated(buf.getvalue(), rate=4))


@FUZZ
@given(data=st.data())
def test_fuzz_data_caches(data: st.DataObject, capfd: pytest.CaptureFixture[str]) -> None:
    raw = data.draw(quiet(npz_bytes(), "cache file"), label="cache file").value
    with example_dir() as tmp:
        work = Path(tmp)
        cache = work / "data.npz"
        cache.write_bytes(raw)
        check(capfd, work, ["data", "prepare", "--data-dir", str(cache), *_data_args(data, work)], outputs=("cache",),
              json_out=True)
        _cache_has_no_partial_writes(work)


# ==== the inputs the fuzzers found (minimal, deterministic) ================================================
def _tiny_tree(root: Path) -> None:
    for rel in ("train/a/0.png", "train/b/0.png", "test/a/0.png", "test/b/0.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_image_bytes((8, 8), "PNG"))


def _hardlink_archive(work: Path) -> list[str]:
    archive = work / "data.tar"
    with tarfile.open(archive, "w") as tar:
        for rel in ("train/a/0.png", "train/b/0.png", "test/a/0.png", "test/b/0.png"):
            blob = _image_bytes((8, 8), "PNG")
            info = tarfile.TarInfo(rel)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        link = tarfile.TarInfo("train/a/1.png")  # a hard link to a member the archive does not hold
        link.type, link.linkname = tarfile.LNKTYPE, "missing.png"
        tar.addfile(link)
    return ["data", "prepare", "--data-dir", str(archive), "--cache-dir", str(work / "cache")]


def _dangling_link_folder(work: Path) -> list[str]:
    _tiny_tree(work / "data")
    (work / "data" / "train" / "a" / "1.png").symlink_to("missing.png")
    return ["data", "prepare", "--data-dir", str(work / "data"), "--cache-dir", str(work / "cache")]


def _damaged_deflated_npz(work: Path) -> list[str]:
    import zipfile

    import numpy as np

    arrays = {"train_x": np.zeros((4, 8, 8, 3), np.uint8), "train_y": np.array([0, 1, 0, 1]),
              "test_x": np.zeros((2, 8, 8, 3), np.uint8), "test_y": np.array([0, 1]),
              "classes": np.array(["a", "b"]), "name": np.array("n"), "source": np.array("s")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for key, a in arrays.items():
            z.writestr(f"{key}.npy", _npy(a))
    raw = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = z.getinfo("train_x.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start:start + 8] = b"\xff" * 8  # the compressed stream, not the zip's own structure
    (work / "data.npz").write_bytes(bytes(raw))
    return ["data", "prepare", "--data-dir", str(work / "data.npz"), "--cache-dir", str(work / "cache")]


def _npz_claiming_a_terabyte(work: Path) -> list[str]:
    import zipfile

    import numpy as np

    arrays = {"train_x": np.zeros((4, 8, 8, 3), np.uint8), "train_y": np.array([0, 1, 0, 1]),
              "test_x": np.zeros((2, 8, 8, 3), np.uint8), "test_y": np.array([0, 1]),
              "classes": np.array(["a", "b"]), "name": np.array("n"), "source": np.array("s")}
    with zipfile.ZipFile(work / "data.npz", "w") as z:
        for key, a in arrays.items():
            z.writestr(f"{key}.npy", _npy(a, (2**40,) if key == "train_y" else None))  # 8 TB of labels, 32 bytes
    return ["data", "prepare", "--data-dir", str(work / "data.npz"), "--cache-dir", str(work / "cache")]


def _checkpoint(data: bytes, command: str) -> Callable[[Path], list[str]]:
    def make(work: Path) -> list[str]:
        (work / "m.pt").write_bytes(data)
        if command == "export":
            return ["export", "--weights", str(work / "m.pt"), "-o", str(work / "out" / "m.onnx"), "--no-latency"]
        return ["train", TINY_ARCH, "--resume", str(work / "m.pt"), "--data-dir", str(work / "no-data"), "--device",
                "cpu", "--cache-dir", str(data_cache())]

    return make


def _study_without(sql: str) -> Callable[[Path], list[str]]:
    def make(work: Path) -> list[str]:
        db = work / "study.db"
        db.write_bytes(mbconv_study_seed())
        with contextlib.closing(sqlite3.connect(db)) as con:
            con.execute(sql)
            con.commit()
        return ["export", "--storage", f"sqlite:///{db}", "--study-name", "s", "--trial", "0", "-o",
                str(work / "out"), "--no-latency"]

    return make


def _resumed_study(sql: str, *params: Any, empty: bool = False) -> Callable[[Path], list[str]]:
    """``search --resume`` of the benchmark study edited by ``sql`` (or of an empty file)."""
    def make(work: Path) -> list[str]:
        db = work / "study.db"
        db.write_bytes(b"" if empty else bench_study_seed())
        if sql:
            with contextlib.closing(sqlite3.connect(db)) as con:
                con.execute(sql, params)
                con.commit()
        return ["search", "--benchmark", "nb201:cifar10", "--storage", f"sqlite:///{db}", "--study-name", "s",
                "--resume", "--trials", str(BENCH_STUDY_TRIALS), "--device", "cpu", "--run-dir", str(work / "out")]

    return make


def _bench_recipe_with_profile(value: str) -> Callable[[Path], list[str]]:
    def make(work: Path) -> list[str]:
        (work / "bench.toml").write_text(f'[search]\nbenchmark = "nb201:cifar10"\n\n[profile]\ncpu = {value}\n')
        return ["bench", "--recipes", str(work / "bench.toml"), "--strategies", "no-such-strategy", "-o",
                str(work / "out")]

    return make


FOUND: dict[str, Callable[[Path], list[str]]] = {
    "bench-recipe-profile-cpu-not-a-table": _bench_recipe_with_profile("1"),  # AttributeError in bench.py
    "archive-hard-link-to-a-missing-member": _hardlink_archive,  # KeyError from tarfile
    "folder-dangling-symlink-image": _dangling_link_folder,  # FileNotFoundError in the cache key
    "npz-damaged-deflate-stream": _damaged_deflated_npz,  # zlib.error
    "npz-header-claims-a-terabyte": _npz_claiming_a_terabyte,  # exit 1 "out of memory", not a damaged cache
    "checkpoint-legacy-pickle-empty-stack": _checkpoint(b"\x80\x02.", "export"),  # IndexError from torch.load
    "checkpoint-legacy-pickle-cut-int": _checkpoint(b"\x80\x02J\x00", "resume"),  # struct.error
    "checkpoint-pickle-protocol-10": _checkpoint(b"\x80\x0aK\x01.", "export"),  # torch's warning + the error line
    "study-without-alembic-version-row": _study_without("DELETE FROM alembic_version"),  # export writes the study
    "study-without-an-optuna-table": _study_without("DROP TABLE trial_intermediate_values"),
    "resumed-study-settings-not-an-object": _resumed_study(  # TypeError in create_search
        "UPDATE study_user_attributes SET value_json = ? WHERE key = 'hwnas'", "NaN"),
    "resumed-study-complete-trial-without-values": _resumed_study(  # TypeError in report.feasible_rows
        "DELETE FROM trial_values WHERE trial_id = (SELECT MIN(trial_id) FROM trials)"),
    "resume-refused-but-the-empty-file-written": _resumed_study("", empty=True),  # Optuna's tables written into it
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_inputs_the_fuzzers_found(case: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Each of these broke the contract when the fuzzers above found it (see the comments in ``FOUND``)."""
    with example_dir() as tmp:
        work = Path(tmp)
        argv = FOUND[case](work)
        check(capfd, work, argv, outputs=("cache", "out"))


# ==== the harness itself ==================================================================================
def test_the_harness_sees_a_traceback_litter_and_a_changed_input(capfd: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks fail where they should: an escaped exception, a file left beside the input, an input
    changed, two lines on stderr (so a passing fuzz run means something)."""
    import hwnas.cli.arch as arch

    def boom(args: Any) -> int:
        raise KeyError("boom")

    def litter(args: Any) -> int:
        Path("left-behind.tmp").write_text("x")
        return 0

    def touch(args: Any) -> int:
        os.utime(args.arch, ns=(1, 1))
        return 0

    def two_lines(args: Any) -> int:
        print("hwnas: warning: something", file=sys.stderr)
        from hwnas.cli.common import UsageError

        raise UsageError("bad")

    def unicode_out(args: Any) -> int:
        print("\ud800")
        return 0

    cases: list[tuple[Callable[[Any], int], str]] = [
        (boom, "exception escaped"), (litter, "new files left"), (touch, "was changed"),
        (two_lines, "exactly one line"), (unicode_out, "exception escaped")]
    for fn, fragment in cases:
        monkeypatch.setattr(arch, "cmd_describe", fn)
        with example_dir() as tmp:
            work = Path(tmp)
            (work / "g.json").write_text("{}")
            with pytest.raises(AssertionError, match=fragment):
                check(capfd, work, ["describe", str(work / "g.json")])
