"""Zero-cost proxies (hwnas.evaluators.zero_cost): each against an independent computation of its definition
where one exists, the shared passes against the proxies computed alone, and `hwnas score` / a zero-cost search
end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_usage_error, hwnas, hwnas_here
from hwnas.evaluators import zero_cost as zc
from hwnas.spaces import get_space

NB201 = get_space("nb201")
CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
POOL = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"
MIXED = "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
DEAD = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # the cells' output ignores their input
BATCH = 8


def images(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.fixture(scope="module")
def scorer() -> zc.ZeroCostScorer:
    return zc.ZeroCostScorer(NB201, *images(), num_classes=10, batch_size=BATCH, seed=0)


def test_parse_proxies() -> None:
    assert zc.parse_proxies("zico, synflow,zico") == ("zico", "synflow")
    assert zc.parse_proxies("all") == zc.PROXIES
    with pytest.raises(zc.ZeroCostError, match="unknown zero-cost proxy 'zenn'"):
        zc.parse_proxies("zico,zenn")
    with pytest.raises(zc.ZeroCostError, match="no proxy"):
        zc.parse_proxies(" , ")


def test_scores_repeat_and_the_shared_passes_change_nothing(scorer: zc.ZeroCostScorer) -> None:
    arch = NB201.parse(MIXED)
    together = scorer.score(arch, zc.PROXIES)
    assert list(together) == list(zc.PROXIES)
    assert all(math.isfinite(v) for v in together.values()), together
    assert scorer.score(arch, zc.PROXIES) == together
    for p in zc.PROXIES:  # each alone, on its own freshly built network
        assert scorer.score(arch, (p,))[p] == pytest.approx(together[p], rel=1e-5, abs=1e-9), p
    assert together["flops"] == NB201.flops(arch, 32, 10) and together["params"] == NB201.params(arch, 10)


def _masked_saliency(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SNIP as Lee et al. define it: |dL/dc| of a multiplicative mask c = 1 on every conv/linear weight."""
    from torch.nn.utils import parametrize

    class Mask(nn.Module):
        def __init__(self, shape: torch.Size) -> None:
            super().__init__()
            self.c = nn.Parameter(torch.ones(shape))

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * self.c

    mods = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for m in mods:
        parametrize.register_parametrization(m, "weight", Mask(m.weight.shape))
    nn.functional.cross_entropy(net(x), y).backward()
    return float(sum(m.parametrizations.weight[0].c.grad.abs().sum() for m in mods))


def test_snip_is_the_gradient_of_a_weight_mask(scorer: zc.ZeroCostScorer) -> None:
    arch = NB201.parse(MIXED)
    want = _masked_saliency(scorer.build(arch), scorer.x[:BATCH], scorer.y[:BATCH])
    assert scorer.score(arch, ("snip",))["snip"] == pytest.approx(want, rel=1e-4)


def test_grasp_is_minus_theta_times_the_hessian_gradient_product() -> None:
    """-theta . (H g) against a central finite difference of the gradient along g, in float64."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).double()
    x, y = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    ws = [net[0].weight, net[4].weight]

    def grads() -> list[torch.Tensor]:
        return list(torch.autograd.grad(nn.functional.cross_entropy(net(x), y), ws))

    g = [t.detach().clone() for t in grads()]
    eps, saved = 1e-5, [w.detach().clone() for w in ws]
    with torch.no_grad():
        for w, s, d in zip(ws, saved, g, strict=True):
            w.copy_(s + eps * d)
    up = grads()
    with torch.no_grad():
        for w, s, d in zip(ws, saved, g, strict=True):
            w.copy_(s - eps * d)
    down = grads()
    with torch.no_grad():
        for w, s in zip(ws, saved, strict=True):
            w.copy_(s)
    want = float(sum((-s * (u - d) / (2 * eps)).sum() for s, u, d in zip(saved, up, down, strict=True)))
    assert zc.grasp(net, x, y, 6, 0) == pytest.approx(want, rel=1e-4)


def test_zico_follows_its_definition(scorer: zc.ZeroCostScorer) -> None:
    """Sum over layers of log(sum mean|g| / std g) over the two halves' gradients, computed here with numpy."""
    arch = NB201.parse(MIXED)
    net = scorer.build(arch)
    mods = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    per_half = []
    for i in range(2):
        net.zero_grad()
        half = slice(i * BATCH, (i + 1) * BATCH)
        nn.functional.cross_entropy(net(scorer.x[half]), scorer.y[half]).backward()
        per_half.append([m.weight.grad.double().numpy().ravel().copy() for m in mods])
    want = 0.0
    for a, b in zip(*per_half, strict=True):
        g = np.stack([a, b])
        std, mean_abs = g.std(0), np.abs(g).mean(0)
        s = (mean_abs[std > 0] / std[std > 0]).sum()
        want += math.log(s) if s > 0 else 0.0
    assert scorer.score(arch, ("zico",))["zico"] == pytest.approx(want, rel=1e-6)


