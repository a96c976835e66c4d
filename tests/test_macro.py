"""NAS-Bench-Macro as hwnas genotypes: the ``id`` layer, ``MacroSpace``, and exactness against the benchmark.

Every one of the 6,561 networks: walker params == the benchmark's ``params``, walker FLOPs (32 px, 10 classes)
== its ``flops``, and the built torch module's parameter count == both.
"""

from __future__ import annotations

import functools
import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import hwnas.model as model_mod
from hwnas import walker
from hwnas.genotype import Genotype, GenotypeError, Stage, parse_genotype
from hwnas.latency.measure import CpuTimer, Setup, layer_module, time_layers
from hwnas.latency.table import LatencyTable, Overhead, space_layers
from hwnas.spaces import SpaceError, get_space
from hwnas.spaces.macro import MacroSpace, canonical_code
from hwnas.spaces.mbconv import SearchSpace
from hwnas.tabular import macro
from hwnas.walker import Layer, walk

SPACE = MacroSpace()
ALL_CODES = tuple("".join(p) for p in itertools.product("012", repeat=8))


@functools.cache
def benchmark() -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(codes, params, flops) of the benchmark, from the package's data (``hwnas.tabular.macro``)."""
    t = macro()
    return tuple(t.codes), np.asarray(t.params, dtype=np.int64), np.asarray(t.flops, dtype=np.int64)


def _mismatches(count) -> list[str]:  # type: ignore[no-untyped-def]
    """Codes where ``count(genotype) -> (params, flops)`` differs from the benchmark (all 6,561 networks)."""
    codes, params, flops = benchmark()
    bad = []
    for code, p, f in zip(codes, params, flops, strict=True):
        if count(SPACE.from_code(code)) != (p, f):
            bad.append(code)
    return bad


def _walker_counts(g: Genotype) -> tuple[int, int]:
    return walker.params(g, 10), walker.flops(g, 32, 10)


# ---- exactness ---------------------------------------------------------------------------------------
def test_benchmark_has_every_code() -> None:
    codes, _, _ = benchmark()
    assert sorted(codes) == list(ALL_CODES)


def test_walker_params_and_flops_equal_the_benchmark_for_all_6561() -> None:
    bad = _mismatches(_walker_counts)
    assert not bad, f"{len(bad)} networks differ, e.g. {bad[:5]}"
    assert all(_walker_counts(SPACE.from_code(c)) == (SPACE.params(SPACE.from_code(c)), SPACE.flops(SPACE.from_code(c)))
               for c in ("00000000", "22222222", "02012100"))


def test_built_parameter_count_equals_the_benchmark_for_all_6561(monkeypatch: pytest.MonkeyPatch) -> None:
    """``build_model`` assembles every network as always (walk, stem, blocks, head, classifier); what is shared
    is each distinct block (24: 8 positions x 3 choices, one Block per position and choice, so no network holds
    one module twice) and what is skipped is weight initialisation, which decides no shape. Shapes only: the
    meta device holds no memory. ``test_full_builds_agree`` builds some networks without any of this. 7-12 s
    on 2 cores (a plain build of all 6,561 takes minutes, mostly in weight initialisation)."""
    codes, params, _ = benchmark()
    block = model_mod.Block
    monkeypatch.setattr(model_mod, "Block", functools.cache(lambda layer, drop_path=0.0: block(layer, drop_path)))
    monkeypatch.setattr(model_mod, "_init_weights", lambda m: None)
    for cls in (nn.Conv2d, nn.BatchNorm2d, nn.Linear):
        monkeypatch.setattr(cls, "reset_parameters", lambda self: None)
    monkeypatch.setattr(nn.BatchNorm2d, "reset_running_stats", lambda self: None)
    with torch.device("meta"):
        built = [sum(p.numel() for p in SPACE.build(SPACE.from_code(c)).parameters()) for c in codes]
    bad = [c for c, n, p in zip(codes, built, params, strict=True) if n != p]
    assert not bad, f"{len(bad)} built networks differ, e.g. {bad[:5]}"


@pytest.mark.parametrize("code", ["00000000", "22222222", "02012100", "10101010", "21002012"])
def test_full_builds_agree(code: str) -> None:
    codes, params, flops = benchmark()
    i = codes.index(code)
    net = SPACE.build(SPACE.from_code(code))
    assert sum(p.numel() for p in net.parameters()) == params[i] == SPACE.params(SPACE.from_code(code))
    assert SPACE.flops(SPACE.from_code(code)) == flops[i]


def test_readme_examples() -> None:
    """The benchmark README's figures, independent of the data loader."""
    for code, p, f in (("02012100", 890_666, 47_327_744), ("00000000", 387_882, 7_713_280)):
        assert _walker_counts(SPACE.from_code(code)) == (p, f)


