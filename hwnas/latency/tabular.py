"""Latency from a benchmark's published per-architecture measurements (no torch, no measuring).

NAS-Bench-201's 15,625 networks were timed on 27 device settings (HW-NAS-Bench, Li et al. 2021; HELP,
Lee et al. 2021): GPUs at batch 1/32/256, Xeon CPUs, phones, a Raspberry Pi 4, an FPGA and an ASIC
(Eyeriss, simulated). ``BenchmarkLatency("pixel3")`` is a latency source like a measured table
(``hwnas.latency.table.LatencyTable``): ``predict`` looks the network up. Names on the command line:
``--table nb201:DEVICE`` (``hwnas latency list`` prints them). The values are those published, in ms, for
the networks' CIFAR-10 input (32 px), one batch of the setting's batch size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwnas import tabular

PREFIX = "nb201:"
_KIND = {"1080ti": "GPU", "2080ti": "GPU", "titan_rtx": "GPU", "titanx": "GPU", "titanxp": "GPU",
         "gold_6226": "CPU", "gold_6240": "CPU", "silver_4114": "CPU", "silver_4210r": "CPU",
         "pixel2": "phone", "pixel3": "phone", "samsung_a50": "phone", "samsung_s7": "phone",
         "essential_ph_1": "phone", "raspi4": "Raspberry Pi 4", "fpga": "FPGA", "eyeriss": "ASIC (simulated)"}
RESOLUTION = 32


class BenchmarkLatencyError(tabular.TabularError):
    """An unknown device setting, or a network the benchmark did not time (one line)."""


def device_batch(device: str) -> tuple[str, int]:
    """('titanxp', 32) for 'titanxp_32'; phones, CPUs and the rest are batch 1 ('essential_ph_1' is a name)."""
    base, _, b = device.rpartition("_")
    if base in _KIND and _KIND[base] == "GPU" and b.isdigit():
        return base, int(b)
    return device, 1


def describe_device(device: str) -> str:
    base, batch = device_batch(device)
    return f"{_KIND.get(base, 'device')} {base}, batch {batch}"


class BenchmarkLatency:
    """The published latency of every NAS-Bench-201 network on one device setting."""

    def __init__(self, device: str, table: tabular.NB201Table | None = None) -> None:
        t = table or tabular.nb201()
        if device not in t.latency:
            raise BenchmarkLatencyError(f"unknown NAS-Bench-201 device {device!r} (choose from "
                                        f"{', '.join(sorted(t.latency))})")
        self.device, self.values, self._index = device, t.latency[device], t.index
        self.source = PREFIX + device
        base, batch = device_batch(device)
        self.metadata: dict[str, Any] = {"batch_size": batch, "device_name": base, "benchmark": "nb201",
                                         "resolution": RESOLUTION}

    def predict(self, arch: Any, resolution: int = RESOLUTION) -> float:
        key = arch.to_string() if hasattr(arch, "to_string") else str(arch)
        try:
            return float(self.values[self._index[key]])
        except KeyError:
            raise BenchmarkLatencyError(f"{self.source}: {key[:80]} is not a NAS-Bench-201 network") from None

    def check_space(self, space: Any) -> None:
        if getattr(space, "kind", None) != "nb201":
            raise BenchmarkLatencyError(f"{self.source} holds NAS-Bench-201 latencies; the search space is "
                                        f"{getattr(space, 'kind', space)!r} (use --space nb201)")

    def check_resolution(self, resolution: int) -> None:
        if resolution != RESOLUTION:
            raise BenchmarkLatencyError(f"{self.source} was measured at {RESOLUTION} px (CIFAR-10 input), not "
                                        f"{resolution} px")

    def describe(self) -> str:
        return f"NAS-Bench-201 published latency, {describe_device(self.device)}"

    def summary(self) -> dict[str, float]:
        v = np.asarray(self.values, dtype=float)
        return {"min_ms": float(v.min()), "median_ms": float(np.median(v)), "max_ms": float(v.max())}


def is_benchmark_source(name: str) -> bool:
    return name.startswith(PREFIX)


def load(name: str) -> BenchmarkLatency:
    """``nb201:DEVICE`` -> its source."""
    return BenchmarkLatency(name.removeprefix(PREFIX))
