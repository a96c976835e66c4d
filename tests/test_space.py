import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwnas.references import REFERENCE_NAMES, reference
from hwnas.space import SearchSpace, SpaceError, StageChoices, make_divisible
from hwnas.walker import flops

ROOT = Path(__file__).resolve().parents[1]
SPACE = SearchSpace.default()
seeds = st.integers(0, 2**32 - 1)


def test_shipped_toml_is_the_default_space() -> None:
    recipe = tomllib.loads((ROOT / "search" / "space-mnasnet-b0.toml").read_text())
    assert SearchSpace.from_dict(recipe["space"]) == SPACE


def test_dict_round_trip() -> None:
    assert SearchSpace.from_dict(SPACE.to_dict()) == SPACE


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_references_are_points_of_the_space(name: str) -> None:
    g = reference(name)
    v = SPACE.encode(g)
    assert SPACE.decode(v) == g
    assert SPACE.to_choices(v)["width_factor"] == 1.0


def test_dimensions_and_size() -> None:
    assert SPACE.n_dims == 3 + 7 * 7
    assert SPACE.dims[3] == ("s1_op", ("ir", "ds"))
    expected = 3 * 3 * 3 * np.prod([2 * 3 * 4 * 2 * 2 * len(s.layers) * 6 for s in SPACE.stages], dtype=float)
    assert SPACE.size() == pytest.approx(expected)


@given(seeds)
def test_sampling_is_seeded_and_valid(seed: int) -> None:
    a = SPACE.sample(np.random.default_rng(seed))
    b = SPACE.sample(np.random.default_rng(seed))
    assert np.array_equal(a, b)
    assert np.array_equal(SPACE.validate(a), a)
    g = SPACE.decode(a)
    assert len(g.stages) == 7 and g == g.normalized()


@given(seeds)
def test_choices_round_trip_and_encode_inverts_decode(seed: int) -> None:
    v = SPACE.sample(np.random.default_rng(seed))
    c = SPACE.to_choices(v)
    assert np.array_equal(SPACE.from_choices(c), v)
    g = SPACE.decode(v)
    assert SPACE.decode(SPACE.encode(g)) == g


@given(seeds, st.floats(0.0, 1.0))
def test_mutate_changes_something_stays_in_bounds(seed: int, prob: float) -> None:
    rng = np.random.default_rng(seed)
    v = SPACE.sample(rng)
    m = SPACE.mutate(v, rng, prob)
    assert not np.array_equal(m, v)
    assert np.all((m >= 0) & (m <= SPACE.upper_bounds))
    assert np.array_equal(SPACE.mutate(v, np.random.default_rng(seed), prob),
                          SPACE.mutate(v, np.random.default_rng(seed), prob))


def test_mutate_rate_default_is_about_one_gene() -> None:
    rng = np.random.default_rng(0)
    v = SPACE.sample(rng)
    changed = [int((SPACE.mutate(v, rng) != v).sum()) for _ in range(2000)]
    assert 1.3 < np.mean(changed) < 1.7  # 1/n per gene plus the forced one when none flips (~1 + e^-1)


@given(seeds)
def test_crossover_takes_each_gene_from_a_parent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    c = SPACE.crossover(a, b, rng)
    assert np.all((c == a) | (c == b))


def test_sample_where_is_bounded() -> None:
    rng = np.random.default_rng(0)
    v = SPACE.sample_where(rng, lambda g: flops(g, 224) <= 400e6)
    assert flops(SPACE.decode(v), 224) <= 400e6
    with pytest.raises(SpaceError, match="no acceptable architecture in 50 samples"):
        SPACE.sample_where(rng, lambda g: False, max_attempts=50)


def test_make_divisible() -> None:
    assert make_divisible(32 * 1.1) == 32 and make_divisible(16 * 0.25) == 8 and make_divisible(99) == 96
    assert make_divisible(112 * 0.875) == 96 and make_divisible(192 * 0.8125) == 160
    assert make_divisible(20, 8) == 24  # nearest multiple, never below 90 %


@pytest.mark.parametrize(
    ("vector", "fragment"),
    [([0] * 3, "has 3 entries"), ([0] * 51 + [9], "s7_width=9 out of range 0..5"), ([0.5] * 52, "integers")],
)
def test_validate_errors(vector: list[float], fragment: str) -> None:
    with pytest.raises(SpaceError, match=None) as ei:
        SPACE.validate(vector)
    assert fragment in str(ei.value)