def test_projection_bn_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1x1 projection is conv (no bias) + BN: by hand, in the walker, in the built module -- and dropping
    its BN from the walker's count breaks exactness (the all-networks test would catch it)."""
    layer = Layer("id", 32, 32, 64, 1, 2)
    assert not layer.noop and layer.params() == 32 * 64 + 2 * 64 and layer.macs() == 16 * 16 * 32 * 64
    block = model_mod.Block(layer)
    assert sum(p.numel() for p in block.parameters()) == 32 * 64 + 2 * 64
    assert [type(m) for m in block.body] == [nn.Conv2d, nn.BatchNorm2d]  # no activation, no bias
    assert block.body[0].bias is None and block.body[0].stride == (2, 2) and not block.residual

    params = Layer.params
    monkeypatch.setattr(Layer, "params", lambda self: params(self) - (2 * self.out_c if self.kind == "id" and
                                                                      not self.noop else 0))
    bad = _mismatches(_walker_counts)  # every network with an identity at a stage's first layer
    assert len(bad) == 3 ** 8 - 2 ** 3 * 3 ** 5 == sum(1 for c in ALL_CODES if "0" in (c[0], c[2], c[5]))


def test_flops_match_torch_flop_counter() -> None:
    """``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add of the same convolutions and linears."""
    from torch.utils.flop_counter import FlopCounterMode

    for code in ("00000000", "22222222", "02012100", "12021201", "01201120"):
        g = SPACE.from_code(code)
        net = SPACE.build(g).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.randn(1, 3, 32, 32))
        assert counter.get_total_flops() == 2 * SPACE.flops(g), code


# ---- the id layer in a network -------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["00000000", "02012100"])
def test_id_layers_build_and_run(code: str) -> None:
    g = SPACE.from_code(code)
    net = SPACE.build(g).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    layers = list(walk(g, 32, 10))[1:-2]
    for layer, blk in zip(layers, net.blocks, strict=True):
        if layer.noop:
            x = torch.randn(1, layer.in_c, layer.size, layer.size)
            assert isinstance(blk.body, nn.Identity) and blk(x) is x
            assert layer.params() == layer.macs() == 0
        assert not blk.residual or layer.kind == "ir"


def test_residuals_only_on_stride1_mbconv() -> None:
    for layer in walk(SPACE.from_code("12112111"), 32, 10):
        if layer.kind == "ir":
            assert layer.residual == (layer.stride == 1 and layer.in_c == layer.out_c)
            assert layer.se_c == 0 and layer.activation == "relu"


def test_id_stage_in_any_genotype_walks_consistently() -> None:
    """Outside the benchmark: an id stage of several blocks, widening at stride 1, then an ir stage."""
    g = parse_genotype("swish,stem16,id_r3_s1_c24,ir_r2_k3_s2_e4_c24_se0.25,id_r1_s1_c24,head64")
    layers = list(walk(g, 64, 7))
    ids = [layer for layer in layers if layer.kind == "id"]
    assert [layer.noop for layer in ids] == [False, True, True, True]
    assert ids[0].key() == "id|64x64x16|o24|s1" and ids[0].macs() == 64 * 64 * 16 * 24
    net = model_mod.build_model(g, 7, input_size=64)
    assert sum(p.numel() for p in net.parameters()) == walker.params(g, 7)
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert [b.block for b in layers[1:-2]] == list(range(6))


# ---- codecs ------------------------------------------------------------------------------------------
def test_codecs_round_trip_for_all_6561() -> None:
    seen = set()
    for code in ALL_CODES:
        v = np.array([int(ch) for ch in code])
        g = SPACE.decode(v)
        assert SPACE.from_code(code) == g and SPACE.code(g) == code
        assert np.array_equal(SPACE.encode(g), v)
        s = g.to_string()
        assert parse_genotype(s) == g and SPACE.parse(s) == g and SPACE.parse(code) == g
        assert Genotype.from_json(g.to_json()) == g and SPACE.parse(g.to_json()) == g
        assert g.normalized() == g and len(g.stages) == 8
        seen.add(s)
    assert len(seen) == 6561


def test_canonical_code_matches_benchmark_equivalence() -> None:
    assert canonical_code("00000000") == "00000000"
    assert canonical_code("20102010") == "20120010"
    assert canonical_code("01001010") == "01010010"
    assert len({canonical_code(c) for c in ALL_CODES}) == 3969
    for code in ("01020102", "20120210", "00101001"):
        a, b = SPACE.from_code(code), SPACE.from_code(canonical_code(code))
        assert _walker_counts(a) == _walker_counts(b)


