"""Named reference networks, written as genotype strings (they are points of the default space)."""

from __future__ import annotations

from hwnas.genotype import Genotype, GenotypeError, parse_genotype

_REFERENCES: dict[str, tuple[str, str]] = {
    "efficientnet-b0": (
        "swish,stem32,ds_r1_k3_s1_c16_se0.25,ir_r2_k3_s2_e6_c24_se0.25,ir_r2_k5_s2_e6_c40_se0.25,"
        "ir_r3_k3_s2_e6_c80_se0.25,ir_r3_k5_s1_e6_c112_se0.25,ir_r4_k5_s2_e6_c192_se0.25,"
        "ir_r1_k3_s1_e6_c320_se0.25,head1280",
        "EfficientNet-B0 (Tan & Le 2019); torchvision efficientnet_b0",
    ),
    "mnasnet-a1": (
        "relu,stem32,ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24,ir_r3_k5_s2_e3_c40_se0.25,ir_r4_k3_s2_e6_c80,"
        "ir_r2_k3_s1_e6_c112_se0.25,ir_r3_k5_s2_e6_c160_se0.25,ir_r1_k3_s1_e6_c320,head1280",
        "MnasNet-A1 (Tan et al. 2019), the paper's SE variant; timm mnasnet_a1",
    ),
    "mnasnet-b1": (
        "relu,stem32,ds_r1_k3_s1_c16,ir_r3_k3_s2_e3_c24,ir_r3_k5_s2_e3_c40,ir_r3_k5_s2_e6_c80,"
        "ir_r2_k3_s1_e6_c96,ir_r4_k5_s2_e6_c192,ir_r1_k3_s1_e6_c320,head1280",
        "MnasNet-B1 (no SE); torchvision mnasnet1_0",
    ),
    "mobilenetv2": (
        "relu6,stem32,ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24,ir_r3_k3_s2_e6_c32,ir_r4_k3_s2_e6_c64,"
        "ir_r3_k3_s1_e6_c96,ir_r3_k3_s2_e6_c160,ir_r1_k3_s1_e6_c320,head1280",
        "MobileNetV2 (Sandler et al. 2018); torchvision mobilenet_v2",
    ),
}

REFERENCE_NAMES: tuple[str, ...] = tuple(_REFERENCES)


def reference(name: str) -> Genotype:
    """The genotype of a named reference network (case-insensitive; '_' and '-' are equivalent)."""
    key = name.strip().lower().replace("_", "-")
    if key not in _REFERENCES:
        raise GenotypeError(f"unknown reference {name!r} (known: {', '.join(REFERENCE_NAMES)})")
    return parse_genotype(_REFERENCES[key][0])


def describe_reference(name: str) -> str:
    return _REFERENCES[name][1]
