"""NAS-Bench-201 / TransNAS-Bench-101 micro cell spaces: codec, vector operations, analytic costs.

Costs are checked three ways: against the built torch module (``FlopCounterMode`` total / 2, parameter
count), term by term for the fixed skeleton, and against NB201's published cost range (its ``flop`` field
is our multiply-adds + ``num_classes`` (the classifier bias), in M; its ``params`` field is our count in M).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from conftest import reproducible_random_operations
from hwnas.spaces import get_space
from hwnas.spaces.base import SpaceError
from hwnas.spaces.nb201 import (
    EDGE_NAMES,
    NB201_OPS,
    TRANSNAS_MICRO_OPS,
    CellArch,
    NB201Space,
    TransNASMicroSpace,
    cell_network_flops,
    cell_network_params,
    parse_cell,
)

NB201 = NB201Space()
MICRO = TransNASMicroSpace()
BENCH = Path("/work/shared/data/benchmarks/nb201-accuracy.tar.xz")

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ALL_CONV3 = CellArch(("nor_conv_3x3",) * 6)
ALL_NONE = CellArch(("none",) * 6)
# node 1 holds a 3x3 conv but feeds only `none` edges: its conv is computed, and its weights exist
DANGLING = parse_cell("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")

# NB201 (v1.1 benchmark file) cost range over all 15,625 cells, as published: (flop in M, params in M) of
# the cheapest cell (no conv on any edge) and of the all-3x3-conv cell, per dataset.
PUBLISHED = {  # (resolution, classes): ((min flop, min params), (max flop, max params))
    (32, 10): ((7.78305, 0.073306), (220.11969, 1.531546)),  # CIFAR-10
    (32, 100): ((7.78890, 0.079156), (220.12554, 1.537396)),  # CIFAR-100
    (16, 120): ((1.95340, 0.080456), (55.03756, 1.538696)),  # ImageNet16-120
}


def _all_archs(ops: tuple[str, ...]) -> list[CellArch]:
    return [CellArch(t) for t in itertools.product(ops, repeat=6)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny networks run faster on one thread


def _measure(arch: CellArch, resolution: int, num_classes: int) -> tuple[int, int]:
    model = NB201.build(arch, num_classes=num_classes, input_size=resolution).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(torch.zeros(1, 3, resolution, resolution))
    assert out.shape == (1, num_classes)
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2, sum(p.numel() for p in model.parameters())


def _sample_archs() -> list[CellArch]:
    rng = np.random.default_rng(7)
    archs = [ALL_NONE, ALL_CONV3, DANGLING, NB201.parse(EXAMPLE), CellArch(("nor_conv_1x1",) * 6),
             CellArch(("avg_pool_3x3",) * 6), CellArch(("skip_connect",) * 6)]
    archs += [NB201.decode(NB201.sample(rng)) for _ in range(13)]
    return archs


# ---- codec ------------------------------------------------------------------------------------------
def test_string_form_matches_nb201() -> None:
    a = NB201.parse(EXAMPLE)
    assert a.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert a.to_string() == EXAMPLE and str(a) == EXAMPLE
    assert a.op(3, 1) == "nor_conv_3x3" and a.op(2, 1) == "avg_pool_3x3"
    assert [n for n, _ in NB201.dims] == list(EDGE_NAMES)
    assert NB201.parse(json.dumps(a.to_json())) == a
    assert NB201.parse(json.dumps({"ops": list(a.ops)})) == a
    assert NB201.parse("  " + EXAMPLE + "\n") == a
    assert hash(a) == hash(NB201.parse(EXAMPLE))


@pytest.mark.parametrize("space", [NB201, MICRO], ids=["nb201", "transnas-micro"])
def test_every_vector_round_trips(space: NB201Space) -> None:
    size = len(space.ops) ** 6
    assert space.size() == size == (15_625 if space is NB201 else 4_096)
    seen = set()
    for t in itertools.product(range(len(space.ops)), repeat=6):
        v = np.array(t)
        a = space.decode(v)
        s = a.to_string()
        assert np.array_equal(space.encode(a), v)
        assert space.parse(s) == a and space.parse(s).to_string() == s
        seen.add(s)
    assert len(seen) == size


def test_official_nb201_strings_parse() -> None:
    """All 15,625 strings of the benchmark's configs.txt (official index order) parse and print back."""
    if not BENCH.exists():
        pytest.skip("benchmark archive not present")
    with tarfile.open(BENCH) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("configs.txt"))
        f = tf.extractfile(member)
        assert f is not None
        lines = f.read().decode().split()
    assert len(lines) == 15_625
    archs = {NB201.parse(s) for s in lines}
    assert len(archs) == 15_625
    assert all(NB201.parse(s).to_string() == s for s in lines)


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 nodes"),
    (EXAMPLE + "+|none~0|", "3 nodes"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 2 must have 2"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~2|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     "node 2: input '2' where 1 expected"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~1|avg_pool_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     "where 0 expected"),
    ("|conv_5x5~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     "op 'conv_5x5' is unknown"),
    ("|nor_conv_3x3|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "bad token"),
    ("nor_conv_3x3~0+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 1"),
    ("x" * 5000, "too long"),
    ("{", "bad JSON"),
    ('{"ops": ["none"]}', "6 ops"),
    ('{"cell": 3}', "a JSON cell is"),
    ("[1, 2]", "3 nodes"),
])
def test_bad_strings_say_why(text: str, fragment: str) -> None:
    with pytest.raises(SpaceError) as e:
        NB201.parse(text)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg and len(msg) < 200, msg


def test_op_outside_the_space() -> None:
    with pytest.raises(SpaceError, match="avg_pool_3x3' is not in this space"):
        MICRO.parse(EXAMPLE)
    with pytest.raises(SpaceError, match="not in this space"):
        MICRO.encode(NB201.parse(EXAMPLE))
    a = MICRO.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|")
    assert NB201.parse(a.to_string()) == a  # every micro cell is an NB201 cell
    long_token = "|" + "q" * 900 + "~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(SpaceError) as e:
        NB201.parse(long_token)
    assert len(str(e.value)) < 200


@pytest.mark.parametrize("bad", [None, 3, b"|none~0|", ["none"] * 6])
def test_non_strings_rejected(bad: object) -> None:
    with pytest.raises(SpaceError):
        NB201.parse(bad)  # type: ignore[arg-type]


def test_cell_arch_checks() -> None:
    with pytest.raises(SpaceError, match="6 edges"):
        CellArch(("none",) * 5)
    with pytest.raises(SpaceError, match="unknown op"):
        CellArch(("none",) * 5 + ("conv",))
    with pytest.raises(SpaceError):
        CellArch("none")  # type: ignore[arg-type]
    assert CellArch(["none"] * 6) == ALL_NONE  # type: ignore[arg-type]
    assert not ALL_NONE.is_connected() and ALL_CONV3.is_connected()
    assert DANGLING.live_nodes() == (True, True, True, True)
    assert not parse_cell("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|").is_connected()


_PIECES = st.sampled_from(["|", "+", "~", "0", "1", "2", "3", "01", *NB201_OPS, " ", "{", "}", '"', ":", "[", "]",
                           "cell", "ops", ",", "\x00", "\u00b2", "\ud800"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_PIECES, max_size=40).map("".join)))