def test_space_interface() -> None:
    space = get_space("macro")
    assert isinstance(space, MacroSpace) and space == SPACE and hash(space) == hash(SPACE)
    assert space.kind == "macro" and space.name == "nas-bench-macro" and space.size() == 6561
    assert [n for n, _ in space.dims] == [f"l{i}" for i in range(1, 9)] and space.n_dims == 8
    assert (space.default_resolution, space.default_num_classes) == (32, 10)
    json.dumps(space.info())
    with pytest.raises(AttributeError):
        space.name = "x"  # type: ignore[misc]
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = space.sample(rng)
        for w in (v, space.mutate(v, rng), space.crossover(v, space.sample(rng), rng)):
            assert np.array_equal(space.encode(space.decode(w)), w)
    g = SPACE.from_code("02012100")
    assert g.to_string() == ("relu,stem32,id_r1_s2_c64,ir_r1_k5_s1_e6_c64,id_r1_s2_c128,ir_r1_k3_s1_e3_c128,"
                             "ir_r1_k5_s1_e6_c128,ir_r1_k3_s2_e3_c256,id_r1_s1_c256,id_r1_s1_c256,head1280")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0201210", "8 digits 0-2"),
        ("02012103", "8 digits 0-2"),
        ("020121000", "8 digits 0-2"),
        ("swish,stem32,id_r1_s2_c64,head1280", "in space"),
        ("relu,stem32,id_r1_s2_c64,head1280", "1 stages, the space has 8"),
        ("relu,stem16," + ",".join(SPACE.from_code("00000000").to_string().split(",")[2:]), "stem/head 16/1280"),
        ("relu,stem32,id_r1_s2_c64,ir_r1_k5_s1_e6_c64_noskip,id_r1_s2_c128,ir_r1_k3_s1_e3_c128,ir_r1_k5_s1_e6_c128,"
         "ir_r1_k3_s2_e3_c256,id_r1_s1_c256,id_r1_s1_c256,head1280", "stage 2 ir_r1_k5_s1_e6_c64_noskip is none"),
        ("relu,stem32,id_r2_s2_c64,id_r1_s2_c128,ir_r1_k3_s1_e3_c128,ir_r1_k5_s1_e6_c128,"
         "ir_r1_k3_s2_e3_c256,id_r1_s1_c256,id_r1_s1_c256,head1280", "7 stages"),
        ("relu,stem32,ir_r1_k3_s2_e6_c64,ir_r1_k5_s1_e6_c64,id_r1_s2_c128,ir_r1_k3_s1_e3_c128,ir_r1_k5_s1_e6_c128,"
         "ir_r1_k3_s2_e3_c256,id_r1_s1_c256,id_r1_s1_c256,head1280", "stage 1 ir_r1_k3_s2_e6_c64 is none of"),
    ],
)
def test_not_in_space(text: str, fragment: str) -> None:
    with pytest.raises(SpaceError) as ei:
        SPACE.encode(SPACE.parse(text))
    assert fragment in str(ei.value) and "\n" not in str(ei.value)


def test_noskip_where_no_residual_is_the_same_network() -> None:
    g = SPACE.from_code("11111111")
    stages = list(g.stages)
    stages[0] = Stage("ir", 1, 3, 2, 3, 64, skip=False)  # strided: no residual either way
    assert SPACE.code(Genotype("relu", 32, tuple(stages), 1280)) == "11111111"


def test_mbconv_space_refuses_id_stages() -> None:
    space = SearchSpace()
    g = space.decode(space.sample(np.random.default_rng(1)))
    stages = list(g.stages)
    stages[2] = Stage.identity(1, stages[2].stride, stages[2].channels)
    with pytest.raises(SpaceError):
        space.encode(Genotype(g.activation, g.stem, tuple(stages), g.head))
    assert space.stages[0].ops == ("ir", "ds")


# ---- the id token ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("id_r1_k3_s2_c64", "an id stage takes only r<N>, s<S> and c<C>, not 'k3'"),
        ("id_r1_s2_e3_c64", "not 'e3'"),
        ("id_r1_s2_c64_se0.25", "not 'se0.25'"),
        ("id_r1_s2_c64_noskip", "not 'noskip'"),
        ("id_r1_s2", "lacks c<channels>"),
        ("id_s2_c64", "lacks r<repeats>"),
        ("id_r1_s3_c64", "stride must be 1 or 2"),
        ("id_r1_s2_c64_c32", "given twice"),
        ("id_r1_s2_c64_x", "unknown option 'x'"),
        ("id_r0_s2_c64", "repeats must be 1 to 1000"),
        ("id", "lacks r<repeats>, s<stride>, c<channels>"),
    ],
)
def test_id_token_errors(token: str, fragment: str) -> None:
    with pytest.raises(GenotypeError) as ei:
        parse_genotype(f"relu,stem32,{token},head1280")
    assert fragment in str(ei.value) and "\n" not in str(ei.value)