def test_synflow_needs_no_data_and_counts_the_paths(scorer: zc.ZeroCostScorer) -> None:
    other = zc.ZeroCostScorer(NB201, *images(seed=1), num_classes=10, batch_size=BATCH, seed=0)
    arch = NB201.parse(CONV)
    assert other.score(arch, ("synflow",)) == scorer.score(arch, ("synflow",))
    # more parameterised paths, more synaptic flow: a cell of 3x3 convolutions over one of pooling
    assert scorer.score(arch, ("synflow",))["synflow"] > scorer.score(NB201.parse(POOL), ("synflow",))["synflow"]


def test_a_network_that_ignores_its_input_scores_lowest(scorer: zc.ZeroCostScorer) -> None:
    dead, live = scorer.score(NB201.parse(DEAD), zc.PROXIES), scorer.score(NB201.parse(MIXED), zc.PROXIES)
    assert math.isnan(dead["jacov"])  # every image's Jacobian is zero: no correlation
    assert dead["naswot"] < live["naswot"]  # identical codes for every image: a singular kernel
    assert list(zc.vote_ranks({"jacov": [dead["jacov"], live["jacov"]]})) == [1.0, 2.0]


def test_vote_ranks_sum_each_proxys_rank() -> None:
    got = zc.vote_ranks({"a": [1.0, 3.0, 2.0], "b": [10.0, float("nan"), 30.0]})
    assert list(got) == [1 + 2, 3 + 1, 2 + 3]


def test_the_normalised_objective_is_bounded_and_keeps_the_order(scorer: zc.ZeroCostScorer) -> None:
    rng = np.random.default_rng(0)
    ref = [NB201.decode(NB201.sample(rng)) for _ in range(6)]
    norm = zc.Normalizer(scorer, ref, ("synflow", "zico"))
    vals = [{"synflow": s, "zico": z} for s, z in ((1e3, 10.0), (1e9, 10.0), (1e9, 90.0))]
    got = [norm.value(v) for v in vals]
    assert 0 < got[0] < got[1] < got[2] < 1
    assert norm.value({"synflow": float("nan"), "zico": float("-inf")}) == 0.0
    with pytest.raises(zc.ZeroCostError, match="cannot rank"):
        zc.Normalizer(scorer, [NB201.parse(CONV)] * 3, ("zico",))


@pytest.mark.parametrize("kind,text", [("macro", "12012200"), ("mbconv", "mobilenetv2")])
def test_every_buildable_space_scores(kind: str, text: str) -> None:
    from hwnas.cli.score import parse_arch

    _, space, arch = parse_arch(text, kind)
    got = zc.ZeroCostScorer(space, *images(), num_classes=10, batch_size=BATCH).score(arch, zc.PROXIES)
    assert all(math.isfinite(v) for v in got.values()), got


