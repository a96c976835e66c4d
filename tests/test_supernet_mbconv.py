"""The elastic MBConv supernet: extracted subnets compute what the supernet computes, gradients reach only
the active slices, architectures that do not fit are refused."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from hwnas.genotype import Genotype, Stage
from hwnas.scaling import scale
from hwnas.space import SearchSpace
from hwnas.supernet import SupernetError, build_supernet
from hwnas.supernet.mbconv import DynamicBN, MBConvSupernet
from hwnas.walker import walk

DEFAULT = SearchSpace.default()
CUSTOM = SearchSpace.from_dict({  # every stage kind a space can have: ds-only, ir-only, no SE, noskip-only
    "name": "custom", "stem": 24, "head": 256, "divisor": 4, "activations": ["relu6", "relu"],
    "width_factors": [0.5, 1.0], "depth_factors": [1.0, 1.5],
    "stages": [
        {"channels": 16, "stride": 1, "layers": [1, 2], "ops": ["ds"], "kernels": [3, 5], "expansions": [1],
         "se_ratios": [0.0], "skips": [False]},
        {"channels": 24, "stride": 2, "layers": [2, 3], "ops": ["ir"], "kernels": [3, 7, 5],
         "expansions": [2, 3], "se_ratios": [0.5, 0.0], "widths": [1.0, 0.5]},
        {"channels": 40, "stride": 2, "layers": [1, 2], "ops": ["ir", "ds"], "kernels": [9],
         "expansions": [1, 4], "se_ratios": [0.125, 0.25], "skips": [True]},
    ],
})


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny networks run faster on one thread


def _randomize(net: torch.nn.Module, seed: int) -> None:
    """Random BN statistics, affine parameters and biases, so that slicing mistakes show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, DynamicBN):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        for name, p in net.named_parameters():
            if name.endswith("bias") and "bn" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _archs(space: SearchSpace, n: int, seed: int) -> list[Genotype]:
    rng = np.random.default_rng(seed)
    return [space.decode(space.sample(rng)) for _ in range(n)]


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item() / max(1.0, b.abs().max().item())
    assert err < 1e-5, err


@pytest.mark.parametrize(("space", "width", "size", "n"), [(DEFAULT, 0.25, 32, 12), (DEFAULT, 0.5, 72, 3),
                                                          (CUSTOM, 1.0, 24, 12), (CUSTOM, 0.5, 80, 6)])
def test_extract_computes_what_the_supernet_computes(space: SearchSpace, width: float, size: int, n: int) -> None:
    torch.manual_seed(0)
    sn = MBConvSupernet(space, 10, size, width=width)
    _randomize(sn, 1)
    sn.train()
    for arch in _archs(space, 2, 99):  # training steps update slices of the running statistics in place
        sn.activate(arch)
        sn(torch.randn(4, 3, size, size))
    sn.eval()
    small, large = sn.sandwich()
    archs = [small, large, *(replace(a, activation=space.activations[i % len(space.activations)])
                             for i, a in enumerate(_archs(space, n, 7)))]
    # the walk covers every kind of block: ds and ir, SE on and off, residual and noskip, activations
    layers = [layer for a in archs for layer in walk(scale(a, width), size)]
    kinds = {(la.kind, la.se_c > 0, la.residual) for la in layers if la.kind in ("ir", "ds")}
    assert {k[0] for k in kinds} == {"ir", "ds"} and {k[1] for k in kinds} == {True, False}
    assert {k[2] for k in kinds} == {True, False}
    assert {a.activation for a in archs} == set(space.activations)
    if space is CUSTOM:
        assert any(not st.skip and st.repeats > 1 for a in archs for st in a.stages)  # a noskip stage
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for arch in archs:
            sn.activate(arch)
            got = sn(x)
            net = sn.extract(arch).eval()
            assert str(net.genotype) == str(scale(arch, width))
            _assert_same(got, net(x))
            ref = space.build(scale(arch, width), 10, size)  # the same module structure as space.build's
            assert list(ref.state_dict()) == list(net.state_dict())
            assert all(a.shape == b.shape for a, b in zip(ref.state_dict().values(), net.state_dict().values(),
                                                          strict=True))


