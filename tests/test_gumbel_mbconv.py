"""Differentiable search on an MBConv space: the exact expected cost under a factorized distribution (latency
table or FLOPs), the Gumbel search network over the elastic supernet, the loop, and ``hwnas search``."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from hwnas.cli import main
from hwnas.cli.latency import load_table
from hwnas.latency.table import TableError
from hwnas.search.differentiable import (
    DifferentiableSettings,
    MBConvCostModel,
    flops_cost_model,
    run_differentiable,
)
from hwnas.space import SearchSpace
from hwnas.spaces.nb201 import NB201Space
from hwnas.supernet.gumbel import MBConvGumbelNetwork

SPACE = SearchSpace()
TABLE = "cpu-epyc-2core-t1-fp32-bs1-r224"
SMALL = SearchSpace.from_dict({  # a small space for the networks: three stages, every dimension a choice
    "stem": 8, "head": 32, "width_factors": [0.75, 1.0], "depth_factors": [1.0, 1.5],
    "kernels": [3, 5], "expansions": [1, 3], "widths": [0.75, 1.0],
    "stages": [{"channels": 8, "stride": 1, "layers": [1, 2]}, {"channels": 16, "stride": 2, "layers": [1, 2]},
               {"channels": 24, "stride": 2, "layers": [1, 2]}]})
TINY = DifferentiableSettings(epochs=2, batch_size=16, width=0.5, max_train_images=64, max_val_images=64)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny networks run faster on one thread


def _data(n: int, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 10, n)


def _point(space: SearchSpace, x: np.ndarray) -> list[np.ndarray]:
    return [np.eye(len(opts))[i] for (_, opts), i in zip(space.dims, x, strict=True)]


@pytest.fixture(scope="module")
def latency_model() -> MBConvCostModel:
    return MBConvCostModel(SPACE, 224, 1000, load_table(TABLE))


# ---- the expected cost ----------------------------------------------------------------------------------
def test_a_point_mass_costs_its_network(latency_model: MBConvCostModel) -> None:
    """At one network the expectation is that network's cost: ``LatencyTable.predict`` (entries, calibration and
    layer count), or the walker's multiply-adds, at the deployment resolution."""
    table = load_table(TABLE)
    flops = MBConvCostModel(SPACE, 224, 1000)
    rng = np.random.default_rng(0)
    for _ in range(25):
        x = SPACE.sample(rng)
        g = SPACE.decode(x)
        assert latency_model.expected(_point(SPACE, x)) == pytest.approx(table.predict(g, 224), rel=1e-12)
        assert flops.expected(_point(SPACE, x)) == pytest.approx(SPACE.flops(g, 224, 1000) / 1e6, rel=1e-12)
    assert latency_model.name == f"latency:{TABLE}@224px" and latency_model.unit == "ms"
    assert latency_model.reference == pytest.approx(table.predict(SPACE.extreme(largest=True), 224))
    assert MBConvCostModel(SPACE, 32, 10).cost(SPACE.extreme(largest=True)) == SPACE.flops(
        SPACE.extreme(largest=True), 32, 10) / 1e6


def test_mixing_one_or_two_dimensions_is_the_weighted_mean_of_the_networks(latency_model: MBConvCostModel) -> None:
    """Exactness away from point masses: every dimension alone, and pairs that meet in one layer (a stage's width
    and the next stage's, the width factor and a stage's expansion, layers and the depth factor), mixed 0.3 / 0.7
    between two choices, cost the weighted mean of the two or four networks, as the linearity argument says."""
    rng = np.random.default_rng(1)
    names = [n for n, _ in SPACE.dims]
    x = SPACE.sample(rng)
    pairs = [("s2_width", "s3_width"), ("width_factor", "s4_expansion"), ("s5_layers", "depth_factor"),
             ("activation", "s7_width"), ("s3_op", "s3_expansion")]
    groups = [(n,) for n, opts in SPACE.dims if len(opts) > 1] + pairs
    for group in groups:
        probs = _point(SPACE, x)
        options = []
        for name in group:
            d = names.index(name)
            other = (int(x[d]) + 1 + int(rng.integers(len(SPACE.dims[d][1]) - 1))) % len(SPACE.dims[d][1])
            probs[d] = np.zeros(len(SPACE.dims[d][1]))
            probs[d][x[d]], probs[d][other] = 0.3, 0.7
            options.append((d, [(int(x[d]), 0.3), (other, 0.7)]))
        want = 0.0
        for combo in itertools.product(*[o for _, o in options]):
            y = x.copy()
            weight = 1.0
            for (d, _), (choice, p) in zip(options, combo, strict=True):
                y[d], weight = choice, weight * p
            want += weight * latency_model.cost(SPACE.decode(y))
        assert latency_model.expected(probs) == pytest.approx(want, rel=1e-12), group


