"""The DARTS cell space: codec, vector operations, analytic costs against the built module.

Costs are checked against the built torch module (``FlopCounterMode`` total / 2, parameter count) for random
cells at several network shapes and resolutions, and against DARTS's published figure for its DARTS_V2 cell
(3.3M params at C=36, 20 cells: DARTS's log prints "param size = 3.349342MB", the aux head excluded).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from conftest import reproducible_random_operations
from hwnas.cli.arch import cell_describe_data, guess_space
from hwnas.spaces import SPACE_KINDS, get_space
from hwnas.spaces.base import SpaceError
from hwnas.spaces.darts import (
    DARTS_OPS,
    DARTS_V1,
    DARTS_V2,
    SHORT_OPS,
    DartsArch,
    DartsSpace,
    distinct_networks,
    parse_arch,
    reduction_cells,
)

SPACE = DartsSpace()
EVAL = DartsSpace(channels=36, cells=20)  # DARTS's CIFAR-10 evaluation network

# quark0/darts cnn/genotypes.py, verbatim (one line) and as a search log prints it (range concat)
V2_TEXT = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
           "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
           "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
           "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
           "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
V1_MULTILINE = """Genotype(
  normal = [
    ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),
    ('skip_connect', 0), ('sep_conv_3x3', 1), ("sep_conv_3x3", 0), ('skip_connect', 2),
  ],
  normal_concat = range(2, 6),
  reduce = [('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)],
  reduce_concat = range(2, 6),
)"""
V2_COMPACT = ("darts:sep3~0+sep3~1,sep3~0+sep3~1,sep3~1+skip~0,skip~0+dil3~2/"
              "max3~0+max3~1,skip~2+max3~1,max3~0+skip~2,skip~2+max3~1")

# measured here (FlopCounterMode / 2 and the built module's parameter count agree with the walker)
V2_COSTS = {(16, 8): (43_444_736, 246_106), (36, 20): (528_359_040, 3_349_342)}  # (multiply-adds, params)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny networks run faster on one thread


def _measure(space: DartsSpace, arch: DartsArch, resolution: int, num_classes: int) -> tuple[int, int]:
    model = space.build(arch, num_classes=num_classes, input_size=resolution).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(torch.zeros(1, 3, resolution, resolution))
    assert out.shape == (1, num_classes)
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2, sum(p.numel() for p in model.parameters())


def _random_archs(n: int, seed: int) -> list[DartsArch]:
    rng = np.random.default_rng(seed)
    return [SPACE.decode(SPACE.sample(rng)) for _ in range(n)]


def _uniform(op: str, same_input: bool = False) -> DartsArch:
    """Every pair ``op``; inputs 0 and 1 (or both 0 with ``same_input``)."""
    pairs = tuple((op, 0 if same_input or k % 2 == 0 else 1) for k in range(8))
    return DartsArch(pairs, pairs)


def _json_with(first: list[object], **extra: object) -> str:
    """DARTS_V2 as JSON with the normal cell's first pair replaced."""
    d = DARTS_V2.to_json()
    d["normal"][0] = first
    return json.dumps({**d, **extra})


def _swap_block(arch: DartsArch, cell: str, block: int) -> DartsArch:
    pairs = list(arch.cell(cell))
    pairs[2 * block], pairs[2 * block + 1] = pairs[2 * block + 1], pairs[2 * block]
    other = arch.reduce if cell == "normal" else arch.normal
    return DartsArch(tuple(pairs), other) if cell == "normal" else DartsArch(other, tuple(pairs))


# ---- codec ------------------------------------------------------------------------------------------
def test_published_genotypes_parse() -> None:
    assert parse_arch(V2_TEXT) == DARTS_V2 and DARTS_V2.to_genotype() == V2_TEXT
    assert parse_arch(V1_MULTILINE) == DARTS_V1
    assert DARTS_V2.to_string() == V2_COMPACT and str(DARTS_V2) == V2_COMPACT
    assert SPACE.parse(V2_COMPACT) == DARTS_V2 == SPACE.parse("  " + V2_COMPACT + "\n")
    assert SPACE.parse(json.dumps(DARTS_V2.to_json())) == DARTS_V2
    assert SPACE.parse(json.dumps({"normal": DARTS_V2.to_json()["normal"], "reduce": DARTS_V2.to_json()["reduce"]})) \
        == DARTS_V2
    assert DARTS_V2.normal[7] == ("dil_conv_3x3", 2) and DARTS_V2.cell("reduce")[2] == ("skip_connect", 2)
    assert DARTS_V1.darts_derivable() and DARTS_V2.darts_derivable()
    assert hash(DARTS_V2) == hash(parse_arch(V2_TEXT))


def test_dims_and_size() -> None:
    names = [n for n, _ in SPACE.dims]
    assert names[:4] == ["normal_b0_in0", "normal_b0_op0", "normal_b0_in1", "normal_b0_op1"]
    assert names[-1] == "reduce_b3_op1" and SPACE.n_dims == 32
    assert dict(SPACE.dims)["reduce_b3_in1"] == (0, 1, 2, 3, 4) and dict(SPACE.dims)["normal_b2_op0"] == DARTS_OPS
    assert SPACE.size() == ((2 * 3 * 4 * 5) ** 2 * 7**8) ** 2 == 6_891_180_482_912_463_360_000
    assert distinct_networks() == (105 * 231 * 406 * 630) ** 2  # unordered pairs per block, per cell
    assert distinct_networks(distinct_inputs=True) == (1 * 3 * 6 * 10 * 7**8) ** 2  # 1.08e18: DARTS says ~1e18
    # the swap formula, by brute force over each block's (in0, op0, in1, op1)
    for b in range(4):
        pairs = [(op, i) for i in range(b + 2) for op in DARTS_OPS]
        n = len(pairs)
        assert len({frozenset([p, q]) if p != q else (p,) for p, q in itertools.product(pairs, repeat=2)}) \
            == n * (n + 1) // 2


def test_vectors_round_trip() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        v = SPACE.sample(rng)
        a = SPACE.decode(v)
        assert np.array_equal(SPACE.encode(a), v)
        assert SPACE.parse(a.to_string()) == a and SPACE.parse(a.to_string()).to_string() == a.to_string()
        assert SPACE.parse(a.to_genotype()) == a and SPACE.parse(json.dumps(a.to_json())) == a
        assert np.array_equal(SPACE.encode(a.to_string()), v)
        assert SPACE.to_choices(v)["normal_b0_op0"] == a.normal[0][0]
        seen.add(a)
    assert len(seen) == 400
    assert np.array_equal(SPACE.encode(DARTS_V2), SPACE.encode(V2_TEXT))
    assert SPACE.decode(SPACE.encode(DARTS_V2)) == DARTS_V2


def test_swapped_pairs_are_one_network() -> None:
    """Swapping a block's two pairs: another vector and string, one network (same costs, same function given
    the same weights); ``normalized`` maps both to one representative."""
    a = DARTS_V2
    b = _swap_block(_swap_block(a, "normal", 2), "reduce", 1)
    assert a != b and a.normalized() == b.normalized() and a.normalized().normalized() == a.normalized()
    assert not np.array_equal(SPACE.encode(a), SPACE.encode(b))
    assert (SPACE.flops(a), SPACE.params(a)) == (SPACE.flops(b), SPACE.params(b))
    small = DartsSpace(channels=4, cells=3)
    torch.manual_seed(0)
    net_a, net_b = small.build(a).eval(), small.build(b).eval()
    sd = net_a.state_dict()
    swap = {"normal": {4: 5, 5: 4}, "reduce": {2: 3, 3: 2}}  # op indices of the swapped blocks
    moved = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "cells" and parts[2] == "_ops":
            kind = "reduce" if int(parts[1]) in reduction_cells(3) else "normal"
            parts[3] = str(swap[kind].get(int(parts[3]), int(parts[3])))
        moved[".".join(parts)] = value
    net_b.load_state_dict(moved)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net_a(x), net_b(x), atol=1e-5)
    assert a.normalized().normal[4:6] == (("skip_connect", 0), ("sep_conv_3x3", 1))


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    ("sep3~0", "'darts:...', 'Genotype(...)' or a JSON object"),
    ("darts:" + V2_COMPACT[6:].split("/")[0], "separated by one '/'"),
    (V2_COMPACT + "/sep3~0", "separated by one '/'"),
    (V2_COMPACT.replace(",sep3~1+skip~0", ""), "normal cell has 4 blocks"),
    (V2_COMPACT.replace("sep3~1+skip~0", "sep3~1"), "normal block 2: expected two pairs"),
    (V2_COMPACT.replace("skip~0+dil3~2", "skip~0+dil3~5"), "normal block 3 pair 1: input '5' is not one of 0..4"),
    (V2_COMPACT.replace("sep3~0+sep3~1", "sep3~2+sep3~1", 1), "input '2' is not one of 0..1"),
    (V2_COMPACT.replace("max3~0+max3~1", "max3~00+max3~1"), "input '00'"),
    (V2_COMPACT.replace("max3~0+max3~1", "max3 ~0+max3~1"), "op 'max3 ' is not a short op name"),
    (V2_COMPACT.replace("sep3~0", "sep_conv_3x3~0", 1), "the short name is 'sep3'"),
    (V2_COMPACT.replace("sep3~0", "none~0", 1), "not a short op name"),
    (V2_COMPACT.replace("sep3~0", "sep3", 1), "bad token"),
    (V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "normal block 3 pair 1: input 5 out of range"),
    (V2_TEXT.replace("('dil_conv_3x3', 2)", "('none', 2)"), "op 'none' is not in the darts space"),
    (V2_TEXT.replace("('dil_conv_3x3', 2)", "('sep_conv_7x7', 2)"), "not in the darts space"),
    (V2_TEXT.replace("('dil_conv_3x3', 2)", "('conv_9x9', 2)"), "op 'conv_9x9' is unknown"),
    (V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil3', 2)"), "short name"),
    (V2_TEXT.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4, 5, 6]"), "normal_concat must be"),
    (V2_TEXT.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(2, 5)"), "reduce_concat must be"),
    (V2_TEXT.replace(", reduce_concat=[2, 3, 4, 5]", ""), "missing reduce_concat"),
    (V2_TEXT.replace("normal_concat", "extra"), "unknown keyword 'extra'"),
    (V2_TEXT + ")", "unexpected text after"),
    (V2_TEXT[:-1], "expected ',' or ')'"),
    (V2_TEXT.replace("('skip_connect', 0), ('dil_conv_3x3', 2)", "('skip_connect', 0)"), "got 7 pairs"),
    (V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2), ('dil_conv_3x3', 2)"), "more than 8"),
    (V2_TEXT.replace("'dil_conv_3x3'", "dil_conv_3x3"), "expected a quoted op name"),
    (V2_TEXT.replace("2)]", "2.0)]", 1), "unexpected text"),
    (V2_TEXT.replace("2)]", "12345)]", 1), "too large"),
    ("Genotype(normal=[('sep_conv_3x3', 0)])", "missing normal_concat"),
    ("Genotypes(", "starts with 'Genotype('"),
    ("x" * 5000, "too long"),
    ("{", "bad JSON"),
    ("[1]", "'darts:...'"),
    ('{"normal": []}', "a JSON DARTS architecture is"),
    ('{"normal": [], "reduce": [], "genotype": 1}', "a JSON DARTS architecture is"),
    ('{"normal": [], "reduce": []}', "got 0 pairs"),
    ('{"normal": 3, "reduce": []}', 'JSON "normal" must be a list'),
    (_json_with(["sep_conv_3x3", True]), "normal block 0 pair 0: input must be an integer"),
    (_json_with(["sep_conv_3x3", 0.0]), "input must be an integer"),
    (_json_with([1, 0]), "op must be a string"),
    (_json_with(["sep_conv_3x3"]), "expected [op, input]"),
    (_json_with(["max3", 0]), "short name"),
    (_json_with(["sep_conv_3x3", 0], normal_concat=[2, 3, 4]), "normal_concat must be"),
])
def test_bad_strings_say_why(text: str, fragment: str) -> None:
    with pytest.raises(SpaceError) as e:
        SPACE.parse(text)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg and len(msg) < 220, msg


