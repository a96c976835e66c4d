"""Latency lookup tables: data, keys, the calibrated predictor. Pure Python + numpy (no torch).

A table holds, for one (device, precision, batch size, resolution set), the measured time of every layer
key the search space can produce (``hwnas.walker.Layer.key``), plus end-to-end measurements of a few
calibration networks. The prediction for a network is

    latency = a + b * (sum of its layers' entries) + c * (number of layers)

with (a, b, c) fitted per resolution by least squares on the calibration networks: ``a`` is the one-off
cost of running a network (launch/replay, pooling, glue), ``c`` the per-layer time that an isolated
measurement over- or under-counts (launch gaps, cache warmth), ``b`` the scale of the kernels themselves.
A key missing from the table is an error naming the key and the command that measures it.

Identity layers (``id``, NAS-Bench-Macro's skip choice): a projection (1x1 conv + BN, where the layer strides
or changes the width) is a layer like any other, keyed ``id|<size>x<size>x<in>|o<out>|s<stride>``, measured and
summed; a plain identity (``Layer.noop``) runs no kernel, so it has no entry, adds 0 ms and does not count
among the network's layers (``c * n``).

Absurd numbers: every number a table file holds is read through ``hwnas.units`` (finite, in range; a 400-digit
integer is valid JSON but no float), and a time is at most ``MAX_MS``, a day: an entry, a calibration network or a
probe run slower than that is no measurement, and a table holding one is refused when it is loaded. The fitted
``a + b * sum + c * n`` can still reach absurd values from sane entries (a damaged fit, ``b = 1e308``): a prediction
that is not finite or beyond a day either way is refused (TableError naming the table), never printed as
``Infinity`` or written into a report.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.genotype import Genotype, GenotypeError, parse_genotype
from hwnas.space import SearchSpace, SpaceError, make_divisible
from hwnas.units import dumps_strict, is_integer, is_number, shown
from hwnas.walker import Layer, conv_out, se_channels, stem_stride_for, walk

if TYPE_CHECKING:
    from hwnas.spaces.macro import MacroSpace

FORMAT = "hwnas-latency-table"
FORMAT_VERSION = 1
MIN_CALIBRATION = 8
MAX_RESOLUTION = 8192  # pixels
MAX_MS = 86_400_000.0  # a day: no layer, network or prediction of a table takes longer (see the docstring)
ENTRY_FIELDS = ("ms", "p10", "p90", "n")  # median and 10th/90th percentile in ms, samples
REQUIRED_METADATA = ("device", "device_name", "precision", "batch_size", "resolutions", "num_classes",
                     "space", "space_fingerprint", "timing_method")


class TableError(ValueError):
    """A corrupt, truncated, incomplete or mismatched latency table. One-line message."""


class MissingKeyError(TableError):
    """A layer the table has no entry for."""


def space_fingerprint(space: SearchSpace) -> str:
    canon = json.dumps(space.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


# ---- keys reachable in a space ------------------------------------------------------------------
def space_layers(space: SearchSpace | MacroSpace, resolution: int, num_classes: int = 1000) -> Iterator[Layer]:
    """Every distinct layer (by key) any network of ``space`` has at ``resolution``, in network order.

    Mirrors ``walk``: a stage's first block sees every width the previous stage can output and may
    stride; its later blocks map the stage's width to itself at stride 1 (residual iff skip). Another kind
    of space lists its own (``space.layers``, e.g. ``hwnas.spaces.macro.MacroSpace``: its ``id`` projections,
    never a plain identity)."""
    if not isinstance(space, SearchSpace):
        yield from space.layers(resolution, num_classes)
        return
    seen: set[str] = set()

    def new(layer: Layer) -> bool:
        k = layer.key()
        if k in seen:
            return False
        seen.add(k)
        return True

    wfs, div = space.width_factors, space.divisor
    stems = sorted({make_divisible(space.stem * wf, div) for wf in wfs})
    heads = sorted({make_divisible(space.head * wf, div) for wf in wfs})
    stride = stem_stride_for(resolution)
    for act in space.activations:
        for c in stems:
            layer = Layer("stem", resolution, 3, c, 3, stride, activation=act)
            if new(layer):
                yield layer
    size, prev = conv_out(resolution, 3, stride), stems
    for st in space.stages:
        widths = sorted({make_divisible(st.channels * w * wf, div) for w in st.widths for wf in wfs})
        variants = sorted({("ds", 1) if (op == "ds" or e == 1) else ("ir", e) for op in st.ops
                           for e in st.expansions})
        out_size = conv_out(size, 1, st.stride)
        for act in space.activations:
            for (op, e), k, se, skip in itertools.product(variants, st.kernels, st.se_ratios, st.skips):
                for in_c in prev:
                    for c in widths:
                        residual = skip and st.stride == 1 and in_c == c
                        layer = Layer(op, size, in_c, c, k, st.stride, e, se_channels(in_c, se), residual, act)
                        if new(layer):
                            yield layer
                if math.ceil(max(st.layers) * max(space.depth_factors) - 1e-9) > 1:
                    for c in widths:
                        layer = Layer(op, out_size, c, c, k, 1, e, se_channels(c, se), skip, act)
                        if new(layer):
                            yield layer
        size, prev = out_size, widths
    for act in space.activations:
        for in_c in prev:
            for c in heads:
                layer = Layer("head", size, in_c, c, activation=act)
                if new(layer):
                    yield layer
    for c in heads:
        layer = Layer("classifier", 1, c, num_classes)
        if new(layer):
            yield layer


# ---- the table ----------------------------------------------------------------------------------
@dataclass
class Overhead:
    """Fitted per-resolution network model: latency = a + b * sum(entries) + c * n_layers (ms)."""

    a: float
    b: float
    c: float
    n: int
    fit_mape: float

    def to_dict(self) -> dict[str, float | int]:
        return {"a": self.a, "b": self.b, "c": self.c, "n": self.n, "fit_mape": self.fit_mape}


@dataclass
class LatencyTable:
    metadata: dict[str, Any]
    entries: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: list[dict[str, Any]] = field(default_factory=list)
    overhead: dict[str, Overhead] = field(default_factory=dict)
    source: str = "<table>"

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "entry_fields": list(ENTRY_FIELDS),
            "metadata": self.metadata,
            "overhead": {r: o.to_dict() for r, o in sorted(self.overhead.items())},
            "calibration": self.calibration,
            "entries": {k: [_sig(e[f]) for f in ENTRY_FIELDS] for k, e in sorted(self.entries.items())},
        }

    def to_json(self) -> str:
        """Readable and diffable: one entry per line (a full table has tens of thousands)."""
        d = self.to_dict()
        entries = d.pop("entries")
        head = dumps_strict(d, indent=1)[:-2]  # drop the closing "\n}"
        lines = [f"{json.dumps(k)}: {dumps_strict(v, separators=(',', ':'))}" for k, v in entries.items()]
        return head + ',\n "entries": {\n' + ",\n".join(lines) + "\n }\n}\n"

    @classmethod
    def from_json(cls, text: str, source: str = "<table>") -> LatencyTable:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise TableError(f"latency table {source} is not valid JSON (corrupt or truncated?): "
                             f"{e.msg} at line {e.lineno}") from None
        return cls.from_dict(d, source)

    @classmethod
    def from_dict(cls, d: Any, source: str = "<table>") -> LatencyTable:
        def bad(why: str) -> TableError:
            return TableError(f"latency table {source}: {why}")

        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise bad(f"not an hwnas latency table (no \"format\": \"{FORMAT}\")")
        if not _positive_int(d.get("format_version")) or d.get("format_version") != FORMAT_VERSION:
            raise bad(f"format version {d.get('format_version')!r} is not {FORMAT_VERSION}")
        md, entries = d.get("metadata"), d.get("entries")
        if not isinstance(md, dict):
            raise bad("metadata missing")
        missing = [k for k in REQUIRED_METADATA if k not in md]
        if missing:
            raise bad(f"metadata lacks {', '.join(missing)}")
        _check_metadata(md, bad)
        if not isinstance(entries, dict):
            raise bad("entries missing")
        parsed: dict[str, dict[str, float]] = {}
        for k, v in entries.items():
            if not isinstance(v, list) or len(v) != len(ENTRY_FIELDS) or not all(_time(x) for x in v[:-1]) \
                    or not _positive_int(v[-1]):
                raise bad(f"entry {str(k)[:80]!r} is not [{', '.join(ENTRY_FIELDS)}] of positive numbers (n an "
                          f"integer), times at most a day ({MAX_MS:g} ms)")
            parsed[k] = dict(zip(ENTRY_FIELDS, v, strict=True))
        try:
            SearchSpace.from_dict(md["space"])
        except (SpaceError, TypeError) as e:
            raise bad(f"stored space is invalid: {e}") from None
        res = md["resolutions"]
        if not isinstance(res, list) or not res or not all(is_integer(r, low=1, high=MAX_RESOLUTION) for r in res):
            raise bad(f"metadata resolutions must be a list of positive integers, got {repr(res)[:80]} (pixels, at "
                      f"most {MAX_RESOLUTION})")
        overhead = {}
        if not isinstance(d.get("overhead") or {}, dict):
            raise bad("overhead must be an object (resolution -> fit)")
        for r, o in (d.get("overhead") or {}).items():
            fields = [o.get(k) for k in ("a", "b", "c", "fit_mape")] if isinstance(o, dict) else []
            if len(fields) != 4 or not all(_is_real(x) for x in fields) or not _positive_int(o.get("n")):
                raise bad(f"overhead for resolution {str(r)[:20]} is malformed (a, b, c, fit_mape numbers; n a "
                          "positive integer)")
            if not all(is_number(x) for x in fields):  # NaN, infinity, an integer too large for a float
                raise bad(f"overhead for resolution {str(r)[:20]} is not finite")
            overhead[str(r)] = Overhead(float(o["a"]), float(o["b"]), float(o["c"]), int(o["n"]),
                                        float(o["fit_mape"]))
        cal = d.get("calibration") or []
        if not isinstance(cal, list):
            raise bad("calibration must be a list")
        for i, row in enumerate(cal):
            ok = isinstance(row, dict) and isinstance(row.get("genotype"), str) and \
                is_integer(row.get("resolution"), low=1, high=MAX_RESOLUTION) and _time(row.get("ms"))
            if not ok:
                raise bad(f"calibration row {i} is not {{genotype, resolution, ms}}: {str(row)[:120]}")
            try:
                parse_genotype(row["genotype"])
            except GenotypeError as e:
                raise bad(f"calibration row {i}: {e}") from None
        return cls(metadata=md, entries=parsed, calibration=cal, overhead=overhead, source=source)

    # ---- properties ---------------------------------------------------------------------------
    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.metadata["space"])

    @property
    def resolutions(self) -> list[int]:
        return [int(r) for r in self.metadata["resolutions"]]

    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    @property
    def runtime(self) -> str:
        """What ran the layers: ``torch`` (tables older than the field) or ``onnxruntime``."""
        return str(self.metadata.get("runtime", "torch"))

    def describe(self) -> str:
        m = self.metadata
        rt = "" if self.runtime == "torch" else f" {self.runtime}"
        return f"{m['device_name']}{rt} {m['precision']} bs{m['batch_size']}"

    def measure_command(self, output: str | None = None) -> str:
        """The command that measures this table with every setting it was measured with -- the stored
        command, for this table's precision and batch size, into this table's file: it resumes the table
        (``output`` None) -- or the same for another space (``--recipe RECIPE``) into ``output``: a table
        resumes only with the settings it was measured with, so a network outside its space needs a new one."""
        m = self.metadata
        cmd = m.get("command")
        if isinstance(cmd, str) and cmd.startswith("hwnas latency measure "):
            words = shlex.split(cmd)
        else:  # a table without its command: the settings the resume check compares, as flags
            words = ["hwnas", "latency", "measure", "--device", str(m["device"]),
                     "--resolution", ",".join(map(str, self.resolutions)), "--num-classes", str(self.num_classes)]
            if self.runtime != "torch":
                words += ["--runtime", self.runtime]
            if m.get("device") == "cpu" and m.get("threads"):
                words += ["--threads", str(m["threads"])]
        # one table: its own precision and batch size (a command may have measured several) and its own file
        replaced = {"-o", "--output", "--precision", "--batch-size", *(() if output is None else ("--recipe",))}
        kept: list[str] = []
        skip = False
        for w in words:
            if skip:
                skip = False
            elif w in replaced:
                skip = True
            elif not w.startswith(tuple(f"{f}=" for f in replaced if f.startswith("--"))):
                kept.append(w)
        kept += ["--precision", str(m["precision"]), "--batch-size", str(m["batch_size"])]
        kept += ["-o", self.source] if output is None else ["--recipe", "RECIPE", "-o", output]
        return shlex.join(kept)

    def check_space(self, space: SearchSpace) -> None:
        if getattr(space, "kind", "mbconv") != "mbconv":
            raise TableError(f"latency table {self.source} prices MBConv genotypes, not the {space.kind} space "
                             f"(a benchmark space takes its device latencies, e.g. --table nb201:pixel3)")
        fp = space_fingerprint(space)
        if fp != self.metadata["space_fingerprint"]:
            raise TableError(f"latency table {self.source} was measured for space "
                             f"{self.metadata['space'].get('name')!r} ({self.metadata['space_fingerprint']}), "
                             f"not for space {space.name!r} ({fp})")

    def check_resolution(self, resolution: int) -> None:
        if resolution not in self.resolutions:
            raise TableError(f"latency table {self.source} covers resolution(s) "
                             f"{', '.join(map(str, self.resolutions))}, not {resolution}")

    # ---- prediction ---------------------------------------------------------------------------
    def layer_times(self, genotype: Genotype, resolution: int) -> list[tuple[Layer, float]]:
        """Every layer that runs a kernel with its entry (ms), in execution order (plain identities, which run
        nothing, are left out: 0 ms, not a layer); MissingKeyError names a missing key."""
        self.check_resolution(resolution)
        out = []
        for layer in walk(genotype, resolution, self.num_classes):
            if layer.noop:
                continue
            k = layer.key()
            e = self.entries.get(k)
            if e is None:
                raise MissingKeyError(f"latency table {self.source} has no entry for layer {k!r}: the network is "
                                      "outside the space the table was measured for; measure one for a space that "
                                      "holds it (RECIPE's [space]) with the same settings: "
                                      f"{self.measure_command('NEW.json')}")
            out.append((layer, e["ms"]))
        return out

    def layer_sum(self, genotype: Genotype, resolution: int) -> tuple[float, int]:
        """(sum of the entries of every layer, number of layers); MissingKeyError names a missing key."""
        times = self.layer_times(genotype, resolution)
        return sum(ms for _, ms in times), len(times)

    def predict(self, genotype: Genotype, resolution: int) -> float:
        """Predicted latency in milliseconds of one batch (the table's batch size)."""
        s, n = self.layer_sum(genotype, resolution)
        o = self.overhead.get(str(resolution))
        if o is None:
            raise TableError(f"latency table {self.source} has no calibration at resolution {resolution} "
                             f"(measurement unfinished?); resume it with: {self.measure_command()}")
        ms = o.a + o.b * s + o.c * n
        if not -MAX_MS <= ms <= MAX_MS:  # inf and NaN too
            how = "a negative latency beyond" if ms < 0 else "slower than"
            raise TableError(f"latency table {self.source} predicts {shown(ms)} ms for this network at {resolution} "
                             f"px, {how} a day ({MAX_MS:g} ms): its calibration fit (a {o.a:g}, b {o.b:g}, "
                             f"c {o.c:g}) or entries are damaged")
        return ms

    def naive_sum(self, genotype: Genotype, resolution: int) -> float:
        return self.layer_sum(genotype, resolution)[0]

    def fit_overhead(self) -> None:
        """Fit (a, b, c) per resolution on the stored calibration measurements."""
        by_res: dict[str, list[tuple[float, int, float]]] = {}
        for row in self.calibration:
            g = parse_genotype(row["genotype"])
            res = int(row["resolution"])
            s, n = self.layer_sum(g, res)
            by_res.setdefault(str(res), []).append((s, n, float(row["ms"])))
        for res, rows in by_res.items():
            if len(rows) < MIN_CALIBRATION:
                raise TableError(f"latency table {self.source}: {len(rows)} calibration networks at resolution "
                                 f"{res}, need >= {MIN_CALIBRATION}")
            arr = np.array(rows, dtype=float)
            x = np.column_stack([np.ones(len(arr)), arr[:, 0], arr[:, 1]])
            y = arr[:, 2]
            # relative least squares: weight each row by 1/y so every network counts by its % error
            coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
            pred = x @ coef
            self.overhead[res] = Overhead(float(coef[0]), float(coef[1]), float(coef[2]), len(rows),
                                          float(np.mean(np.abs(pred - y) / y) * 100))


def _sig(x: float) -> float | int:
    return x if isinstance(x, int) else float(f"{x:.5g}")


def _positive_int(v: Any) -> bool:
    return is_integer(v, low=1)


def _time(v: Any) -> bool:
    """A measured time in ms: positive, finite, at most a day."""
    return is_number(v, positive=True, high=MAX_MS)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_number(v: Any) -> bool:
    return is_number(v, low=0)


def _timing_settings(v: Any) -> bool:  # counts and times; a million replays is not a setting, it is a hang
    return isinstance(v, dict) and all(isinstance(k, str) and (isinstance(x, bool) or is_number(x, low=0, high=1e5))
                                       for k, x in v.items())


def _probe(v: Any) -> bool:
    if not (isinstance(v, dict) and is_integer(v.get("resolution"), low=1, high=MAX_RESOLUTION)
            and isinstance(v.get("ms"), list) and all(_time(x) for x in v["ms"])):
        return False
    if v.get("genotype") is None:
        return True
    try:
        parse_genotype(v["genotype"])
    except (GenotypeError, TypeError, AttributeError):
        return False
    return True


# what the code reads from a table's metadata, with the type it needs (None is "not recorded" for the optional)
METADATA_TYPES: dict[str, tuple[Any, str]] = {
    "device": (_is_str, "a string"), "device_name": (_is_str, "a string"), "precision": (_is_str, "a string"),
    "timing_method": (_is_str, "a string"), "space_fingerprint": (_is_str, "a string"),
    "space": (lambda v: isinstance(v, dict), "an object"),
    "runtime": (_is_str, "a string"), "command": (_is_str, "a string"),
    "cuda_math": (lambda v: isinstance(v, dict), "an object (measure.cuda_math)"),
    "host_allocator": (_is_str, "a string"),
    "threads": (lambda v: is_integer(v, low=1, high=4096), "a positive integer (at most 4096)"),
    "channels_last": (lambda v: isinstance(v, bool), "true or false"),
    "measure_seconds": (_is_number, "a number of seconds"),
    "calibration_networks": (lambda v: is_integer(v, low=0, high=1_000_000),
                             "a non-negative integer (at most 1000000)"),
    "timing": (_timing_settings, "an object of timing settings (numbers up to 1e5 or true/false)"),
    "probe": (_probe, "an object {genotype, resolution, ms: [positive numbers]}"),  # genotype None: no network
    "batch_size": (lambda v: is_integer(v, low=1, high=1 << 20), "a positive integer (at most 2^20)"),
    "num_classes": (lambda v: is_integer(v, low=1, high=1 << 20), "a positive integer (at most 2^20)"),
}


def _check_metadata(md: dict[str, Any], bad: Any) -> None:
    for key, (ok, what) in METADATA_TYPES.items():
        v = md.get(key)
        if (v is not None or key in REQUIRED_METADATA) and not ok(v):
            raise bad(f"metadata {key} must be {what}, got {str(json.dumps(v))[:80]}")


def error_stats(predicted: Iterable[float], measured: Iterable[float]) -> dict[str, float | None]:
    """MAPE (%), max |error| (%), share within +-5 % (%), Spearman rank correlation (None where undefined:
    fewer than 3 networks or constant values -- reports are strict JSON), and the mean signed error (%,
    ``bias``: positive = predictions too high)."""
    from scipy.stats import spearmanr

    p = np.asarray(list(predicted), dtype=float)
    m = np.asarray(list(measured), dtype=float)
    signed = (p - m) / m * 100
    err = np.abs(signed)
    defined = len(p) > 2 and np.ptp(p) > 0 and np.ptp(m) > 0  # ranks of a constant are no ranking
    rho: float | None = float(spearmanr(p, m).statistic) if defined else None
    if rho is not None and not math.isfinite(rho):
        rho = None
    return {"n": len(p), "mape": float(err.mean()), "max_error": float(err.max()),
            "within_5pct": float((err <= 5).mean() * 100), "spearman": rho, "bias": float(signed.mean())}


# ---- networks for calibration and validation ------------------------------------------------------
def calibration_genotypes(space: SearchSpace, n: int, seed: int) -> list[Genotype]:
    """``n`` distinct random networks of ``space`` plus the named references that are points of it."""
    from hwnas.references import REFERENCE_NAMES, reference

    out: list[Genotype] = []
    for name in REFERENCE_NAMES:
        try:
            space.encode(reference(name))
        except SpaceError:
            continue
        out.append(reference(name))
    return out + random_genotypes(space, n, seed, exclude={g.to_string() for g in out})


def random_genotypes(space: SearchSpace, n: int, seed: int, exclude: set[str] | None = None) -> list[Genotype]:
    """``n`` distinct random networks, none of them in ``exclude`` (bounded: 100 draws per network)."""
    rng = np.random.default_rng(seed)
    seen = set(exclude or ())
    out: list[Genotype] = []
    for _ in range(100 * n):
        if len(out) == n:
            break
        g = space.decode(space.sample(rng))
        if g.to_string() not in seen:
            seen.add(g.to_string())
            out.append(g)
    return out


def predicted_latency(table: LatencyTable | None, genotype: Genotype, resolution: int) -> dict[str, Any] | None:
    """The table's prediction as a record (table, device, runtime, ms), with ms None and the reason when
    the table cannot price the network (missing key, resolution not covered); None without a table."""
    if table is None:
        return None
    out: dict[str, Any] = {"table": table.source, "device": table.describe(), "runtime": table.runtime, "ms": None}
    try:
        out["ms"] = round(float(table.predict(genotype, resolution)), 4)
    except TableError as e:
        out["reason"] = str(e).splitlines()[0]
    return out


def pending_calibration(table: LatencyTable, genotypes: list[Genotype]) -> list[tuple[Genotype, int]]:
    have = {(row["genotype"], int(row["resolution"])) for row in table.calibration}
    return [(g, r) for r in table.resolutions for g in genotypes if (g.to_string(), r) not in have]
