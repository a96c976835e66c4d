"""The one per-layer shape walker: FLOPs, params, latency-table keys and the model builder all read it.

``walk(genotype, resolution, num_classes)`` lists every layer the network will have, with its input
shape, in execution order. Everything here is pure Python (no torch), so search strategies can price
candidates without building them.

FLOPs are multiply-adds (MACs) of convolutions and linear layers, the convention of the MnasNet and
EfficientNet papers (EfficientNet-B0 = 0.39 G at 224). Activations, BN, pooling, the SE gate's
multiplication and residual additions are not counted; ``torch.utils.flop_counter`` counts exactly the
same operations (it reports 2 FLOPs per MAC).

Small inputs: at an input resolution of ``SMALL_INPUT_MAX`` (64 px) or less the stem convolution uses
stride 1 instead of 2 (the usual CIFAR adaptation), so a 32 px image reaches the last stage at 2x2
instead of 1x1. The genotype is unchanged; the builder applies the same rule.

Identity layers (op ``id``): a block that strides or changes the width is a projection, a 1x1 convolution
(stride s, no bias) + BN, priced and keyed as such; any other is a plain identity (``Layer.noop``): no
parameters, no FLOPs, no kernel, so latency tables give it no entry and price it at 0 (it is still walked,
so blocks keep their indices).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hwnas.genotype import Genotype

SMALL_INPUT_MAX = 64
STEM_KERNEL = 3
IN_CHANNELS = 3


def stem_stride_for(resolution: int) -> int:
    """Stride of the stem conv at this input resolution (1 for small inputs, see module docstring)."""
    return 1 if resolution <= SMALL_INPUT_MAX else 2


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a 'same'-padded convolution (padding kernel//2)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def se_channels(in_c: int, se_ratio: float) -> int:
    """Squeeze width of an SE module: a ratio of the *block input* channels (EfficientNet/MnasNet)."""
    return max(1, int(in_c * se_ratio + 1e-6)) if se_ratio > 0 else 0


@dataclass(frozen=True)
class Layer:
    """One unit of the network as the builder, the cost model and the latency table see it.

    kind: ``stem`` | ``ir`` | ``ds`` | ``id`` | ``head`` | ``classifier``. For ``classifier`` the spatial
    size is 1 and ``in_c``/``out_c`` are the linear layer's features. An ``id`` layer has kernel 1,
    expansion 1, no SE, no residual and no activation (its projection is conv + BN only).
    """

    kind: str
    size: int  # input height = width
    in_c: int
    out_c: int
    kernel: int = 1
    stride: int = 1
    expansion: int = 1
    se_c: int = 0
    residual: bool = False
    activation: str = ""
    block: int = -1  # index among the MBConv/DS blocks, -1 for stem/head/classifier

    @property
    def out_size(self) -> int:
        return conv_out(self.size, self.kernel, self.stride)

    @property
    def mid_c(self) -> int:
        return self.in_c * self.expansion

    @property
    def noop(self) -> bool:
        """A plain identity (an ``id`` layer that neither strides nor changes the width): it runs nothing."""
        return self.kind == "id" and self.stride == 1 and self.in_c == self.out_c

    def key(self) -> str:
        """Latency-table key: everything that decides this layer's run time, nothing else. An ``id``
        projection is ``id|<size>x<size>x<in>|o<out>|s<stride>`` (always 1x1, no activation); a plain
        identity (``noop``) has a key of the same form but is never measured nor looked up (it costs 0)."""
        parts = [self.kind, f"{self.size}x{self.size}x{self.in_c}", f"o{self.out_c}"]
        if self.kind == "id":
            return "|".join([*parts, f"s{self.stride}"])
        if self.kind in ("ir", "ds", "stem"):
            parts += [f"k{self.kernel}", f"s{self.stride}"]
        if self.kind == "ir":
            parts.append(f"e{self.expansion}")
        if self.kind in ("ir", "ds"):
            parts += [f"se{self.se_c}", "res" if self.residual else "nores"]
        if self.kind != "classifier":
            parts.append(self.activation)
        return "|".join(parts)

    # ---- cost of this layer ---------------------------------------------------------------------
    def macs(self) -> int:
        o2 = self.out_size ** 2
        k2 = self.kernel ** 2
        if self.kind == "stem":
            return o2 * self.out_c * self.in_c * k2
        if self.kind in ("head", "classifier"):
            return o2 * self.in_c * self.out_c
        if self.kind == "id":
            return 0 if self.noop else o2 * self.in_c * self.out_c
        mid = self.mid_c
        total = o2 * mid * k2 + o2 * mid * self.out_c  # depthwise + project
        if self.kind == "ir":
            total += self.size ** 2 * self.in_c * mid  # expansion
        return total + 2 * mid * self.se_c  # SE reduce + expand on a 1x1 map

    def params(self) -> int:
        if self.kind == "stem":
            return self.in_c * self.out_c * self.kernel ** 2 + 2 * self.out_c
        if self.kind == "head":
            return self.in_c * self.out_c + 2 * self.out_c
        if self.kind == "classifier":
            return self.in_c * self.out_c + self.out_c
        if self.kind == "id":
            return 0 if self.noop else self.in_c * self.out_c + 2 * self.out_c  # 1x1 conv (no bias) + BN
        mid = self.mid_c
        total = mid * self.kernel ** 2 + 2 * mid + mid * self.out_c + 2 * self.out_c  # dw+BN, proj+BN
        if self.kind == "ir":
            total += self.in_c * mid + 2 * mid  # expansion + BN
        if self.se_c:
            total += 2 * mid * self.se_c + self.se_c + mid  # two 1x1 convs with bias
        return total


def walk(genotype: Genotype, resolution: int = 224, num_classes: int = 1000) -> Iterator[Layer]:
    """Yield the layers of ``genotype`` at a square input of ``resolution`` pixels."""
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    g, act = genotype, genotype.activation
    stem = Layer("stem", resolution, IN_CHANNELS, g.stem, STEM_KERNEL, stem_stride_for(resolution),
                 activation=act)
    yield stem
    size, in_c, block = stem.out_size, g.stem, 0
    for st in g.stages:
        for i in range(st.repeats):
            stride = st.stride if i == 0 else 1
            if st.op == "id":
                layer = Layer("id", size, in_c, st.channels, 1, stride, block=block)
                yield layer
                size, in_c, block = layer.out_size, st.channels, block + 1
                continue
            layer = Layer(
                st.op, size, in_c, st.channels, st.kernel, stride, st.expansion,
                se_channels(in_c, st.se_ratio), st.skip and stride == 1 and in_c == st.channels, act, block,
            )
            yield layer
            size, in_c, block = layer.out_size, st.channels, block + 1
    yield Layer("head", size, in_c, g.head, activation=act)
    yield Layer("classifier", 1, g.head, num_classes)


def flops(genotype: Genotype, resolution: int = 224, num_classes: int = 1000) -> int:
    """Multiply-adds of one forward pass of one image (EfficientNet/MnasNet convention)."""
    return sum(layer.macs() for layer in walk(genotype, resolution, num_classes))


def params(genotype: Genotype, num_classes: int = 1000) -> int:
    """Trainable parameters (BN affine included, BN running statistics excluded), as torch counts them."""
    return sum(layer.params() for layer in walk(genotype, 224, num_classes))