@pytest.mark.parametrize("bad", [None, 3, b"darts:", ["sep_conv_3x3"] * 8])
def test_non_strings_rejected(bad: object) -> None:
    with pytest.raises(SpaceError):
        SPACE.parse(bad)  # type: ignore[arg-type]


def test_arch_checks() -> None:
    pairs = DARTS_V2.normal
    with pytest.raises(SpaceError, match="got 7 pairs"):
        DartsArch(pairs[:7], pairs)
    with pytest.raises(SpaceError, match=r"reduce block 0 pair 0: input 2 out of range 0\.\.1"):
        DartsArch(pairs, (("max_pool_3x3", 2), *pairs[1:]))
    with pytest.raises(SpaceError, match="must be a sequence"):
        DartsArch("sep_conv_3x3", pairs)  # type: ignore[arg-type]
    with pytest.raises(SpaceError, match=r"expected an \(op, input\) pair"):
        DartsArch(pairs, ("max_pool_3x3",) * 8)  # type: ignore[arg-type]
    with pytest.raises(SpaceError, match="input must be an integer"):
        DartsArch(pairs, (("max_pool_3x3", True), *pairs[1:]))
    loose = DartsArch([list(p) for p in pairs], [(op, np.int64(i)) for op, i in DARTS_V2.reduce])  # type: ignore[arg-type]
    assert loose == DARTS_V2 and type(loose.reduce[0][1]) is int
    with pytest.raises(SpaceError, match="'normal' or 'reduce'"):
        DARTS_V2.cell("other")
    both_on_zero = _uniform("sep_conv_3x3", same_input=True)
    assert not both_on_zero.darts_derivable() and SPACE.flops(both_on_zero) > 0