def test_the_uniform_distribution_of_a_small_space_is_its_mean() -> None:
    """Every network of a small space enumerated: the expectation under any product distribution is the
    probability-weighted mean of its networks' multiply-adds."""
    space = SearchSpace.from_dict({
        "stem": 8, "head": 16, "width_factors": [0.75, 1.25], "depth_factors": [1.0, 1.5], "activations": ["relu"],
        "kernels": [3, 5], "expansions": [1, 3], "se_ratios": [0.0, 0.25], "widths": [1.0, 1.5],
        "stages": [{"channels": 8, "stride": 1, "layers": [1, 2]},
                   {"channels": 16, "stride": 2, "layers": [2], "ops": ["ir"], "kernels": [3], "se_ratios": [0.0],
                    "skips": [True]}]})
    model = MBConvCostModel(space, 32, 10)
    rng = np.random.default_rng(2)
    probs = [rng.dirichlet(np.ones(len(opts))) for _, opts in space.dims]
    total = 0.0
    for x in itertools.product(*[range(len(opts)) for _, opts in space.dims]):
        weight = float(np.prod([p[i] for p, i in zip(probs, x, strict=True)]))
        total += weight * space.flops(space.decode(np.array(x)), 32, 10) / 1e6
    assert model.expected(probs) == pytest.approx(total, rel=1e-10)
    t = model.expected_torch([torch.tensor(p, requires_grad=True) for p in probs])
    assert float(t.detach()) == pytest.approx(total, rel=1e-10)


def test_expected_torch_is_differentiable(latency_model: MBConvCostModel) -> None:
    alphas = [torch.zeros(len(opts), dtype=torch.float64, requires_grad=True) for _, opts in SPACE.dims]
    e = latency_model.expected_torch([torch.softmax(a, -1) for a in alphas])
    uniform = [np.full(len(o), 1 / len(o)) for _, o in SPACE.dims]
    assert float(e.detach()) == pytest.approx(latency_model.expected(uniform))
    e.backward()
    width = alphas[[n for n, _ in SPACE.dims].index("s6_width")].grad
    assert width is not None and float(width[-1]) > 0 > float(width[0])  # wider costs more
    kernel = alphas[[n for n, _ in SPACE.dims].index("s6_kernel")].grad
    assert kernel is not None and float(kernel[-1]) > float(kernel[0])


def test_cost_model_checks() -> None:
    with pytest.raises(TableError, match="not 32"):
        MBConvCostModel(SPACE, 32, 10, load_table(TABLE))
    with pytest.raises(TableError, match="measured for space"):
        MBConvCostModel(SMALL, 224, 1000, load_table(TABLE))
    with pytest.raises(ValueError, match="one probability vector per dimension"):
        MBConvCostModel(SMALL, 32, 10).expected([np.ones(2)])


# ---- the search network ---------------------------------------------------------------------------------
def test_the_network_runs_the_sampled_architecture() -> None:
    """A forward samples one network of the space (``last_sample``, its choice vector), runs exactly it (the
    straight-through gates are 1 in value) and sends a gradient to every entry of every alpha."""
    torch.manual_seed(0)
    net = MBConvGumbelNetwork(SMALL, 10, 8, width=0.5, generator=torch.Generator().manual_seed(1))
    assert [a.numel() for a in net.alpha] == [len(opts) for _, opts in SMALL.dims]
    assert {id(p) for p in net.weight_parameters()}.isdisjoint({id(a) for a in net.arch_parameters()})
    net.eval()
    x = torch.randn(4, 3, 8, 8)
    out = net(x)
    arch = SMALL.decode(net.last_sample)
    assert net.supernet.arch == arch and net.supernet.stage_hook is None
    with torch.no_grad():
        assert torch.allclose(out, net.supernet(x), atol=1e-6)
    out.sum().backward()
    for a in net.arch_parameters():
        assert a.grad is not None and torch.isfinite(a.grad).all()
        if a.numel() > 1:
            assert (a.grad != 0).all()
    samples = set()
    for _ in range(20):
        net(x)
        samples.add(tuple(net.last_sample))
    assert len(samples) > 10  # near-uniform alpha: mostly new networks


