"""The elastic supernet of an MBConv space (Once-for-All style): every network of the space in one set of weights.

What the supernet holds, for a ``SearchSpace`` (any ``SearchSpace.from_dict`` builds) and a ``width``
multiplier (``hwnas.scaling.scale``, the proxy trainer's narrow networks; 1.0 = the space's own):

* a stem conv (3x3, the stride ``hwnas.walker.stem_stride_for(input_size)``, as ``build_model``), a head
  conv (1x1) and a classifier, sized for the widest stem/head of the space (``max(width_factors)``);
* per stage, the deepest stage's blocks: ``max(ceil(layers x depth_factor))`` blocks, as ``decode`` counts
  repeats; each block sized for the largest choice of its stage: output channels ``make_divisible(channels
  x width x width_factor, divisor)`` maximised over the stage's widths and the width factors (then scaled
  by ``width`` as ``scale`` does), input channels those of the block before it, expansion ``max(expansions)``
  (no expansion conv at all in a stage whose every choice is ``ds``), depthwise kernel ``max(kernels)``,
  SE squeeze ``se_channels(max input, max(se_ratios))``.

What an architecture uses (``activate``): ``g = scale(arch, width)``, walked by ``hwnas.walker.walk`` (the
one shape walker, so the active path is the standalone network's layer for layer):

* depth: the first ``repeats`` blocks of each stage;
* width: the first ``c`` output channels of every conv, linear and BatchNorm (weights ``w[:c_out, :c_in]``
  are views; OFA keeps the first channels, and so do we, with no channel re-ordering);
* expansion: the first ``in_c x expansion`` channels of the expansion conv, depthwise conv and SE;
  a ``ds`` block is the ``ir`` block with its expansion conv skipped (its depthwise conv then runs on the
  first ``in_c`` channels). Drawing ``ds`` against ``ir`` at random each step stalls training at small
  budgets, where every other dimension learns (``benchmarks/investigations/supernet_sampling.py``;
  ``ds`` blocks with weights of their own did no better there);
* kernel: the centre ``k x k`` of the largest depthwise kernel. OFA's kernel transformation matrices
  (a learned ``k^2 x k^2`` map from the larger kernel's centre) are *not* used: plain centre cropping, as
  BigNAS does; it keeps the parameter count that of the largest network for any kernel set (a space may
  list kernels up to 63) and makes ``extract`` a pure copy of slices;
* SE: the first ``se_c`` squeeze channels (SE squeezes relative to the *block input*, as the walker says,
  where OFA squeezes relative to the expanded width);
* the residual where the walker puts one (``skip``, stride 1, in = out channels), the activation the
  genotype names: activations have no weights, so every one of ``relu``/``relu6``/``swish`` shares all of
  them (weights trained under one activation serve the others only as well as they transfer);
* BatchNorm (``DynamicBN``, OFA's ``DynamicBatchNorm2d``): the first ``c`` entries of the affine parameters
  and the running statistics, updated in place in training; it is an ``nn.BatchNorm2d`` so that
  BatchNorm recalibration (reset, ``momentum=None``) finds it like any other;
* the classifier's dropout is the space's (``space.dropout``), as ``space.build``'s network.

``extract(arch)`` is ``build_model(scale(arch, width), num_classes, input_size=input_size,
dropout=space.dropout)`` (what ``space.build`` gives for the scaled architecture) with the active slices
copied in, running statistics included: in eval mode it computes the supernet's output for ``arch``.

``sandwich()`` (the sandwich rule of BigNAS, Yu et al. 2020, also OFA's): the decodes of the smallest and
the largest choice of every dimension. Op: the smallest is ``ds`` and the largest ``ir`` where the stage
offers them; skip: a residual where the stage offers it (it costs nothing); activation: none is larger,
both use the space's first.

References: Cai, Gan, Wang, Zhang, Han, "Once-for-All: Train One Network and Specialize it for Efficient
Deployment", ICLR 2020; Yu et al., "BigNAS: Scaling Up Neural Architecture Search with Big Single-Stage
Models", ECCV 2020.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.genotype import Genotype
from hwnas.model import Block, Network, SqueezeExcite, build_model
from hwnas.scaling import scale
from hwnas.space import make_divisible
from hwnas.supernet import SupernetError
from hwnas.supernet.base import Supernet
from hwnas.walker import IN_CHANNELS, STEM_KERNEL, Layer, se_channels, stem_stride_for, walk

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "relu6": F.relu6,
    "swish": F.silu,
}


# ---- dynamic layers: full-size weights, sliced per call ------------------------------------------------
class DynamicConv(nn.Module):
    """A dense convolution of at most ``max_in`` -> ``max_out`` channels; runs the first ``out_c`` filters
    on the first ``x.size(1)`` input channels."""

    def __init__(self, max_in: int, max_out: int, kernel: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def sliced(self, in_c: int, out_c: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.weight[:out_c, :in_c], None if self.bias is None else self.bias[:out_c]

    def forward(self, x: torch.Tensor, out_c: int, stride: int = 1) -> torch.Tensor:
        w, b = self.sliced(x.size(1), out_c)
        return F.conv2d(x, w, b, stride, self.kernel // 2)


class DynamicDepthwise(nn.Module):
    """A depthwise convolution of at most ``max_c`` channels and kernel ``max_kernel``: the first
    ``x.size(1)`` channels, the centre ``kernel x kernel`` of each filter."""

    def __init__(self, max_c: int, max_kernel: int) -> None:
        super().__init__()
        self.max_kernel = max_kernel
        self.weight = nn.Parameter(torch.empty(max_c, 1, max_kernel, max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def sliced(self, c: int, kernel: int) -> torch.Tensor:
        start = (self.max_kernel - kernel) // 2
        return self.weight[:c, :, start:start + kernel, start:start + kernel]

    def forward(self, x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
        c = x.size(1)
        return F.conv2d(x, self.sliced(c, kernel), None, stride, kernel // 2, 1, c)


class DynamicBN(nn.BatchNorm2d):
    """BatchNorm over the first ``x.size(1)`` channels: affine parameters and running statistics sliced
    (OFA's ``DynamicBatchNorm2d``); the statistics of those channels are updated in place in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average (BN recalibration)
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        mean = self.running_mean[:c] if keep and self.running_mean is not None else None
        var = self.running_var[:c] if keep and self.running_var is not None else None
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch, factor, self.eps)

    def copy_to(self, bn: nn.BatchNorm2d) -> None:
        """Copy the first ``bn.num_features`` channels into a standalone ``bn`` (under ``no_grad``)."""
        c = bn.num_features
        for name in ("weight", "bias", "running_mean", "running_var"):
            src, dst = getattr(self, name), getattr(bn, name)
            if src is not None and dst is not None:
                dst.copy_(src[:c])
        if self.num_batches_tracked is not None and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.copy_(self.num_batches_tracked)