_PIECES = st.sampled_from(["darts:", "/", ",", "+", "~", "0", "1", "2", "5", "01", *SHORT_OPS.values(), *DARTS_OPS,
                           "Genotype", "(", ")", "[", "]", "'", '"', "=", " ", "\n", "normal", "reduce",
                           "normal_concat", "reduce_concat", "range", "{", "}", ":", "none", "\x00", "\u00b2",
                           "\ud800", "\u0663", "\u2028"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_PIECES, max_size=60).map("".join)))
def test_hostile_text_only_space_error(text: str) -> None:
    try:
        a = SPACE.parse(text)
    except SpaceError as e:
        assert "\n" not in str(e) and len(str(e)) < 300
    else:
        assert SPACE.parse(a.to_string()) == a and SPACE.parse(a.to_genotype()) == a
        assert SPACE.decode(SPACE.encode(a)) == a


_ARCHS = st.lists(st.integers(0, 10**6), min_size=32, max_size=32).map(
    lambda xs: SPACE.decode([x % (int(u) + 1) for x, u in zip(xs, SPACE.upper_bounds, strict=True)]))


@settings(max_examples=200, deadline=None)
@given(_ARCHS, st.integers(0, 116), st.text(max_size=3))
def test_edited_compact_strings(arch: DartsArch, at: int, insert: str) -> None:
    """The compact form is strict: an edit either fails or spells exactly the edited string."""
    s = arch.to_string()
    assert SPACE.parse(s) == arch
    edited = s[:at] + insert + s[at + 1:]
    try:
        a = SPACE.parse(edited)
    except SpaceError:
        return
    assert a.to_string() == edited.strip()


