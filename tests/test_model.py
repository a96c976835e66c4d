"""Forward/backward passes of built networks on the CPU."""

import numpy as np
import pytest
import torch

from conftest import arbitrary_genotype
from hwnas.model import build_model
from hwnas.references import REFERENCE_NAMES, reference
from hwnas.space import SearchSpace

SPACE = SearchSpace.default()


@pytest.mark.parametrize("seed", range(6))
def test_random_genotypes_forward_at_224_and_32(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = SPACE.decode(SPACE.sample(rng))
    with torch.no_grad():
        big = build_model(g, 1000, input_size=224).eval()
        assert big(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    small = build_model(g, 10, input_size=32, drop_path=0.2).train()
    x = torch.randn(4, 3, 32, 32)
    out = small(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in small.parameters())


@pytest.mark.parametrize("seed", range(4))
def test_arbitrary_genotypes_forward(seed: int) -> None:
    g = arbitrary_genotype(np.random.default_rng(100 + seed))
    with torch.no_grad():
        assert build_model(g, 7, input_size=32).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_references_train_step_at_32(name: str) -> None:
    model = build_model(reference(name), 10, input_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.arange(8))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_residuals_follow_walker() -> None:
    model = build_model(reference("efficientnet-b0"))
    residual = [b.residual for b in model.blocks]
    assert residual == [False, False, True, False, True, False, True, True, False, True, True, False, True, True,
                        True, False]
    g_noskip = reference("efficientnet-b0").to_string().replace("c24_se0.25", "c24_se0.25_noskip")
    from hwnas.genotype import parse_genotype

    assert not any(b.residual for b in list(build_model(parse_genotype(g_noskip)).blocks)[1:3])


def test_stochastic_depth_ramp_and_eval_determinism() -> None:
    model = build_model(reference("mobilenetv2"), 10, input_size=32, drop_path=0.3).eval()
    rates = [b.drop_path.p for b in model.blocks if isinstance(b.drop_path, torch.nn.Module)
             and hasattr(b.drop_path, "p")]
    assert rates == sorted(rates) and max(rates) < 0.3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_bad_num_classes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model(reference("mobilenetv2"), 0)


@pytest.mark.parametrize("num_classes", [10, 1000])
def test_initial_loss_is_near_chance_whatever_the_class_count(num_classes: int) -> None:
    """The classifier's init scale must not grow with fewer classes (torchvision's U(+-1/sqrt(classes))
    gave 10-class networks an initial loss of 3-6); start near ln(num_classes), as an untrained net should."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, num_classes, (64,))
    for seed in range(4):
        g = SPACE.decode(SPACE.sample(np.random.default_rng(seed)))
        model = build_model(g, num_classes, input_size=32, zero_init_last=True).train()
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(model(x), y).item()
        assert abs(loss - np.log(num_classes)) < 0.25, (g.to_string(), loss)