def test_hostile_text_only_space_error(text: str) -> None:
    for space in (NB201, MICRO):
        try:
            a = space.parse(text)
        except SpaceError as e:
            assert "\n" not in str(e)
        else:
            assert space.parse(a.to_string()) == a
            assert space.decode(space.encode(a)) == a


@settings(max_examples=200, deadline=None)
@given(st.tuples(*[st.sampled_from(NB201_OPS)] * 6), st.integers(0, 94), st.text(max_size=3))
def test_edited_valid_strings(ops: tuple[str, ...], at: int, insert: str) -> None:
    s = CellArch(ops).to_string()
    assert NB201.parse(s).ops == ops
    edited = s[:at] + insert + s[at + 1:]
    try:
        a = NB201.parse(edited)
    except SpaceError:
        return
    assert a.to_string() == edited.strip()


# ---- vector operations ------------------------------------------------------------------------------
@pytest.mark.parametrize("space", [NB201, MICRO], ids=["nb201", "transnas-micro"])
def test_random_operations_stay_in_space_and_reproduce(space: NB201Space) -> None:
    for v in reproducible_random_operations(space):
        space.validate(v)
        a = space.decode(v)
        assert set(a.ops) <= set(space.ops)
        assert np.array_equal(space.encode(a), v)
    rng = np.random.default_rng(0)
    v = space.sample(rng)
    assert not np.array_equal(space.mutate(v, rng), v)