@settings(max_examples=150, deadline=None)
@given(_ARCHS, st.integers(0, 400), st.text(alphabet=" ,()[]'\"=0123456789_abcdefgnoprstuvx\n", max_size=3))
def test_edited_genotype_strings(arch: DartsArch, at: int, insert: str) -> None:
    s = arch.to_genotype()
    edited = s[:at] + insert + s[at + 1:]
    try:
        a = SPACE.parse(edited)
    except SpaceError as e:
        assert "\n" not in str(e)
        return
    assert SPACE.parse(a.to_genotype()) == a


# ---- vector operations, registry ------------------------------------------------------------------
def test_random_operations_stay_in_space_and_reproduce() -> None:
    for v in reproducible_random_operations(SPACE):
        a = SPACE.decode(SPACE.validate(v))
        assert np.array_equal(SPACE.encode(a), v)
    rng = np.random.default_rng(0)
    v = SPACE.sample(rng)
    assert not np.array_equal(SPACE.mutate(v, rng), v)
    with pytest.raises(SpaceError, match=r"normal_b0_in0=2 out of range 0\.\.1"):
        SPACE.validate([2] + [0] * 31)
    assert SPACE.from_choices(SPACE.to_choices(v)).tolist() == v.tolist()


def test_registry_and_settings() -> None:
    assert "darts" in SPACE_KINDS
    assert get_space("darts") == SPACE and hash(get_space("darts")) == hash(SPACE)
    ev = get_space("darts", {"channels": 36, "cells": 20})
    assert ev == EVAL and (ev.channels, ev.cells, ev.stem_multiplier) == (36, 20, 3)
    assert SPACE.kind == "darts" and SPACE.default_resolution == 32 and SPACE.default_num_classes == 10
    info = ev.info()
    assert json.loads(json.dumps(info)) == info
    assert info["channels"] == 36 and info["reduction_cells"] == [6, 13] and info["size"] == SPACE.size()
    assert reduction_cells(8) == (2, 5) and reduction_cells(3) == (1, 2)
    for config, fragment in [({"channel": 36}, "unknown setting(s): channel"), ({"cells": 2}, "cells must be"),
                             ({"channels": 0}, "channels must be"), ({"channels": True}, "channels must be"),
                             ({"cells": 8.0}, "cells must be"), ({"stem_multiplier": 9}, "stem_multiplier must be"),
                             ({"kind": "darts"}, "unknown setting(s): kind")]:
        with pytest.raises(SpaceError) as e:
            get_space("darts", config)
        assert fragment in str(e.value) and "\n" not in str(e.value), e.value
    assert guess_space(V2_COMPACT) == guess_space(V2_TEXT) == "darts"
    d = cell_describe_data("darts", V2_TEXT, None, None)
    assert d["arch"] == V2_COMPACT and (d["flops"], d["params"]) == V2_COSTS[(16, 8)]