def test_hwnas_score_prints_the_scores(tmp_path: object) -> None:
    r = hwnas("score", MIXED, "12012200", "--proxy", "synflow,zico,flops", "--batch-size", "16", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [x["space"] for x in out["results"]] == ["nb201", "macro"]
    assert all(set(x["scores"]) == {"synflow", "zico", "flops"} for x in out["results"])
    macro = get_space("macro")
    assert out["results"][1]["scores"]["flops"] == macro.flops(macro.parse("12012200"), 32, 10)


@pytest.mark.parametrize("args,fragment", [
    (("score", MIXED, "--proxy", "zico,nope"), "expected a comma-separated list of"),
    (("score", "|nor_conv_3x3~0|+|"), "nor_conv_3x3"),
    (("score", "12345678"), "unknown architecture '12345678'"),
])
def test_hwnas_score_refuses_bad_input(args: tuple[str, ...], fragment: str) -> None:
    assert_usage_error(hwnas_here(*args), fragment)


def test_a_zero_cost_search_trains_nothing(tmp_path: object) -> None:
    from pathlib import Path

    r = hwnas("search", "--space", "nb201", "--evaluator", "zero-cost:synflow", "--trials", "6", "--population",
              "3", "--strategy", "random", "--run-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "NOT trained" in r.stderr and "highest zero-cost score (trial" in r.stdout
    (run,) = Path(str(tmp_path)).glob("nb201-zero-cost-*/pareto.json")  # named after what it searched
    front = json.loads(run.read_text())["pareto"]
    assert front and all(0 < row["acc"] < 1 for row in front)


@pytest.mark.parametrize("args,fragment", [
    (("search", "--evaluator", "zero-cost:zenn"), "unknown zero-cost proxy 'zenn'"),
    (("search", "--evaluator", "train-harder"), "evaluator must be train, zero-cost"),
    (("search", "--evaluator", "zero-cost:zico", "--benchmark", "nb201:cifar10"), "give one"),
    (("search", "--evaluator", "zero-cost:zico", "--space", "transnas-micro"), "builds none"),
])
def test_a_zero_cost_search_refuses_bad_settings(args: tuple[str, ...], fragment: str) -> None:
    assert_usage_error(hwnas_here(*args), fragment)


def test_a_prefiltered_search_trains_the_best_scored_of_each_batch(tmp_path: object) -> None:
    import optuna
    from optuna.trial import TrialState

    r = hwnas("search", "--budget-flops", "400M", "--trials", "2", "--epochs", "0.1", "--device", "cpu",
              "--prefilter", "synflow", "--prefilter-keep", "0.34", "--strategy", "random", "--run-dir", str(tmp_path),
              "--study-name", "pf")
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="pf", storage=f"sqlite:///{tmp_path}/pf.db").trials  # type: ignore[str-bytes-safe]
    scored = [t for t in trials if "prefilter_scores" in t.user_attrs]
    trained = [t for t in scored if t.user_attrs.get("trained")]
    assert len(trained) == 2 and all(t.state == TrialState.COMPLETE for t in trained)
    assert all(t.state == TrialState.PRUNED for t in scored if t.user_attrs["prefiltered"])
    for t in trained:
        batch = [u for u in scored if u.user_attrs["batch"] == t.user_attrs["batch"]]
        assert len(batch) >= 2
        assert t.user_attrs["prefilter_scores"]["synflow"] == max(u.user_attrs["prefilter_scores"]["synflow"]
                                                                 for u in batch)


@pytest.mark.parametrize("args,fragment", [
    (("search", "--prefilter", "zico", "--benchmark", "nb201:cifar10"), "a --benchmark trains none"),
    (("search", "--prefilter", "zico", "--evaluator", "zero-cost:zico"), "trains none"),
    (("search", "--prefilter", "vote", "--prefilter-keep", "1.5"), "at most 1"),
    (("search", "--prefilter", "all"), "name the proxies"),
])
def test_a_prefilter_refuses_bad_settings(args: tuple[str, ...], fragment: str) -> None:
    assert_usage_error(hwnas_here(*args), fragment)


def test_zen_leaves_out_a_batchnorm_whose_input_is_all_zero(scorer: zc.ZeroCostScorer) -> None:
    """Node 1 of this cell is zero (edge 1<-0 is `none`), so the 1x1 convolution's BN after it sees only zeros:
    its log-variance would be minus infinity."""
    arch = NB201.parse("|none~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_1x1~1|avg_pool_3x3~2|")
    assert math.isfinite(scorer.score(arch, ("zen",))["zen"])


def test_a_dead_network_ranks_last_on_real_images(tmp_path: object) -> None:
    """On a few real CIFAR-10 images, the cell of `none` edges (its output ignores its input) scores below three
    working cells under every proxy but GRASP, whose sign the papers found unreliable (rho 0.51 on NB201)."""
    from pathlib import Path

    from hwnas.cli.train import EMBEDDED
    from hwnas.data import load_dataset

    data = load_dataset(EMBEDDED, "cifar10", Path(str(tmp_path)))
    scorer = zc.ZeroCostScorer(NB201, data.train_x[:200], data.train_y[:200], 10, batch_size=16)
    dead = scorer.score(NB201.parse(DEAD))
    for text in (CONV, POOL, MIXED):
        live = scorer.score(NB201.parse(text))
        for p in zc.PROXIES:
            if p in ("flops", "params"):  # pooling is free: the pooling cell costs what the dead one does
                assert dead[p] <= live[p], (p, text)
            elif p != "grasp":
                assert not dead[p] >= live[p], (p, text, dead[p], live[p])  # NaN counts as lowest


def test_a_transform_touches_only_the_drawn_minibatch() -> None:
    """Resizing the drawn images scores as resizing every image first would (the search's proxy resolution)."""
    from hwnas.cli.search import _resize

    x, y = images(40)
    lazy = zc.ZeroCostScorer(NB201, x, y, 10, batch_size=BATCH, transform=lambda a: _resize(a, 16))
    eager = zc.ZeroCostScorer(NB201, _resize(x, 16), y, 10, batch_size=BATCH)
    assert lazy.resolution == eager.resolution == 16
    assert torch.equal(lazy.x, eager.x)
    assert lazy.score(NB201.parse(MIXED), ("naswot",)) == eager.score(NB201.parse(MIXED), ("naswot",))
