"""Analytic FLOPs/params (pure walker) against torch: the built module and torch.utils.flop_counter."""

import numpy as np
import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from conftest import arbitrary_genotype
from hwnas.genotype import Genotype
from hwnas.model import build_model
from hwnas.references import reference
from hwnas.space import SearchSpace
from hwnas.walker import conv_out, flops, params, se_channels, stem_stride_for, walk


def counted_macs(model: torch.nn.Module, resolution: int) -> int:
    """torch.utils.flop_counter on the meta device (no compute); it reports 2 FLOPs per multiply-add."""
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:  # no device context: a third faster
        model.eval()(torch.empty(1, 3, resolution, resolution, device="meta"))
    total = fc.get_total_flops()
    assert total % 2 == 0
    return total // 2


def meta_model(g: Genotype, num_classes: int = 1000, input_size: int = 224) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(g, num_classes, input_size=input_size)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "factory", "expected_params"),
    [
        ("efficientnet-b0", torchvision.models.efficientnet_b0, 5_288_548),
        ("mobilenetv2", torchvision.models.mobilenet_v2, 3_504_872),
        ("mnasnet-b1", torchvision.models.mnasnet1_0, 4_383_312),
    ],
)
def test_references_match_torchvision_exactly(name: str, factory, expected_params: int) -> None:  # type: ignore[no-untyped-def]
    g = reference(name)
    with torch.device("meta"):
        tv = factory()
    assert params(g) == n_params(tv) == expected_params
    assert n_params(meta_model(g)) == expected_params
    assert flops(g, 224) == counted_macs(tv, 224) == counted_macs(meta_model(g), 224)


def test_published_figures() -> None:
    assert flops(reference("efficientnet-b0"), 224) == 385_814_752  # torch flop_counter: 385.8 M MACs
    a1 = reference("mnasnet-a1")  # MnasNet paper: 3.9 M params, 312 M multiply-adds
    assert round(params(a1) / 1e6, 1) == 3.9
    assert round(flops(a1, 224) / 1e6) == 312


def _random_genotypes() -> list[Genotype]:
    rng = np.random.default_rng(1234)
    space = SearchSpace.default()
    in_space = [space.decode(space.sample(rng)) for _ in range(100)]
    return in_space + [arbitrary_genotype(rng) for _ in range(100)]


GENOTYPES = _random_genotypes()


@pytest.mark.parametrize("chunk", range(10))
def test_flops_and_params_equal_torch_for_200_random_genotypes(chunk: int) -> None:
    for i, g in enumerate(GENOTYPES[chunk::10]):
        num_classes = 10 if i % 2 else 1000
        for resolution in (224, 32):
            model = meta_model(g, num_classes, input_size=resolution)
            assert flops(g, resolution, num_classes) == counted_macs(model, resolution), (g.to_string(), resolution)
        assert params(g, num_classes) == n_params(model), g.to_string()


@pytest.mark.parametrize("resolution", [1, 7, 33, 65, 97, 127])
def test_odd_resolutions(resolution: int) -> None:
    g = GENOTYPES[150]
    assert flops(g, resolution) == counted_macs(meta_model(g, input_size=resolution), resolution)


def test_small_input_adaptation() -> None:
    g = reference("efficientnet-b0")
    assert stem_stride_for(32) == 1 and stem_stride_for(64) == 1 and stem_stride_for(65) == 2
    layers = list(walk(g, 32))
    assert layers[0].stride == 1 and layers[1].size == 32
    assert layers[-2].size == 2  # last feature map 2x2 at 32 px (total stride 16)
    assert list(walk(g, 224))[-2].size == 7
    assert params(g) == sum(layer.params() for layer in walk(g, 32))  # params never depend on resolution


def test_layer_keys_and_shapes() -> None:
    layers = list(walk(reference("efficientnet-b0"), 224))
    assert layers[0].key() == "stem|224x224x3|o32|k3|s2|swish"
    assert layers[1].key() == "ds|112x112x32|o16|k3|s1|se8|nores|swish"
    assert layers[3].key() == "ir|56x56x24|o24|k3|s1|e6|se6|res|swish"
    assert layers[-1].key() == "classifier|1x1x1280|o1000"
    assert [layer.block for layer in layers[1:-2]] == list(range(16))
    assert conv_out(7, 3, 2) == 4 and conv_out(8, 5, 2) == 4 and conv_out(1, 7, 2) == 1
    assert se_channels(40, 0.25) == 10 and se_channels(3, 0.25) == 1 and se_channels(40, 0.0) == 0


def test_walker_rejects_bad_resolution() -> None:
    with pytest.raises(ValueError, match="resolution must be >= 1"):
        flops(reference("mobilenetv2"), 0)
