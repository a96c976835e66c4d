"""Accuracy from a tabular benchmark: the published result of every architecture, looked up (no torch).

``--benchmark`` names (``BENCHMARKS``):

* ``nb201:cifar10``, ``nb201:cifar100``, ``nb201:imagenet16-120``: NAS-Bench-201 test accuracy after
  200 epochs (one training seed per architecture in the shipped table), space ``nb201``.
* ``macro``: NAS-Bench-Macro CIFAR-10 test accuracy after 50 epochs, space ``macro``. Three seeds per
  network: ``seed_mode="mean"`` (default) returns their mean; ``"random"`` one of the three per query,
  drawn from the evaluator's own generator, to reproduce training noise.
* ``transnas:TASK``: TransNAS-Bench-101 micro, the task's validation metric, space ``transnas-micro``,
  for the tasks whose metric is an accuracy or a score in [0, 1] (``TRANSNAS_SCORES``); room_layout's
  metric is a negative L2 loss, not offered as an accuracy.

Accuracies are returned as fractions in [0, 1] (the benchmarks publish percentages), like the proxy
trainer's, so reports, hypervolumes and rewards read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hwnas import tabular
from hwnas.search.run import EvalResult

NB201_BENCHMARKS = tuple(f"nb201:{d}" for d in tabular.NB201_DATASETS)
TRANSNAS_SCORES: dict[str, float] = {  # task -> divisor that makes its metric a fraction in [0, 1]
    "class_scene": 100.0, "class_object": 100.0, "jigsaw": 100.0, "segmentsemantic": 100.0,
    "normal": 1.0, "autoencoder": 1.0,
}
BENCHMARKS: tuple[str, ...] = (*NB201_BENCHMARKS, "macro", *(f"transnas:{t}" for t in TRANSNAS_SCORES))
SEED_MODES = ("mean", "random")


class BenchmarkError(tabular.TabularError):
    """An unknown benchmark, or an architecture the benchmark does not hold (one line)."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """What a benchmark implies for the problem: its space, input resolution and classes."""

    name: str
    space: str
    resolution: int
    num_classes: int
    description: str


def spec(name: str) -> BenchmarkSpec:
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r} (choose from {', '.join(BENCHMARKS)})")
    if name.startswith("nb201:"):
        ds = name.removeprefix("nb201:")
        res, classes = (16, 120) if ds == "imagenet16-120" else (32, 100 if ds == "cifar100" else 10)
        return BenchmarkSpec(name, "nb201", res, classes, f"NAS-Bench-201 {ds} test accuracy (200 epochs, 1 seed)")
    if name == "macro":
        return BenchmarkSpec(name, "macro", 32, 10, "NAS-Bench-Macro CIFAR-10 test accuracy (50 epochs, 3 seeds)")
    task = name.removeprefix("transnas:")
    return BenchmarkSpec(name, "transnas-micro", 0, 0, f"TransNAS-Bench-101 micro {task} validation metric")


class TabularEvaluator:
    """``evaluate(arch) -> EvalResult``: the benchmark's published accuracy of ``arch`` (a fraction)."""

    def __init__(self, name: str, seed_mode: str = "mean", seed: int = 0) -> None:
        self.spec = spec(name)
        if seed_mode not in SEED_MODES:
            raise BenchmarkError(f"unknown seed mode {seed_mode!r} (choose from {', '.join(SEED_MODES)})")
        if seed_mode == "random" and name != "macro":
            raise BenchmarkError(f"{name} publishes one result per architecture: seed mode random needs macro")
        self.name, self.seed_mode = name, seed_mode
        self.rng = np.random.default_rng(seed)
        self._seeds: np.ndarray | None = None
        if name.startswith("nb201:"):
            t = tabular.nb201()
            self._index, self._acc = t.index, t.acc[name.removeprefix("nb201:")] / 100.0
        elif name == "macro":
            m = tabular.macro()
            self._index, self._acc, self._seeds = m.index, m.mean_acc / 100.0, m.test_acc / 100.0
        else:
            task = name.removeprefix("transnas:")
            tn = tabular.transnas_micro()
            self._index, self._acc = tn.index, tn.val[task] / TRANSNAS_SCORES[task]

    @property
    def truth(self) -> np.ndarray:
        """Every architecture's accuracy (fraction), in the benchmark's index order (the 3-seed mean for macro)."""
        return self._acc

    def key(self, arch: Any) -> str:
        if self.spec.space == "macro":
            from hwnas.spaces.macro import MacroSpace

            return MacroSpace().code(arch)
        return arch.to_string() if hasattr(arch, "to_string") else str(arch)

    def index_of(self, arch: Any) -> int:
        k = self.key(arch)
        try:
            return self._index[k]
        except KeyError:
            raise BenchmarkError(f"{self.name} holds no architecture {k[:80]}") from None

    def evaluate(self, arch: Any) -> EvalResult:
        try:
            i = self.index_of(arch)
        except (BenchmarkError, ValueError) as e:  # outside the benchmark: a failed trial, not a dead study
            return EvalResult(None, str(e))
        if self.seed_mode == "random" and self._seeds is not None:
            s = int(self.rng.integers(self._seeds.shape[1]))
            return EvalResult(float(self._seeds[i, s]), details={"benchmark": self.name, "benchmark_index": i,
                                                                  "benchmark_seed": s})
        return EvalResult(float(self._acc[i]), details={"benchmark": self.name, "benchmark_index": i})

    def __call__(self, arch: Any) -> EvalResult:
        return self.evaluate(arch)

    def evaluate_many(self, archs: list[Any]) -> list[EvalResult]:
        return [self.evaluate(a) for a in archs]