def test_samples_follow_alpha_and_derive_is_the_argmax() -> None:
    torch.manual_seed(0)
    net = MBConvGumbelNetwork(SMALL, 10, 8, width=0.5, generator=torch.Generator().manual_seed(2))
    rng = np.random.default_rng(3)
    want = SMALL.sample(rng)
    with torch.no_grad():
        for a, k in zip(net.alpha, want, strict=True):
            a.zero_()
            a[int(k)] = 8.0
    assert net.derive() == SMALL.decode(want)
    net.tau = 0.5
    hits = 0
    for _ in range(30):
        _, index = net.gumbel_sample()
        hits += index == [int(k) for k in want]
    assert hits >= 25  # exp(8) against one: the argmax nearly always


# ---- the loop -------------------------------------------------------------------------------------------
def test_run_is_deterministic_and_records_per_dimension() -> None:
    cost = MBConvCostModel(SMALL, 224, 1000)
    s = dataclasses.replace(TINY, cost_coef=0.5)
    a = run_differentiable(SMALL, _data(80), _data(80, seed=1), s, cost, seed=5)
    b = run_differentiable(SMALL, _data(80), _data(80, seed=1), s, cost, seed=5)
    assert a.alpha == b.alpha and a.arch == b.arch and a.space == "mbconv"
    assert len(a.alpha_history) == 2 and [len(p) for p in a.alpha_history[0]] == [len(o) for _, o in SMALL.dims]
    assert all(sum(p) == pytest.approx(1) for p in a.probabilities)
    assert a.expected_cost == pytest.approx(cost.expected(a.probabilities))
    assert a.derived_cost == pytest.approx(cost.cost(a.arch)) and a.arch in [SMALL.decode(SMALL.encode(a.arch))]
    assert a.to_dict()["arch"] == a.arch.to_string() and a.steps == 2 * 4


def test_the_latency_term_moves_the_distribution_to_fast_networks(latency_model: MBConvCostModel) -> None:
    base = dataclasses.replace(TINY, epochs=3, alpha_lr=0.05, width=0.25)
    free = run_differentiable(SPACE, _data(64), _data(64, seed=1), base, latency_model, seed=0)
    paid = run_differentiable(SPACE, _data(64), _data(64, seed=1), dataclasses.replace(base, cost_coef=5.0),
                              latency_model, seed=0)
    assert paid.expected_cost is not None and free.expected_cost is not None
    assert paid.expected_cost < 0.8 * free.expected_cost  # ms at 224 px on the table's CPU
    assert paid.history[-1]["expected_cost"] < paid.history[0]["expected_cost"]
    assert latency_model.cost(paid.arch) < latency_model.cost(free.arch)


@pytest.mark.parametrize(("space", "settings", "cost", "match"), [
    (SMALL, dataclasses.replace(TINY, method="darts"), None, "gdas"),
    (SMALL, dataclasses.replace(TINY, C=8), None, "sized by width"),
    (NB201Space(), dataclasses.replace(TINY, width=0.5, C=4, N=1), None, "sized by C and N"),
    (SMALL, TINY, "nb201-flops", "another space"),
    (NB201Space(), dataclasses.replace(TINY, width=1.0), "small-flops", "MBConv"),
])
def test_run_checks(space: object, settings: DifferentiableSettings, cost: str | None, match: str) -> None:
    model = {"nb201-flops": flops_cost_model(), "small-flops": MBConvCostModel(SMALL, 32, 10), None: None}[cost]
    with pytest.raises(ValueError, match=match):
        run_differentiable(space, _data(8), _data(8), settings, model)