# ---- costs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "resolution", "num_classes", "n_random"), [
    ((16, 8, 3), 32, 10, 6),
    ((16, 8, 3), 24, 100, 2),  # sizes 24, 12, 6
    ((16, 8, 3), 64, 10, 1),
    ((36, 20, 3), 32, 10, 2),
    ((5, 3, 2), 16, 7, 3),  # odd C; cells 1 and 2 both reduce (FactorizedReduce into a reduction cell)
    ((8, 5, 1), 8, 10, 3),  # reductions at cells 1 and 3; 8 px -> 2 px
])
def test_costs_equal_the_built_module(shape: tuple[int, int, int], resolution: int, num_classes: int,
                                      n_random: int) -> None:
    space = DartsSpace(*shape)
    archs = [DARTS_V2, _uniform("sep_conv_5x5"), _uniform("skip_connect", same_input=True),
             *_random_archs(n_random, seed=sum(shape) + resolution)]
    if shape[0] == 36:
        archs = archs[:1] + archs[3:]
    for arch in archs:
        flops, params = _measure(space, arch, resolution, num_classes)
        assert space.flops(arch, resolution, num_classes) == flops, arch
        assert space.params(arch, num_classes) == params, arch


def test_darts_v2_published_size() -> None:
    """DARTS_V2 at C=36, 20 cells: 3,349,342 params (DARTS: 3.3M; its log's "param size = 3.349342MB"),
    528.4M multiply-adds at 32 px; DARTS's search shape (C=16, 8 cells): 246,106 params, 43.4M."""
    for space, key in ((SPACE, (16, 8)), (EVAL, (36, 20))):
        assert (space.flops(DARTS_V2), space.params(DARTS_V2)) == V2_COSTS[key]
        assert space.flops(V2_TEXT) == V2_COSTS[key][0]
    assert round(EVAL.params(DARTS_V2) / 1e6, 1) == 3.3
    assert (EVAL.flops(DARTS_V1), EVAL.params(DARTS_V1)) == (500_987_520, 3_169_414)