class DynamicSE(nn.Module):
    """Squeeze-and-excitation on the first ``x.size(1)`` channels with the first ``se_c`` squeeze channels
    (``hwnas.model.SqueezeExcite``'s computation: pool, reduce, act, expand, sigmoid gate)."""

    def __init__(self, max_c: int, max_se: int) -> None:
        super().__init__()
        self.reduce = DynamicConv(max_c, max_se, 1, bias=True)
        self.expand = DynamicConv(max_se, max_c, 1, bias=True)

    def forward(self, x: torch.Tensor, se_c: int, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.expand(act(self.reduce(s, se_c)), x.size(1))
        return x * torch.sigmoid(s)

    def copy_to(self, se: SqueezeExcite) -> None:
        c, se_c = se.reduce.in_channels, se.reduce.out_channels
        for src, dst, (i, o) in ((self.reduce, se.reduce, (c, se_c)), (self.expand, se.expand, (se_c, c))):
            w, b = src.sliced(i, o)
            dst.weight.copy_(w)
            if b is not None and dst.bias is not None:
                dst.bias.copy_(b)


class DynamicLinear(nn.Module):
    """The classifier: all ``out_features`` classes from the first ``x.size(1)`` features."""

    def __init__(self, max_in: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / max_in ** 0.5  # hwnas.model's classifier initialisation, at the largest width
        self.weight = nn.Parameter(torch.empty(out_features, max_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, :x.size(1)], self.bias)


def _copy_conv(src: DynamicConv, dst: nn.Conv2d) -> None:
    w, b = src.sliced(dst.in_channels, dst.out_channels)
    dst.weight.copy_(w)
    if b is not None and dst.bias is not None:
        dst.bias.copy_(b)


# ---- one elastic block -------------------------------------------------------------------------------
class DynamicBlock(nn.Module):
    """The largest block of a stage position: ``expand`` (1x1, absent where the stage is all ``ds``),
    ``dw`` (depthwise), ``se`` (absent where every SE ratio is 0), ``project`` (1x1), each with its BN.
    ``layer`` (a walker ``Layer``, set by ``MBConvSupernet.activate``) says which slice runs."""

    def __init__(self, max_in: int, max_out: int, max_mid: int, max_kernel: int, max_se: int,
                 has_expand: bool) -> None:
        super().__init__()
        self.max_in, self.max_out, self.max_mid = max_in, max_out, max_mid
        self.max_kernel, self.max_se = max_kernel, max_se
        self.expand = DynamicConv(max_in, max_mid, 1) if has_expand else None
        self.expand_bn = DynamicBN(max_mid) if has_expand else None
        self.dw = DynamicDepthwise(max_mid, max_kernel)
        self.dw_bn = DynamicBN(max_mid)
        self.se = DynamicSE(max_mid, max_se) if max_se > 0 else None
        self.project = DynamicConv(max_mid, max_out, 1)
        self.project_bn = DynamicBN(max_out)
        self.layer: Layer | None = None

    def problem(self, layer: Layer) -> str | None:
        """Why ``layer`` does not fit this block's weights, or None."""
        if layer.kind not in ("ir", "ds"):
            return f"op {layer.kind} is no MBConv block"
        if layer.kind == "ir" and self.expand is None:
            return "ir (an expansion conv) where the space only has ds blocks"
        for what, need, have in (("input channels", layer.in_c, self.max_in),
                                 ("output channels", layer.out_c, self.max_out),
                                 ("expanded channels", layer.mid_c, self.max_mid),
                                 ("kernel", layer.kernel, self.max_kernel),
                                 ("SE channels", layer.se_c, self.max_se)):
            if need > have:
                return f"{what} {need} > {have} built"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if layer is None:
            raise SupernetError("an inactive block ran: activate an architecture first")
        act = _ACTIVATIONS[layer.activation]
        h = x
        if layer.kind == "ir" and self.expand is not None and self.expand_bn is not None:
            h = act(self.expand_bn(self.expand(h, layer.mid_c)))
        h = act(self.dw_bn(self.dw(h, layer.kernel, layer.stride)))
        if layer.se_c and self.se is not None:
            h = self.se(h, layer.se_c, act)
        h = self.project_bn(self.project(h, layer.out_c))
        return x + h if layer.residual else h

    def copy_to(self, block: Block) -> None:
        """Copy the active slices into the standalone ``block`` (``hwnas.model.Block`` of ``self.layer``)."""
        layer = self.layer
        assert layer is not None and isinstance(block.body, nn.Sequential)
        parts = list(block.body)
        if layer.kind == "ir":
            assert self.expand is not None and self.expand_bn is not None
            seq = parts.pop(0)
            _copy_conv(self.expand, seq[0])
            self.expand_bn.copy_to(seq[1])
        seq = parts.pop(0)
        seq[0].weight.copy_(self.dw.sliced(layer.mid_c, layer.kernel))
        self.dw_bn.copy_to(seq[1])
        if layer.se_c:
            assert self.se is not None
            self.se.copy_to(parts.pop(0))
        seq = parts.pop(0)
        _copy_conv(self.project, seq[0])
        self.project_bn.copy_to(seq[1])


# ---- the network ---------------------------------------------------------------------------------------
class MBConvSupernet(Supernet):
    """Every network of an MBConv ``SearchSpace`` (width-scaled by ``width``), Once-for-All style: see the
    module docstring."""

    kind: ClassVar[str] = "mbconv"

    def __init__(self, space: Any, num_classes: int, input_size: int, width: float = 1.0, **unknown: Any) -> None:
        if unknown:
            raise SupernetError(f"unknown MBConv supernet setting(s): {', '.join(sorted(unknown))} (settings: width)")
        if getattr(space, "kind", None) != "mbconv" or not hasattr(space, "stages"):
            raise SupernetError(f"an MBConv supernet needs an MBConv space, got {getattr(space, 'kind', space)!r}")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width < math.inf:
            raise SupernetError(f"supernet width must be a positive number, got {width!r}")
        if int(num_classes) < 1 or int(input_size) < 1:
            raise SupernetError(f"num_classes and input_size must be >= 1, got {num_classes}, {input_size}")
        super().__init__(space, num_classes, input_size)
        self.width = float(width)
        self.stem_stride = stem_stride_for(self.input_size)
        self.dropout = float(getattr(space, "dropout", 0.2))

        def widest(base: int | float) -> int:  # the most channels any width factor gives, width-scaled
            return max(self._scaled(make_divisible(base * wf, space.divisor)) for wf in space.width_factors)

        self.max_stem = widest(space.stem)
        self.max_head = widest(space.head)
        self.strides = tuple(st.stride for st in space.stages)
        self.stem = DynamicConv(IN_CHANNELS, self.max_stem, STEM_KERNEL)
        self.stem_bn = DynamicBN(self.max_stem)
        stages, in_c = [], self.max_stem
        for st in space.stages:
            out_c = max(widest(st.channels * w) for w in st.widths)
            depth = max(math.ceil(n * df - 1e-9) for n in st.layers for df in space.depth_factors)
            expansions = [e for e in st.expansions if e > 1] if "ir" in st.ops else []
            e_max = max(expansions, default=1)
            blocks = []
            for j in range(depth):
                b_in = in_c if j == 0 else out_c
                blocks.append(DynamicBlock(b_in, out_c, b_in * e_max, max(st.kernels),
                                           se_channels(b_in, max(st.se_ratios)), e_max > 1))
            stages.append(nn.ModuleList(blocks))
            in_c = out_c
        self.stages = nn.ModuleList(stages)
        self.head = DynamicConv(in_c, self.max_head, 1)
        self.head_bn = DynamicBN(self.max_head)
        self.classifier = DynamicLinear(self.max_head, self.num_classes)
        self.arch: Genotype | None = None  # the active architecture, as given (unscaled)
        # hook(i, x) -> x after stage i's last block, and hook(len(stages), features) before the classifier: how
        # a gradient search (hwnas.supernet.gumbel) gates the active path with its straight-through weights
        self.stage_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None
        self._layers: list[Layer] = []  # the scaled architecture's walk

    def _scaled(self, c: int) -> int:
        return c if self.width == 1.0 else make_divisible(c * self.width, 8)  # hwnas.scaling.scale's rounding

    def settings(self) -> dict[str, Any]:
        return {"width": self.width}

    # ---- the active architecture -------------------------------------------------------------------
    def scaled(self, arch: Genotype) -> Genotype:
        """The network the supernet runs for ``arch``: ``scale(arch, width)``."""
        return scale(arch, width=self.width)

    def _walk(self, arch: Any) -> tuple[Genotype, list[Layer]]:
        if not isinstance(arch, Genotype):
            raise SupernetError(f"the MBConv supernet runs genotypes, got {type(arch).__name__}")
        g = self.scaled(arch)
        if len(g.stages) != len(self.stages):
            raise SupernetError(f"architecture has {len(g.stages)} stages, the supernet {len(self.stages)}")
        for i, (st, built, stride) in enumerate(zip(g.stages, self.stages, self.strides, strict=True), start=1):
            if st.stride != stride:
                raise SupernetError(f"stage {i}: stride {st.stride}, the supernet's is {stride}")
            if st.repeats > len(built):
                raise SupernetError(f"stage {i}: {st.repeats} blocks, the supernet has {len(built)}")
        if g.stem > self.max_stem or g.head > self.max_head:
            raise SupernetError(f"stem/head {g.stem}/{g.head} channels, the supernet has "
                                f"{self.max_stem}/{self.max_head}")
        layers = list(walk(g, self.input_size, self.num_classes))
        it = iter(layers[1:-2])
        for i, st in enumerate(g.stages, start=1):
            for j in range(st.repeats):
                problem = self.stages[i - 1][j].problem(next(it))
                if problem:
                    raise SupernetError(f"stage {i} block {j + 1}: {problem}")
        return g, layers

    def activate(self, arch: Any) -> None:
        """Run ``scale(arch, width)`` from now on. It fits where its stage count and strides are the
        supernet's and every block's sizes (channels, expanded channels, kernel, SE, depth) are at most the
        built ones, so a genotype outside the space that fits (a kernel 5 between built 3 and 7) runs too;
        ``SupernetError`` (one line, naming the stage and block) otherwise; the active one is then kept."""
        g, layers = self._walk(arch)
        it = iter(layers[1:-2])
        for st, blocks in zip(g.stages, self.stages, strict=True):
            for j, block in enumerate(blocks):
                block.layer = next(it) if j < st.repeats else None
        self.arch, self._layers = arch, layers

    def _active(self) -> list[DynamicBlock]:
        return [b for blocks in self.stages for b in blocks if b.layer is not None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._layers:
            raise SupernetError("no active architecture: call activate(arch) first")
        stem, head = self._layers[0], self._layers[-2]
        act = _ACTIVATIONS[stem.activation]
        x = act(self.stem_bn(self.stem(x, stem.out_c, stem.stride)))
        hook = self.stage_hook
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                if block.layer is not None:
                    x = block(x)
            if hook is not None:
                x = hook(i, x)
        x = act(self.head_bn(self.head(x, head.out_c)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if hook is not None:
            x = hook(len(self.stages), x)
        return self.classifier(F.dropout(x, self.dropout, self.training))

    # ---- standalone networks -------------------------------------------------------------------------
    def extract(self, arch: Any) -> Network:
        """``build_model(scale(arch, width), ...)`` holding the inherited weights and BN statistics (a copy),
        on the supernet's device and dtype, in training mode as ``build_model`` returns it. Leaves the
        active architecture as it was."""
        g, layers = self._walk(arch)
        before = (self.arch, self._layers, [b.layer for blocks in self.stages for b in blocks])
        ref = self.stem.weight
        net = build_model(g, self.num_classes, input_size=self.input_size, dropout=self.dropout)
        net = net.to(device=ref.device, dtype=ref.dtype)
        try:
            self.activate(arch)
            with torch.no_grad():
                _copy_conv(self.stem, net.stem[0])
                self.stem_bn.copy_to(net.stem[1])
                active = self._active()
                assert len(active) == len(net.blocks)
                for block, standalone in zip(active, net.blocks, strict=True):
                    block.copy_to(standalone)
                _copy_conv(self.head, net.head[0])
                self.head_bn.copy_to(net.head[1])
                net.classifier.weight.copy_(self.classifier.weight[:, :layers[-1].in_c])
                net.classifier.bias.copy_(self.classifier.bias)
        finally:
            self.arch, self._layers, saved = before
            for block, layer in zip((b for blocks in self.stages for b in blocks), saved, strict=True):
                block.layer = layer
        return net

    def sandwich(self) -> tuple[Genotype, Genotype]:
        """(smallest, largest): ``SearchSpace.extreme`` of the supernet's space (module docstring)."""
        return self.space.extreme(False), self.space.extreme(True)


__all__ = ["DynamicBN", "DynamicBlock", "DynamicConv", "DynamicDepthwise", "DynamicLinear", "DynamicSE",
           "MBConvSupernet"]