def test_registry() -> None:
    assert isinstance(get_space("nb201"), NB201Space)
    assert isinstance(get_space("transnas-micro"), TransNASMicroSpace)
    assert get_space("nb201") == NB201 and hash(get_space("nb201")) == hash(NB201)
    assert NB201.kind == "nb201" and MICRO.kind == "transnas-micro"
    assert NB201.default_resolution == 32 and NB201.default_num_classes == 10
    assert NB201.has_costs and not MICRO.has_costs
    assert MICRO.ops == TRANSNAS_MICRO_OPS and MICRO.size() == 4096
    info = MICRO.info()
    assert json.loads(json.dumps(info)) == info and info["has_costs"] is False


def test_transnas_micro_has_no_cost_model() -> None:
    a = MICRO.decode([3] * 6)
    for call in (lambda: MICRO.flops(a), lambda: MICRO.params(a), lambda: MICRO.build(a)):
        with pytest.raises(SpaceError, match="no cost model"):
            call()


# ---- costs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("resolution", "num_classes", "n_archs"), [(32, 10, 20), (16, 120, 8)])
def test_costs_equal_the_built_module(resolution: int, num_classes: int, n_archs: int) -> None:
    """20 cells at 32 px (all-none, all-3x3, a dangling node, ...), the first 8 of them at 16 px, 120 classes."""
    for arch in _sample_archs()[:n_archs]:
        flops, params = _measure(arch, resolution, num_classes)
        assert NB201.flops(arch, resolution, num_classes) == flops, arch
        assert NB201.params(arch, num_classes) == params, arch


def test_skeleton_term_by_term() -> None:
    """A cell with no conv leaves the fixed skeleton: each term written out, the reduction shortcuts included."""
    stem = 32 * 32 * 3 * 9 * 16
    red1 = 16 * 16 * (16 * 32 * 9 + 32 * 32 * 9 + 16 * 32)  # conv_a (s2), conv_b, shortcut 1x1 after pooling
    red2 = 8 * 8 * (32 * 64 * 9 + 64 * 64 * 9 + 32 * 64)
    head = 64 * 10
    assert NB201.flops(ALL_NONE) == stem + red1 + red2 + head == 7_783_040
    p_stem = 3 * 9 * 16 + 2 * 16
    p_red1 = 16 * 32 * 9 + 2 * 32 + 32 * 32 * 9 + 2 * 32 + 16 * 32
    p_red2 = 32 * 64 * 9 + 2 * 64 + 64 * 64 * 9 + 2 * 64 + 32 * 64
    p_head = 2 * 64 + 64 * 10 + 10
    assert NB201.params(ALL_NONE) == p_stem + p_red1 + p_red2 + p_head == 73_306
    assert _measure(ALL_NONE, 32, 10) == (stem + red1 + red2 + head, p_stem + p_red1 + p_red2 + p_head)
    # a cell conv costs h*h*k*k*c*c per cell, 5 cells per stage, and every stage costs the same
    one = CellArch(("nor_conv_3x3",) + ("none",) * 5)
    assert NB201.flops(one) - NB201.flops(ALL_NONE) == 3 * 5 * 9 * 16 * 16 * 32 * 32
    assert NB201.params(one) - NB201.params(ALL_NONE) == 5 * sum(9 * c * c + 2 * c for c in (16, 32, 64))