def test_skeleton_term_by_term() -> None:
    """All-max-pool cells leave the skeleton (stem, preprocessing, classifier), written out for C=16, 8 cells."""
    arch = _uniform("max_pool_3x3")
    # cell: (C, input size, s0 channels, s1 channels, reduction_prev)
    cells = [(16, 32, 48, 48, False), (16, 32, 48, 64, False), (32, 32, 64, 64, False), (32, 16, 64, 128, True),
             (32, 16, 128, 128, False), (64, 16, 128, 128, False), (64, 8, 128, 256, True), (64, 8, 256, 256, False)]
    flops = 32 * 32 * 27 * 48 + 256 * 10
    params = 27 * 48 + 2 * 48 + 256 * 10 + 10
    for c, h, c_pp, c_p, red_prev in cells:
        w0 = c_pp * 2 * (c // 2) if red_prev else c_pp * c  # FactorizedReduce: two halves, at the output size
        flops += h * h * w0 + h * h * c_p * c
        params += w0 + 2 * c + c_p * c + 2 * c
    assert (SPACE.flops(arch), SPACE.params(arch)) == (flops, params)
    # a sep_conv_3x3 on node 1 of the first normal cell instead of a pool: 2 x (dw 3x3 + pw) at 32x32, 16 ch
    one = DartsArch((("sep_conv_3x3", 1), *arch.normal[1:]), arch.reduce)
    normal = [(c, h) for i, (c, h, *_) in enumerate(cells) if i not in (2, 5)]  # the normal cells' (C, size)
    assert SPACE.flops(one) - SPACE.flops(arch) == sum(2 * h * h * (9 * c + c * c) for c, h in normal)
    assert SPACE.params(one) - SPACE.params(arch) == sum(2 * (9 * c + c * c) + 4 * c for c, _ in normal)


@pytest.mark.parametrize("resolution", [0, 30, 18, -4, 2.5, True, "32"])
def test_bad_resolution(resolution: object) -> None:
    with pytest.raises(SpaceError, match="resolution"):
        SPACE.flops(DARTS_V2, resolution)  # type: ignore[arg-type]
    with pytest.raises(SpaceError, match="resolution"):
        SPACE.build(DARTS_V2, input_size=resolution)  # type: ignore[arg-type]


def test_bad_classes_and_arch() -> None:
    with pytest.raises(SpaceError, match="num_classes"):
        SPACE.params(DARTS_V2, 0)
    with pytest.raises(SpaceError, match="num_classes"):
        SPACE.build(DARTS_V2, num_classes=True)  # type: ignore[arg-type]
    with pytest.raises(SpaceError):
        SPACE.flops("not an arch")
    with pytest.raises(SpaceError, match="DartsArch"):
        SPACE.encode(3)  # type: ignore[arg-type]
    with pytest.raises(SpaceError, match="DartsArch"):
        SPACE.params(3)  # type: ignore[arg-type]


# ---- the network ------------------------------------------------------------------------------------------
def test_forward_backward_and_reference_layout() -> None:
    torch.manual_seed(0)
    model = SPACE.build(DARTS_V2, num_classes=7).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 6])
    out = model(x)
    assert out.shape == (4, 7) and bool(torch.isfinite(out).all())
    torch.nn.functional.cross_entropy(out, y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    keys = set(model.state_dict())
    for k in ("stem.0.weight", "stem.1.running_var", "cells.0.preprocess0.op.1.weight",
              "cells.3.preprocess0.conv_2.weight",  # after the reduction at cell 2: FactorizedReduce
              "cells.0._ops.7.op.1.weight",  # dil_conv_3x3's depthwise
              "cells.2._ops.2.conv_1.weight",  # skip_connect on node 2 of a reduction cell... is the identity
              "classifier.bias"):
        assert (k in keys) == (k != "cells.2._ops.2.conv_1.weight"), k
    assert len(model.cells) == 8 and [c.reduction for c in model.cells].count(True) == 2
    assert type(model.cells[2]._ops[5]).__name__ == "Identity"  # reduce pair 5: skip_connect from node 2
    assert type(model.cells[2]._ops[0]).__name__ == "MaxPool2d"
    assert model.cells[2]._ops[0].stride == 2 and model.cells[2]._ops[2].__class__.__name__ == "Identity"
    red = SPACE.build(_uniform("skip_connect"))
    assert type(red.cells[2]._ops[0]).__name__ == "FactorizedReduce"  # stride-2 skip


def test_darts_module_does_not_import_torch() -> None:
    code = ("import sys; import hwnas.spaces.darts as m; from hwnas.spaces import get_space; "
            "s = get_space('darts', {'channels': 36, 'cells': 20}); "
            "a = s.decode(s.sample(__import__('numpy').random.default_rng(0))); "
            "s.flops(a); s.params(a); s.parse(m.DARTS_V2.to_genotype()); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_search_trains_swapped_pairs_once() -> None:
    """The search loop records and trains ``canonical`` architectures: a proposal that only swaps a block's
    pairs of one already trained is its network, answered from the cache, not trained again."""
    from hwnas.search.problem import Problem
    from hwnas.search.run import EvalResult, create_search

    a = DARTS_V2
    b = _swap_block(a, "normal", 2)
    trained: list[str] = []

    def evaluate(arch: DartsArch) -> EvalResult:
        trained.append(arch.to_string())
        return EvalResult(50.0 + len(trained))

    class Scripted:
        def __init__(self) -> None:
            self.xs = [SPACE.encode(a), SPACE.encode(b), SPACE.sample(np.random.default_rng(0))]

        def ask(self) -> np.ndarray:
            return self.xs.pop(0)

        def tell(self, x: np.ndarray, f: object, g: object) -> None:
            pass

    s = create_search(Problem(SPACE, objectives=("acc", "flops")), None, "swap", "custom", evaluate,
                      custom=lambda feasible: Scripted())
    s.run(2)  # two trainings: the swapped copy costs none
    first, second, _ = s.study.trials
    assert trained[0] == a.normalized().to_string() and len(trained) == 2
    assert first.user_attrs["genotype"] == second.user_attrs["genotype"] == a.normalized().to_string()
    assert second.user_attrs["cached_from"] == first.number and second.values == first.values
