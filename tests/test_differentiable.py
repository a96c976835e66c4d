"""Differentiable search (DARTS, GDAS) on NB201's cell space: the search network, the cost models, the loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hwnas.latency.tabular import BenchmarkLatency
from hwnas.search.differentiable import (
    CostModel,
    DifferentiableSettings,
    flops_cost_model,
    latency_cost_model,
    run_differentiable,
)
from hwnas.spaces.nb201 import EDGES, NB201_OPS, CellArch, NB201Space
from hwnas.supernet.darts import DartsNetwork

SPACE = NB201Space()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny networks run faster on one thread


def _data(n: int, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 10, n)


TINY = DifferentiableSettings(epochs=2, batch_size=16, C=4, N=1, max_train_images=64, max_val_images=64)


# ---- the network ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["darts", "gdas"])
def test_network_shapes_and_derive(mode: str) -> None:
    torch.manual_seed(0)
    net = DartsNetwork(C=4, N=2, num_classes=7, mode=mode)
    assert net.alpha.shape == (len(EDGES), len(NB201_OPS))
    assert net(torch.randn(3, 3, 16, 16)).shape == (3, 7)
    assert len(net.cells) == 3 * 2 + 2
    with torch.no_grad():
        net.alpha.zero_()
        for e, o in enumerate([3, 1, 0, 2, 4, 3]):
            net.alpha[e, o] = 1.0
    assert net.derive() == CellArch(("nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1", "avg_pool_3x3",
                                     "nor_conv_3x3"))
    assert net.derive() in [SPACE.decode(SPACE.encode(net.derive()))]
    assert {id(p) for p in net.weight_parameters()}.isdisjoint({id(net.alpha)})
    with pytest.raises(ValueError, match="unknown mode"):
        DartsNetwork(mode="enas")


def test_gdas_hard_one_hot_straight_through() -> None:
    torch.manual_seed(0)
    net = DartsNetwork(C=4, N=1, mode="gdas", generator=torch.Generator().manual_seed(3))
    net.tau = 5.0
    hardwts, index = net.gumbel_sample()
    assert torch.equal(hardwts.detach().sum(-1), torch.ones(len(EDGES)))
    assert sorted(torch.unique(hardwts.detach()).tolist()) == [0.0, 1.0]
    assert hardwts.detach().argmax(-1).tolist() == index
    net(torch.randn(4, 3, 8, 8)).pow(2).mean().backward()
    g = net.alpha.grad
    assert g is not None and torch.isfinite(g).all() and (g.abs() > 0).all()  # every op of every edge
    # only the sampled op is computed: the other ops' conv weights get no gradient
    edge = net.cells[0].edges[0]
    conv3 = edge.ops[NB201_OPS.index("nor_conv_3x3")].op[1].weight
    assert (conv3.grad is not None) == (net.last_sample[0] == NB201_OPS.index("nor_conv_3x3"))


def test_gdas_samples_follow_alpha() -> None:
    torch.manual_seed(0)
    net = DartsNetwork(C=2, N=1, mode="gdas", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.alpha.copy_(torch.log(torch.tensor([0.05, 0.05, 0.1, 0.6, 0.2])).expand(6, 5))
    counts = np.zeros(5)
    for _ in range(400):
        counts[net.gumbel_sample()[1][0]] += 1
    assert abs(counts[3] / 400 - 0.6) < 0.08  # argmax(log p + Gumbel) ~ p, whatever tau


def test_darts_mixture_is_weighted_sum() -> None:
    torch.manual_seed(0)
    net = DartsNetwork(C=4, N=1, mode="darts")
    edge = net.cells[0].edges[0]
    x = torch.randn(2, 4, 8, 8)
    w = torch.softmax(torch.randn(5), 0)
    ref = sum(w[o] * edge.ops[o](x) for o in range(5))
    assert torch.allclose(edge.forward_darts(x, w), ref)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0


# ---- cost models ----------------------------------------------------------------------------------------
def test_flops_cost_model_is_exact() -> None:
    m = flops_cost_model(SPACE)
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = SPACE.decode(rng.integers(0, 5, 6))
        assert m.cost(arch) * 1e6 == pytest.approx(SPACE.flops(arch), rel=1e-12)
    conv3 = CellArch(("nor_conv_3x3",) * 6)
    assert m.reference == pytest.approx(SPACE.flops(conv3) / 1e6)
    onehot = np.eye(5)[SPACE.encode(conv3)]
    assert m.expected(onehot) == pytest.approx(m.cost(conv3))
    assert m.expected(np.full((6, 5), 0.2)) == pytest.approx(m.base + m.per_op.sum() / 5)


# R^2 of the additive fit, measured on the published tables: pixel3 0.894, raspi4 0.905, titanxp_1 0.969,
# fpga 1.000 (the FPGA and Eyeriss tables are additive), pixel2 0.797 (the lowest of the 27 settings)
@pytest.mark.parametrize(("device", "min_r2"), [("pixel3", 0.88), ("raspi4", 0.89), ("titanxp_1", 0.96),
                                                ("fpga", 0.999)])
def test_latency_cost_model_fit(device: str, min_r2: float) -> None:
    m = latency_cost_model(device)
    assert m.r2 is not None and m.r2 > min_r2
    table = BenchmarkLatency(device)
    rng = np.random.default_rng(1)
    archs = [SPACE.decode(rng.integers(0, 5, 6)) for _ in range(200)]
    err = np.mean([abs(m.cost(a) - table.predict(a)) for a in archs])
    assert err < 3 * m.mae + 1e-9
    assert m.per_op[:, 0].tolist() == [0.0] * 6 and m.unit == "ms"


def test_cost_model_checks() -> None:
    with pytest.raises(ValueError, match="per_op"):
        CostModel(name="x", unit="ms", base=1.0, per_op=np.zeros((6, 4)))
    with pytest.raises(ValueError, match="probabilities"):
        flops_cost_model().expected(np.zeros((5, 6)))


# ---- settings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "match"), [
    ({"method": "enas"}, "unknown method"), ({"epochs": 0}, "epochs"), ({"C": 2.0}, "C must"),
    ({"lr": -1.0}, "lr must"), ({"cost_coef": -0.1}, "cost_coef"), ({"cost_form": "exp"}, "cost form"),
    ({"cost_form": "target"}, "cost_target"), ({"tau_min": 20.0}, "tau_min"), ({"lr_min": 1.0}, "lr_min"),
    ({"max_train_images": 0}, "max_train_images"), ({"momentum": 1.0}, "momentum"),
])
def test_settings_check(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        dataclasses.replace(DifferentiableSettings(), **change).check()
    assert "\n" not in str(info.value)


def test_settings_defaults_and_dict() -> None:
    s = DifferentiableSettings().check()
    assert (s.lr, s.lr_min, s.weight_decay, s.alpha_lr, s.tau_max, s.tau_min) == (0.025, 0.001, 5e-4, 3e-4, 10, 0.1)
    assert DifferentiableSettings(**s.to_dict()) == s
    with pytest.raises(TypeError):
        DifferentiableSettings("darts")  # type: ignore[misc]


# ---- the search -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["darts", "gdas"])
def test_run_deterministic(method: str) -> None:
    s = dataclasses.replace(TINY, method=method)
    cost = flops_cost_model()
    a = run_differentiable(SPACE, _data(80), _data(80, seed=1), s, cost, seed=5)
    b = run_differentiable(SPACE, _data(80), _data(80, seed=1), s, cost, seed=5)
    assert a.alpha == b.alpha and a.arch == b.arch and a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    assert len(a.alpha_history) == 2 and np.array(a.alpha_history).shape == (2, 6, 5)
    assert np.allclose(np.array(a.probabilities).sum(1), 1)
    assert a.steps == 2 * 4 and not a.stopped
    assert a.expected_cost == pytest.approx(cost.expected(a.probabilities))
    assert a.derived_cost == pytest.approx(cost.cost(a.arch))
    c = run_differentiable(SPACE, _data(80), _data(80, seed=1), s, cost, seed=6)
    assert c.alpha != a.alpha
    if method == "gdas":
        assert [h["tau"] for h in a.history] == pytest.approx([10.0, 0.1])
    assert a.to_dict()["arch"] == a.arch.to_string()


@pytest.mark.parametrize(("method", "form"), [("darts", "linear"), ("gdas", "linear"), ("gdas", "target")])
def test_cost_term_moves_alpha_to_cheap_ops(method: str, form: str) -> None:
    cost = latency_cost_model("pixel3")
    base = dataclasses.replace(TINY, method=method, epochs=3 if method == "gdas" else 2, alpha_lr=0.05)
    heavy = dataclasses.replace(base, cost_coef=5.0, cost_form=form,
                                cost_target=0.15 * cost.reference if form == "target" else None)
    free = run_differentiable(SPACE, _data(80), _data(80, seed=1), base, cost, seed=0)
    paid = run_differentiable(SPACE, _data(80), _data(80, seed=1), heavy, cost, seed=0)
    assert paid.expected_cost is not None and free.expected_cost is not None
    assert paid.expected_cost < free.expected_cost - 2.0  # ms on the deployed network
    assert paid.history[-1]["expected_cost"] < paid.history[0]["expected_cost"]
    assert cost.cost(paid.arch) < cost.cost(free.arch)


def test_should_stop_and_progress() -> None:
    calls: list[int] = []
    seen: list[dict] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    r = run_differentiable(SPACE, _data(80), _data(80, seed=1), TINY, None, seed=0, progress=seen.append,
                           should_stop=stop)
    assert r.stopped and r.steps == 3 and len(r.history) == 1 and r.history[0]["steps"] == 3
    assert seen == r.history and r.expected_cost is None
    assert isinstance(r.arch, CellArch)


def test_run_checks() -> None:
    with pytest.raises(ValueError, match="cost model"):
        run_differentiable(SPACE, _data(8), _data(8), dataclasses.replace(TINY, cost_coef=1.0), None)
    with pytest.raises(ValueError, match="multiple of 4"):
        run_differentiable(SPACE, _data(8, size=10), _data(8, size=10), TINY)
    with pytest.raises(ValueError, match="nb201"):
        run_differentiable(object(), _data(8), _data(8), TINY)


def test_search_layer_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, hwnas.search.differentiable; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
