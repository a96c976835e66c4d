import json

import pytest
from hypothesis import given

from conftest import genotypes
from hwnas.genotype import Genotype, GenotypeError, Stage, parse_genotype
from hwnas.references import REFERENCE_NAMES, reference

B0 = reference("efficientnet-b0").to_string()


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_strings_are_canonical(name: str) -> None:
    g = reference(name)
    assert parse_genotype(g.to_string()) == g
    assert Genotype.from_json(g.to_json()) == g
    assert g.normalized() == g


@given(genotypes())
def test_string_round_trip(g: Genotype) -> None:
    s = g.to_string()
    assert parse_genotype(s) == g
    assert parse_genotype(s).to_string() == s


@given(genotypes())
def test_json_round_trip(g: Genotype) -> None:
    text = g.to_json()
    assert Genotype.from_json(text) == g
    assert json.loads(Genotype.from_json(text).to_json()) == json.loads(text)


@given(genotypes())
def test_normalized_is_idempotent_and_keeps_skippable_stages(g: Genotype) -> None:
    n = g.normalized()
    assert n.normalized() == n
    for a, b in zip(g.stages, n.stages, strict=True):
        assert (a.skip == b.skip) or (not a.skip and b.skip)


def test_genotype_is_frozen_and_hashable() -> None:
    g = reference("mobilenetv2")
    with pytest.raises(AttributeError):
        g.stem = 16  # type: ignore[misc]
    assert len({g, reference("mobilenetv2"), reference("efficientnet-b0")}) == 2


def test_timm_style_tokens_parse() -> None:
    g = parse_genotype("relu,stem32,ds_r1_k3_s1_e1_c16_noskip,ir_s2_r2_c24_k3_e6_se0.25,head1280")
    assert g.stages[0] == Stage("ds", 1, 3, 1, 1, 16, 0.0, False)
    assert g.stages[1] == Stage("ir", 2, 3, 2, 6, 24, 0.25, True)
    assert g.to_string() == "relu,stem32,ds_r1_k3_s1_c16_noskip,ir_r2_k3_s2_e6_c24_se0.25,head1280"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty genotype"),
        ("swish,stem32,head1280", "needs"),
        ("tanh,stem32,ir_r1_k3_s1_e6_c16,head1280", "token 1 at character 1: unknown activation 'tanh'"),
        ("swish,stm32,ir_r1_k3_s1_e6_c16,head1280", "token 2 at character 7: expected stem<C>"),
        ("swish,stem0,ir_r1_k3_s1_e6_c16,head1280", "stem channels must be >= 1"),
        ("swish,stem32,xx_r1_k3_s1_e6_c16,head1280", "token 3 at character 14: unknown op 'xx'"),
        ("swish,stem32,ir_r1_k4_s1_e6_c16,head1280", "kernel must be odd"),
        ("swish,stem32,ir_r1_k3_s3_e6_c16,head1280", "stride must be 1 or 2"),
        ("swish,stem32,ir_r1_k3_s1_e6_c0,head1280", "channels must be 1 to 262144, got 0"),
        ("swish,stem32,ir_r1_k3_s1_e6_c" + "9" * 15 + ",head1280", "channels must be 1 to 262144, got 1e+15"),
        ("swish,stem32,ir_r1_k3_s1_e6_c16,head9999999", "head channels must be at most 262144, got 9999999"),
        ("swish,stem32,ir_r1_k65_s1_e6_c16,head1280", "kernel must be odd, 1 to 63, got 65"),
        ("swish,stem32," + "ir_r1_k3_s1_e6_c16," * 101 + "head1280", "a genotype has at most 100 stages, got 101"),
        ("swish,stem32,ir_r1_k3_s1_e6_c" + "9" * 5000 + ",head1280", "channels 999999999999... (5000 digits) is "
         "too large"),  # int() would refuse it with a traceback
        ("swish,stem32,ir_r1_k3_s1_e6_c16_" + "z" * 5000 + ",head1280", "unknown option 'zzzzz"),
        ("swish,stem32,ir_r1_k3_s1_e65_c16,head1280", "expansion must be at most 64, got 65"),
        ("swish,stem32,ir_r0_k3_s1_e6_c16,head1280", "repeats must be 1 to 1000, got 0"),
        ("swish,stem32,ir_r1000000000_k3_s1_e6_c16,head1280", "repeats must be 1 to 1000"),
        ("swish,stem32,ir_r1_k3_s1_e6_c16_se1.5,head1280", "se ratio must be in [0, 1]"),
        ("swish,stem32,ir_r1_k3_s1_e6_c16_se-1,head1280", "se ratio must be in [0, 1]"),
        ("swish,stem32,ir_r1_k3_s1_e6_c16_sex,head1280", "bad SE ratio 'sex'"),
        ("swish,stem32,ir_r1_k3_s1_e1_c16,head1280", "write ds_"),
        ("swish,stem32,ds_r1_k3_s1_e6_c16,head1280", "ds blocks have no expansion"),
        ("swish,stem32,ir_r1_k3_s1_c16,head1280", "lacks e<expansion>"),
        ("swish,stem32,ir_r1_k3_s1_e6_c16_r2,head1280", "given twice"),
        ("swish,stem32,ir_r1_k3_s1_e6_c16_zz,head1280", "unknown option 'zz'"),
        ("swish,stem32,ir_rx_k3_s1_e6_c16,head1280", "repeats needs a non-negative integer"),
        ("swish,stem32,ir_r1_k3_s1_e6_c16,,head1280", "token 4 at character 33: empty token"),
        ("swish,stem32,ir_r1_k3_s1_e6_c16,hd1280", "expected head<C>"),
    ],
)
def test_parse_errors_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(GenotypeError) as ei:
        parse_genotype(text)
    msg = str(ei.value)
    assert fragment in msg
    assert "\n" not in msg and len(msg) < 300  # a 5000-character token is cut, not echoed


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("head"), "lacks key(s): head"),
        (lambda d: d.update(extra=1), "unknown key(s): extra"),
        (lambda d: d["stages"][0].update(kernel=2), "stage 0: kernel must be odd"),
        (lambda d: d["stages"][1].update(op="conv"), "stage 1: unknown op 'conv'"),
        (lambda d: d["stages"][1].update(channels="24"), "channels must be an integer"),
        (lambda d: d["stages"][1].pop("kernel"), "stage 1: missing key(s): kernel"),
        (lambda d: d["stages"][1].update(skip="yes"), "skip must be a boolean"),
        (lambda d: d.update(stages={}), "'stages' must be a list"),
        (lambda d: d.update(activation="gelu"), "unknown activation 'gelu'"),
    ],
)
def test_json_errors(mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    d = reference("efficientnet-b0").to_dict()
    mutate(d)
    with pytest.raises(GenotypeError, match=None) as ei:
        Genotype.from_dict(d)
    assert fragment in str(ei.value)


def test_json_syntax_error_is_one_line() -> None:
    with pytest.raises(GenotypeError, match=r"invalid genotype JSON: .* line 1"):
        Genotype.from_json('{"activation": ')


def test_json_accepts_describe_output() -> None:
    g = reference("mnasnet-a1")
    assert Genotype.from_dict({"genotype": g.to_string(), "params": 1}) == g
    assert Genotype.from_dict({"genotype": g.to_dict()}) == g


def test_unknown_reference() -> None:
    with pytest.raises(GenotypeError, match="unknown reference 'resnet50'"):
        reference("resnet50")
    assert reference("EfficientNet_B0").to_string() == B0