# ---- hwnas search --strategy gdas --space mbconv ----------------------------------------------------------
RECIPE = """[search]
strategy = "gdas"
[profile.cpu]
trials = 1
epochs = 0.01
batch_size = 64
[differentiable]
epochs = 2
batch_size = 32
width = 0.25
max_train_images = 64
max_val_images = 64
alpha_lr = 0.05
{extra}
"""


def test_search_derives_mbconv_networks_with_the_latency_table(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "g.toml"
    recipe.write_text(RECIPE.format(extra="cost_coef = 2.0"))
    argv = ["search", "--recipe", str(recipe), "--space", "mbconv", "--table", TABLE, "--objectives",
            "acc,latency", "--run-dir", str(tmp_path), "--study-name", "m"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "gdas run 0 (seed 0): 2 epochs, width 0.25, 64 + 64 images" in err and f"latency:{TABLE}@224px" in err
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp_path / 'm.db'}")
    table = load_table(TABLE)
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 1
    for t in trials:
        rec = t.user_attrs["differentiable"]
        assert rec["arch"] == t.user_attrs["genotype"] and rec["space"] == "mbconv"
        assert len(rec["alpha_history"][0]) == len(SPACE.dims)
        assert rec["derived_cost"] == pytest.approx(t.user_attrs["latency_ms"])
        assert t.user_attrs["latency_ms"] == pytest.approx(table.predict(SPACE.parse(rec["arch"]), 224))
    assert (tmp_path / "m" / "alphas.png").stat().st_size > 0
    assert main([*argv, "--storage", f"sqlite:///{tmp_path / 'm.db'}", "--resume", "--trials", "2"]) == 0
    err = capsys.readouterr().err
    assert "run 1 (seed 1)" in err and "run 0 (seed" not in err  # the finished run is not repeated


@pytest.mark.parametrize(("extra", "args", "match"), [
    ("", ["--strategy", "darts"], "on an MBConv space the differentiable search is --strategy gdas"),
    ("C = 4", [], "sized by width"),
    ("", ["--space", "darts"], "not the darts space"),
])
def test_search_refuses_in_one_line(extra: str, args: list[str], match: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "g.toml"
    recipe.write_text(RECIPE.format(extra=extra))
    argv = ["search", "--recipe", str(recipe), "--space", "mbconv", "--run-dir", str(tmp_path), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("hwnas") and match in err[-1], err
    assert not list(tmp_path.glob("*.db"))


def test_the_cost_model_follows_the_problem() -> None:
    """Latency (the problem's MBConv table, exact) when latency is an objective or budget, else FLOPs at the
    problem's resolution; the target form's target defaults to that budget, in the model's unit."""
    from hwnas.cli.differentiable import cost_model_of
    from hwnas.search.problem import Problem

    target = dataclasses.replace(TINY, cost_form="target")
    flops, s = cost_model_of(Problem(SPACE, ("acc", "flops"), budgets={"flops": 2e8}, num_classes=10), target)
    assert flops.name == "flops@224px" and s.cost_target == 200.0
    assert flops.cost(SPACE.extreme(largest=False)) == SPACE.flops(SPACE.extreme(largest=False), 224, 10) / 1e6
    problem = Problem(SPACE, ("acc", "latency"), budgets={"latency": 5.0}, table=load_table(TABLE))
    latency, s = cost_model_of(problem, target)
    assert latency.name == f"latency:{TABLE}@224px" and s.cost_target == 5.0


@pytest.mark.gpu
def test_run_on_cuda_matches_the_cpu_s_shapes_and_prices() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cost = MBConvCostModel(SMALL, 224, 1000)
    s = dataclasses.replace(TINY, cost_coef=0.5)
    r = run_differentiable(SMALL, _data(80), _data(80, seed=1), s, cost, seed=5, device="cuda")
    assert r.steps == 2 * 4 and r.space == "mbconv" and r.arch in [SMALL.decode(SMALL.encode(r.arch))]
    assert r.expected_cost == pytest.approx(cost.expected(r.probabilities))
    assert r.derived_cost == pytest.approx(cost.cost(r.arch))