@pytest.mark.parametrize("key", list(PUBLISHED))
def test_published_nb201_cost_range(key: tuple[int, int]) -> None:
    resolution, classes = key
    (min_flop, min_params), (max_flop, max_params) = PUBLISHED[key]
    cheapest = [NB201.flops(a, resolution, classes) for a in (ALL_NONE, CellArch(("avg_pool_3x3",) * 6))]
    assert cheapest == [round(min_flop * 1e6) - classes] * 2  # NB201's counter adds the classifier bias
    assert NB201.flops(ALL_CONV3, resolution, classes) == round(max_flop * 1e6) - classes
    assert NB201.params(ALL_NONE, classes) == round(min_params * 1e6)
    assert NB201.params(ALL_CONV3, classes) == round(max_params * 1e6)


def test_costs_are_extremes_over_the_space() -> None:
    costs = [(cell_network_flops(a, 32, 10), cell_network_params(a, 10)) for a in _all_archs(NB201_OPS)]
    assert min(costs) == (NB201.flops(ALL_NONE), NB201.params(ALL_NONE))
    assert max(costs) == (NB201.flops(ALL_CONV3), NB201.params(ALL_CONV3)) == (220_119_680, 1_531_546)


def test_dead_edges_still_count() -> None:
    live_only = CellArch(("none", *DANGLING.ops[1:]))  # the same cell without node 1's (unused) conv
    assert NB201.flops(DANGLING) - NB201.flops(live_only) == 3 * 5 * 9 * 16 * 16 * 32 * 32
    model = NB201.build(DANGLING)
    assert sum(p.numel() for p in model.cells[0].layers[0].parameters()) == 9 * 16 * 16 + 2 * 16


@pytest.mark.parametrize("resolution", [0, 30, 18, -4, 2.5, True])
def test_bad_resolution(resolution: object) -> None:
    with pytest.raises(SpaceError, match="resolution"):
        NB201.flops(ALL_CONV3, resolution)  # type: ignore[arg-type]


def test_bad_classes_and_arch() -> None:
    with pytest.raises(SpaceError, match="num_classes"):
        NB201.params(ALL_CONV3, 0)
    with pytest.raises(SpaceError):
        NB201.flops("not a cell")
    assert NB201.flops(EXAMPLE) == NB201.flops(NB201.parse(EXAMPLE))


def test_reference_module_layout() -> None:
    """State-dict keys follow NB201's TinyNetwork (so its checkpoints' names line up); a real forward runs."""
    torch.manual_seed(0)
    model = NB201.build(DANGLING, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 7) and bool(torch.isfinite(out).all())
    keys = set(NB201.build(ALL_CONV3).state_dict())
    for k in ("stem.0.weight", "cells.0.layers.5.op.1.weight", "cells.5.conv_a.op.1.weight",
              "cells.5.downsample.1.weight", "cells.11.conv_b.op.2.running_var", "lastact.0.weight",
              "classifier.bias"):
        assert k in keys, k
    assert len(NB201.build(ALL_CONV3).cells) == 17


def test_nb201_module_does_not_import_torch() -> None:
    code = ("import sys; import hwnas.spaces.nb201 as m; from hwnas.spaces import get_space; "
            "s = get_space('nb201'); a = s.decode(s.sample(__import__('numpy').random.default_rng(0))); "
            "s.flops(a); s.params(a); get_space('transnas-micro'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