def test_encode_errors() -> None:
    g = reference("efficientnet-b0")
    small = SearchSpace(stages=tuple(StageChoices(s.channels, s.stride, s.layers, kernels=(3,)) for s in SPACE.stages))
    with pytest.raises(SpaceError, match="stage 3 kernel 5 not available"):
        small.encode(g)
    with pytest.raises(SpaceError, match="activation 'swish' is not in the space"):
        SearchSpace(activations=("relu",)).encode(g)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"bogus": 1}, "unknown key(s) in [space]: bogus"),
        ({"kernels": [4]}, "kernels must be odd"),
        ({"activations": ["gelu"]}, "activations must be among"),
        ({"width_factors": []}, "width_factors must be a non-empty list"),
        ({"stages": []}, "non-empty list of tables"),
        ({"stages": [{"channels": 16, "stride": 3, "layers": [1]}]}, "stage 1: stride must be 1 or 2"),
        ({"stages": [{"channels": 16, "layers": [1]}]}, "stage 1: missing key(s): stride"),
        ({"stages": [{"channels": 16, "stride": 1, "layers": [1], "colour": 1}]}, "unknown key(s): colour"),
        ({"stages": [{"channels": 16, "stride": 1, "layers": [0]}]}, "layers must be integers from 1 to 1000"),
        ({"stages": [{"channels": 16, "stride": 1, "layers": [10**330]}]}, "layers must be integers from 1 to 1000"),
        ({"stages": [{"channels": 10**330, "stride": 1, "layers": [1]}]}, "channels must be an integer from 1 to"),
        ({"stages": [{"channels": 16, "stride": True, "layers": [1]}]}, "stage 1: stride must be 1 or 2"),
        ({"kernels": [True]}, "kernels must be odd positive integers"),
        ({"expansions": [True, 6]}, "expansions must be integers >= 1"),
        ({"activations": ["relu", "relu"]}, "duplicate activations ['relu', 'relu']"),
        ({"width_factors": [1, 1.0]}, "duplicate width_factors [1, 1.0]"),
        ({"depth_factors": [1e-300]}, "stage 1: layers x depth_factors can be 1e-300, which rounds to no block"),
        ({"se_ratios": [0.0, 2.0]}, "se_ratios must lie in [0, 1]"),
        ({"ops": ["ir"], "expansions": [1]}, "some expansion must be > 1"),
        ({"kernels": [3, 3]}, "duplicate kernel choices"),
        ({"kernels": [3, 65]}, "stage 1: kernels must be at most 63"),
        ({"expansions": [6, 100]}, "stage 1: expansions must be at most 64"),
        ({"widths": [1.0, float("inf")]}, "stage 1: widths must be positive finite numbers"),
        ({"depth_factors": [float("nan")]}, "depth_factors must be positive finite numbers"),
        ({"depth_factors": [1e300]}, "stage 1: layers x depth_factors reach 2e+300 repeats, more than 1000"),
        ({"width_factors": [1e300]}, "stage 1: channels x widths x width_factors reach 2e+301, more than 262144"),
        ({"head": 10**9}, "space head must be an integer from 1 to 262144"),
        ({"head": 250000}, "space head x width_factors reaches 312504 channels, more than 262144"),
        ({"divisor": 5, "width_factors": [1.0], "stages": [{"channels": 262144, "stride": 1, "layers": [1],
                                                           "widths": [1.0]}]},
         "stage 1: channels x widths x width_factors reach 262145, more than 262144"),  # as make_divisible builds it
        ({"divisor": 10**6}, "space divisor must be an integer from 1 to 262144"),
    ],
)
def test_space_definition_errors(table: dict, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(SpaceError) as ei:
        SearchSpace.from_dict(table)
    assert fragment in str(ei.value)


def test_shared_stage_keys_apply_to_default_stages() -> None:
    s = SearchSpace.from_dict({"kernels": [3, 5], "width_factors": [1.0]})
    assert all(st.kernels == (3, 5) for st in s.stages) and s.width_factors == (1.0,)
    one = SearchSpace.from_dict({"stages": [{"channels": 16, "stride": 1, "layers": [1], "ops": ["ds"]}]})
    assert one.n_dims == 3 + 7 and one.stages[0].ops == ("ds",)
    assert one.decode([0] * 10).to_string() == "relu,stem24,ds_r1_k3_s1_c16,head960"


def test_strategy_modules_do_not_import_torch() -> None:
    code = ("import sys, hwnas, hwnas.space, hwnas.walker, hwnas.cli, hwnas.latency.table, hwnas.search.problem, "
            "hwnas.search.strategies, hwnas.search.run, hwnas.search.report, hwnas.scaling, hwnas.units; "
            "assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