def test_id_stage_python_and_json() -> None:
    s = Stage.identity(2, 1, 48)
    assert s == Stage("id", 2, 1, 1, 1, 48) and s.to_string() == "id_r2_s1_c48"
    for bad in ({"kernel": 3}, {"expansion": 2}, {"se_ratio": 0.25}, {"skip": False}):
        with pytest.raises(GenotypeError, match="id stages have no"):
            Stage(**{"op": "id", "repeats": 1, "kernel": 1, "stride": 1, "expansion": 1, "channels": 8, **bad})
    g = parse_genotype("relu,stem8,id_r2_s1_c48,head16")
    d = g.to_dict()
    assert d["stages"] == [{"op": "id", "repeats": 2, "stride": 1, "channels": 48}]
    d["stages"][0].update(kernel=1, expansion=1, se_ratio=0.0, skip=True)  # the neutral values: accepted
    assert Genotype.from_dict(d) == g
    d["stages"][0]["kernel"] = 3
    with pytest.raises(GenotypeError, match="stage 0: id stages have no kernel"):
        Genotype.from_dict(d)
    with pytest.raises(GenotypeError, match="missing key"):
        Genotype.from_dict({**g.to_dict(), "stages": [{"op": "id", "repeats": 1, "stride": 1}]})


_OPTS = st.one_of(
    st.sampled_from(["r1", "r2", "s1", "s2", "c8", "c64", "k3", "k1", "e1", "e6", "se0.25", "se0", "noskip", "",
                     "r", "s", "c", "se", "x", "r-1", "c0", "s3", "r1001", "c" + "9" * 30, "id", "ir", "r１", "c²"]),
    st.text(alphabet="rsckeid0123456789_.-+xn²１ \t", max_size=8),
)


@given(st.lists(_OPTS, max_size=7), st.text(max_size=12))
def test_hostile_id_tokens_parse_or_fail_in_one_line(opts: list[str], junk: str) -> None:
    for token in ("_".join(["id", *opts]), "id_" + junk):
        text = f"relu,stem32,{token},head1280"
        try:
            g = parse_genotype(text)
        except GenotypeError as e:
            msg = str(e)
            assert "\n" not in msg and len(msg) < 300
            continue
        st_ = g.stages[0]
        assert st_.op == "id" and (st_.kernel, st_.expansion, st_.se_ratio, st_.skip) == (1, 1, 0.0, True)
        assert parse_genotype(g.to_string()) == g and Genotype.from_json(g.to_json()) == g


# ---- latency tables ------------------------------------------------------------------------------------
def test_latency_keys_and_prices_of_id_layers() -> None:
    layers = list(space_layers(SPACE, 32, 10))
    keys = {layer.key() for layer in layers}
    assert len(keys) == len(layers) and not any(layer.noop for layer in layers)
    assert {"id|32x32x32|o64|s2", "id|16x16x64|o128|s2", "id|8x8x128|o256|s2"} <= keys
    for code in ALL_CODES[::37]:
        assert {x.key() for x in walk(SPACE.from_code(code), 32, 10) if not x.noop} <= keys
    entries = {k: {"ms": 1.0, "p10": 1.0, "p90": 1.0, "n": 1} for k in keys}
    table = LatencyTable(metadata={"resolutions": [32], "num_classes": 10}, entries=entries,
                         overhead={"32": Overhead(0.5, 1.0, 0.1, 8, 0.0)})
    g = SPACE.from_code("02012100")  # 3 ids, 2 of them plain identities (0 ms, not a layer)
    assert table.layer_sum(g, 32) == (9.0, 9)  # stem, 1 projection, 5 MBConv, head, classifier
    assert table.predict(g, 32) == pytest.approx(0.5 + 9.0 + 0.9)
    assert table.layer_sum(SPACE.from_code("00000000"), 32) == (6.0, 6)


def test_id_projections_are_measurable_and_plain_identities_are_not() -> None:
    ids = [layer for layer in space_layers(SPACE, 32, 10) if layer.kind == "id"]
    timings = time_layers(ids, Setup(), CpuTimer(min_repeats=2, max_repeats=3, target_s=0.0, warmup=1), 1)
    assert len(timings) == 3 and all(t.ms > 0 for t in timings)
    noop = next(x for x in walk(SPACE.from_code("00000000"), 32, 10) if x.noop)
    with pytest.raises(ValueError, match="plain identity"):
        layer_module(noop)