def test_extract_leaves_the_active_architecture() -> None:
    sn = MBConvSupernet(DEFAULT, 10, 32, width=0.25).eval()
    a, b = _archs(DEFAULT, 2, 3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        sn.activate(a)
        before = sn(x)
        sn.extract(b)
        assert sn.arch is a
        assert torch.equal(before, sn(x))


@pytest.mark.parametrize("seed", range(3))
def test_gradients_reach_only_the_active_slices(seed: int) -> None:
    torch.manual_seed(seed)
    sn = MBConvSupernet(CUSTOM if seed == 2 else DEFAULT, 10, 32, width=0.25)
    _randomize(sn, seed)
    sn.eval()  # running statistics and no dropout: the supernet and the subnet see the same function
    arch = sn.sandwich()[0] if seed == 0 else _archs(sn.space, 1, seed)[0]
    x = torch.randn(3, 3, 32, 32)
    sn.activate(arch)
    sn(x).square().sum().backward()
    net = sn.extract(arch).eval()
    net(x).square().sum().backward()
    # parameters of blocks past the active depth get no gradient at all
    for st, blocks in zip(scale(arch, 0.25).stages, sn.stages, strict=True):
        assert all(p.grad is None for block in blocks[st.repeats:] for p in block.parameters())
    # a supernet whose weights are the gradients: its extract holds the gradient slices, and nothing is outside
    grads = MBConvSupernet(sn.space, 10, 32, width=0.25)
    state = {k: v for k, v in sn.state_dict().items()}
    for name, p in sn.named_parameters():
        state[name] = p.grad if p.grad is not None else torch.zeros_like(p)
    grads.load_state_dict(state)
    sliced = grads.extract(arch)
    for (name, g), q in zip(sliced.named_parameters(), net.parameters(), strict=True):
        assert q.grad is not None, name
        _assert_same(g, q.grad)
    total = sum(p.abs().sum().item() for p in grads.parameters())
    inside = sum(p.abs().sum().item() for p in sliced.parameters())
    assert total > 0 and abs(total - inside) <= 1e-6 * total


def test_batchnorm_updates_only_the_active_channels() -> None:
    sn = MBConvSupernet(DEFAULT, 10, 32, width=0.5).train()
    small, _ = sn.sandwich()
    sn.activate(small)
    sn(torch.randn(4, 3, 32, 32) + 3)
    c = scale(small, 0.5).stem
    assert c < sn.max_stem
    assert (sn.stem_bn.running_mean[:c] != 0).all() and (sn.stem_bn.running_mean[c:] == 0).all()
    assert int(sn.stem_bn.num_batches_tracked) == 1


def test_sandwich_is_the_smallest_and_the_largest() -> None:
    for space in (DEFAULT, CUSTOM):
        sn = MBConvSupernet(space, 10, 32, width=0.5)
        small, large = sn.sandwich()
        space.encode(small), space.encode(large)  # both are in the space
        assert space.flops(small, 32, 10) <= min(space.flops(a, 32, 10) for a in _archs(space, 30, 1))
        assert space.flops(large, 32, 10) >= max(space.flops(a, 32, 10) for a in _archs(space, 30, 1))
        sn.activate(large)  # the largest fills the supernet: every block, every channel
        g = scale(large, 0.5)
        assert g.stem == sn.max_stem and g.head == sn.max_head
        for st, blocks in zip(g.stages, sn.stages, strict=True):
            assert st.repeats == len(blocks)
            assert all(b.layer is not None and b.layer.out_c == b.max_out and b.layer.mid_c == b.max_mid
                       and b.layer.kernel == b.max_kernel and b.layer.se_c == b.max_se for b in blocks)
    small, large = MBConvSupernet(DEFAULT, 10, 32).sandwich()
    assert {s.op for s in small.stages} == {"ds"} and {s.op for s in large.stages} == {"ir"}
    assert all(s.se_ratio == 0 for s in small.stages) and all(s.se_ratio == 0.25 for s in large.stages)


def test_activate_refuses_what_does_not_fit() -> None:
    sn = MBConvSupernet(DEFAULT, 10, 32, width=0.25)
    with pytest.raises(SupernetError, match="activate"):
        sn(torch.randn(1, 3, 32, 32))
    good = _archs(DEFAULT, 1, 5)[0]
    st0 = good.stages[0]
    bad: list[object] = [
        str(good), DEFAULT.sample(np.random.default_rng(0)),
        replace(good, stages=good.stages[:-1]),
        replace(good, stages=(replace(st0, stride=2), *good.stages[1:])),
        replace(good, stages=(replace(st0, repeats=4), *good.stages[1:])),
        replace(good, stages=(replace(st0, channels=512), *good.stages[1:])),
        replace(good, stages=(replace(st0, kernel=9), *good.stages[1:])),
        replace(good, stages=(replace(st0, op="ir", expansion=8), *good.stages[1:])),
        replace(good, stages=(replace(st0, se_ratio=1.0), *good.stages[1:])),
        replace(good, stages=(Stage.identity(1, 1, 16), *good.stages[1:])),
        replace(good, head=4096), replace(good, stem=512),
    ]
    for arch in bad:
        with pytest.raises(SupernetError) as e:
            sn.activate(arch)
        assert "\n" not in str(e.value)
    sn.activate(good)  # a refusal leaves the supernet usable
    custom = MBConvSupernet(CUSTOM, 10, 32)
    g = CUSTOM.decode(CUSTOM.sample(np.random.default_rng(0)))
    with pytest.raises(SupernetError, match="only has ds"):
        custom.activate(replace(g, stages=(replace(g.stages[0], op="ir", expansion=2), *g.stages[1:])))
    with pytest.raises(SupernetError, match="MBConv space"):
        MBConvSupernet(object(), 10, 32)
    with pytest.raises(SupernetError, match="width"):
        MBConvSupernet(DEFAULT, 10, 32, width=0)
    with pytest.raises(SupernetError, match="unknown"):
        build_supernet(DEFAULT, 10, 32, {"width": 0.5, "kernel_transform": True})


def test_settings_rebuild_the_supernet() -> None:
    sn = MBConvSupernet(CUSTOM, 10, 32, width=0.5)
    assert sn.settings() == {"width": 0.5}
    again = build_supernet(CUSTOM, 10, 32, sn.settings())
    assert isinstance(again, MBConvSupernet)
    assert [(k, v.shape) for k, v in again.state_dict().items()] == [(k, v.shape) for k, v in sn.state_dict().items()]
    again.load_state_dict(sn.state_dict())
    assert sn.stem_stride == 1 and MBConvSupernet(CUSTOM, 10, 224).stem_stride == 2


def test_forward_backward_at_32_width_quarter_is_quick() -> None:
    """Reports (does not assert) the time of a training step (one thread, see ``one_torch_thread``)."""
    torch.manual_seed(0)
    sn = MBConvSupernet(DEFAULT, 10, 32, width=0.25).train()
    small, large = sn.sandwich()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    times = {}
    for name, arch in [("smallest", small), ("random", _archs(DEFAULT, 1, 11)[0]), ("largest", large)]:
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            sn.activate(arch)
            loss = torch.nn.functional.cross_entropy(sn(x), y)
            loss.backward()
            best = min(best, time.perf_counter() - t)
            assert torch.isfinite(loss)
        times[name] = best
    print("\nmbconv supernet, width 0.25, 32 px, batch 32, one thread, forward+backward: "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items()))
