"""Timing layers and whole networks on a real device (torch).

CUDA: every measurement runs inside a CUDA graph, timed with CUDA events. Eager timing at small batch
measures Python launch overhead, not the GPU. Layers are timed in groups: one graph holds a group of
layers back to back with an external (in-graph) timing event between consecutive layers, so one replay
gives one sample of every layer of the group, each as it runs inside a graph -- no launch or replay cost
is counted per layer (the network model's intercept holds the one launch of a network). Replays repeat
until the group has run ``layer_target_ms`` of GPU time (between ``min_layer_replays`` and
``max_layer_replays``); the entry is the median. Where in-graph events are unsupported (a failure at the
first group says so), ``in_graph_events=False`` (``hwnas latency measure --no-in-graph-events``, recorded
in the table's timing settings) gives each layer a graph of its own with ``calls`` back-to-back calls.
A whole network is captured once per graph, exactly as it would be deployed, and timed with events
around ``replay``; median over ``replays``.

CPU: ``time.perf_counter`` around each call under ``torch.inference_mode``, after warm-up; the median of
repeats, which run until ``target_s`` seconds or ``max_repeats`` calls (at least ``min_repeats``).

Runtimes (``Setup.runtime``): ``torch`` runs the PyTorch modules (eager on CPU, CUDA graphs on GPU);
``onnxruntime`` (CPU only) exports each layer or network as ``hwnas export`` does (TorchScript exporter,
opset 17, eval mode, static shapes) and times ``InferenceSession.run`` on onnxruntime's CPU provider with
the same repeat-median timer -- a table for users who deploy with onnxruntime, whose fused kernels
(conv+BN+activation) run small layers several times faster than PyTorch eager at batch 1.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwnas import __version__
from hwnas.genotype import Genotype
from hwnas.latency.table import LatencyTable, pending_calibration, space_layers
from hwnas.model import Block, _conv_bn, build_model
from hwnas.walker import Layer

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Timing:
    ms: float  # median
    p10: float
    p90: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"ms": round(self.ms, 6), "p10": round(self.p10, 6), "p90": round(self.p90, 6), "n": self.n}


def _summary(samples_ms: list[float]) -> Timing:
    s = sorted(samples_ms)
    q = statistics.quantiles(s, n=10, method="inclusive") if len(s) > 1 else [s[0]] * 9
    return Timing(statistics.median(s), q[0], q[-1], len(s))


@dataclass(frozen=True)
class Setup:
    """Where and how to run: device, dtype, batch size, memory format."""

    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 1
    channels_last: bool = False
    threads: int | None = None  # CPU threads (torch.set_num_threads); None = torch's default
    runtime: str = "torch"  # or "onnxruntime" (CPU provider; see the module docstring)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {self.device!r} (expected cpu or cuda)")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r} (expected {', '.join(RUNTIMES)})")
        if self.runtime == "onnxruntime":
            if self.device != "cpu":
                raise ValueError("--runtime onnxruntime times onnxruntime's CPU provider: use --device cpu "
                                 "(on a GPU, `hwnas latency measure-model` times its CUDA provider)")
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise ValueError("--runtime onnxruntime needs the onnxruntime package (pip install onnxruntime)") \
                    from None
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (expected {', '.join(PRECISIONS)})")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("fp16 timing needs --device cuda (CPU kernels for fp16 are not a deployment target)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but torch sees no CUDA device")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def prepare(self, module: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        module = module.to(self.device, self.dtype).eval()
        x = x.to(self.device, self.dtype)
        if self.channels_last and x.dim() == 4:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if self.runtime == "onnxruntime":
            return OrtModule(module, x, self.threads or torch.get_num_threads()), x
        return module, x


class OrtModule:
    """``module`` exported to ONNX as ``hwnas export`` exports (TorchScript exporter, opset 17, eval mode;
    here with the static shape of ``x``) and run by onnxruntime (``provider``, CPU by default) with
    ``threads`` intra-op threads, sequentially, all graph optimisations on (onnxruntime's defaults). Called
    like the module on a CPU tensor (passed to onnxruntime without a copy), so the torch timers time it
    unchanged; on the CUDA provider, input and output stay on the GPU (``hwnas.export.ort_runner``)."""

    def __init__(self, module: nn.Module, x: torch.Tensor, threads: int,
                 provider: str = "CPUExecutionProvider") -> None:
        from hwnas.export import onnx_bytes, ort_runner, ort_session

        self.session = ort_session(onnx_bytes(module, x, dynamic_batch=False), provider, threads)
        self._run = ort_runner(self.session, x, "cuda" if provider == "CUDAExecutionProvider" else None)

    def __call__(self, x: torch.Tensor) -> Any:
        return self._run(x)[0]  # the logits (an OrtValue on the GPU when bound)


# ---- host memory allocator (CPU timing) ------------------------------------------------------------
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters (malloc.h)
HOST_ALLOCATOR_DEFAULT = "default"


def steady_host_allocator(policy: str = "reuse") -> str:
    """Make glibc's malloc keep and reuse freed memory, so large activations are not freshly mapped
    (and page-faulted) on some calls and recycled on others; returns the setting in force, as recorded
    in a CPU table's ``host_allocator``. Process-wide and one-way; a no-op off glibc (``"default"``).

    With glibc's defaults a block above its mmap threshold (128 KiB, raised dynamically up to 32 MiB as
    blocks are freed) is mapped anew and handed back on free, so whether a 3 MB activation costs
    page faults depends on the history of the process: the same network measured 22 ms or 35 ms from
    one build to the next on the 2-core EPYC (``benchmarks/investigations/cpu_allocator.py``). Deployments that care
    use jemalloc or tcmalloc, which reuse memory; ``reuse`` does the same with glibc (no mmap, no trim);
    ``threshold`` fixes the threshold at 32 MiB and turns trimming off (larger blocks are still mapped)."""
    import ctypes

    settings = {"reuse": ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)),
                "threshold": ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 2**31 - 1))}
    if policy not in settings:
        raise ValueError(f"unknown host allocator policy {policy!r} (expected {', '.join(settings)})")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return HOST_ALLOCATOR_DEFAULT
    libc = ctypes.CDLL(None)
    for param, value in settings[policy]:
        if libc.mallopt(param, value) != 1:
            raise OSError(f"glibc mallopt({param}, {value}) failed")
    return {"reuse": "glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1",
            "threshold": "glibc mallopt: M_MMAP_THRESHOLD=32MiB, M_TRIM_THRESHOLD=2^31-1"}[policy]


# ---- one device, several measuring processes ------------------------------------------------------
class DeviceLock:
    """A readers-writer lock shared by processes (``multiprocessing`` primitives of ``ctx``), writers first.

    Measuring workers (``measure_layers(workers=N)``) build, warm up and capture their layers under
    ``shared()`` -- host-bound work (cuDNN choosing kernels for each new shape, module building) that runs
    side by side in N processes -- and replay under ``exclusive()``, so while one process times, no other
    process has work on the device: CUDA contexts of different processes time-slice the GPU rather than
    overlap, and a slice of another context inside a timed replay would be counted as the layer's time.
    Whoever leaves a shared section must have synchronised its device work first. A writer waiting keeps
    new readers out (a replay never waits behind a stream of warm-ups)."""

    def __init__(self, ctx: Any) -> None:
        self._cond = ctx.Condition()
        self._readers = ctx.Value("i", 0, lock=False)
        self._writing = ctx.Value("i", 0, lock=False)
        self._waiting = ctx.Value("i", 0, lock=False)

    def shared(self) -> AbstractContextManager[None]:
        return _Section(self, exclusive=False)

    def exclusive(self) -> AbstractContextManager[None]:
        return _Section(self, exclusive=True)


class _Section(AbstractContextManager[None]):
    def __init__(self, lock: DeviceLock, exclusive: bool) -> None:
        self.lock, self.exclusive = lock, exclusive

    def __enter__(self) -> None:
        lk = self.lock
        with lk._cond:
            if self.exclusive:
                lk._waiting.value += 1
                while lk._writing.value or lk._readers.value:
                    lk._cond.wait()
                lk._waiting.value -= 1
                lk._writing.value = 1
            else:
                while lk._writing.value or lk._waiting.value:
                    lk._cond.wait()
                lk._readers.value += 1

    def __exit__(self, *exc: object) -> None:
        lk = self.lock
        with lk._cond:
            if self.exclusive:
                lk._writing.value = 0
            else:
                lk._readers.value -= 1
            lk._cond.notify_all()


class NoLock:
    """The lock of a process that has the device to itself."""

    def shared(self) -> AbstractContextManager[None]:
        return nullcontext()

    def exclusive(self) -> AbstractContextManager[None]:
        return nullcontext()


class Timer:
    """Times ``fn(x)``; ``repeat`` is how many calls one sample covers (CUDA graphs only). ``_lock`` (a
    ``DeviceLock`` in a measuring worker) decides when this process may time: every timing runs under
    its ``exclusive()``."""

    method: str = ""
    _lock: DeviceLock | NoLock = NoLock()

    def time(self, fn: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int = 1) -> Timing:
        raise NotImplementedError

    def time_group(self, items: Sequence[tuple[Callable[[torch.Tensor], Any], torch.Tensor]],
                   calls: int = 1) -> list[Timing]:
        """Time several layers; by default one after the other."""
        return [self.time(fn, x, calls) for fn, x in items]

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def profile(self) -> dict[str, float]:
        """Host seconds spent per phase so far (where the measuring time goes)."""
        return {k: round(v, 1) for k, v in getattr(self, "_profile", {}).items()}

    def _spent(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        prof = self.__dict__.setdefault("_profile", {})
        prof[phase] = prof.get(phase, 0.0) + now - since
        return now


class CudaGraphTimer(Timer):
    method = "cuda-graph+events"

    def __init__(self, replays: int = 50, warmup: int = 3, layer_target_ms: float = 25.0,
                 min_layer_replays: int = 5, max_layer_replays: int = 30, in_graph_events: bool = True) -> None:
        self.replays, self.warmup = replays, warmup
        self.layer_target_ms, self.min_layer_replays, self.max_layer_replays = (
            layer_target_ms, min_layer_replays, max_layer_replays)
        self.in_graph_events = in_graph_events
        self._in_graph_worked = False  # a group was timed in-graph (private: not a setting)

    def time_group(self, items: Sequence[tuple[Callable[[torch.Tensor], Any], torch.Tensor]],
                   calls: int = 1) -> list[Timing]:
        if not self.in_graph_events:
            return [self.time(fn, x, calls) for fn, x in items]
        try:
            timings = self._time_group_in_graph(items)
            self._in_graph_worked = True
            return timings
        except RuntimeError as e:
            if "out of memory" in str(e).lower() or self._in_graph_worked:
                raise
            # no silent switch of method (other processes, or a resume, would time the same table the other
            # way, and the table records its method): the user chooses, and the choice is recorded
            raise RuntimeError(f"in-graph timing events failed at the first group ({str(e).splitlines()[0][:160]}):"
                               " if this driver lacks them, measure with --no-in-graph-events (one graph per layer)"
                               ) from e

    def _time_group_in_graph(self, items: Sequence[tuple[Callable[[torch.Tensor], Any], torch.Tensor]]
                             ) -> list[Timing]:
        t = time.perf_counter()
        with self._lock.shared():  # host-bound: other measuring processes may do the same meanwhile
            t = self._spent("wait", t)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(self.warmup):
                    for fn, x in items:
                        fn(x)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            t = self._spent("warmup", t)
            marks = [torch.cuda.Event(enable_timing=True, external=True) for _ in range(len(items) + 1)]
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                marks[0].record()
                for (fn, x), mark in zip(items, marks[1:], strict=True):
                    fn(x)
                    mark.record()
            torch.cuda.synchronize()
            t = self._spent("capture", t)
        with self._lock.exclusive():  # the device to this process alone
            t = self._spent("wait", t)
            graph.replay()  # uploads the graph; also the pilot that sets the number of replays
            torch.cuda.synchronize()
            t = self._spent("upload", t)
            group_ms = max(marks[0].elapsed_time(marks[-1]), 1e-3)
            reps = min(self.max_layer_replays,
                       max(self.min_layer_replays, math.ceil(self.layer_target_ms / group_ms)))
            samples: list[list[float]] = [[] for _ in items]
            for _ in range(reps):
                graph.replay()
                marks[-1].synchronize()
                for i, s in enumerate(samples):
                    s.append(marks[i].elapsed_time(marks[i + 1]))
        del graph
        self._spent("replay", t)
        return [_summary(s) for s in samples]

    def time(self, fn: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int = 1) -> Timing:
        with self._lock.shared():  # warm-up and capture: host-bound, side by side with other processes
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(self.warmup):
                    fn(x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                for _ in range(calls):
                    fn(x)
            torch.cuda.synchronize()
        with self._lock.exclusive():  # the device to this process alone
            graph.replay()  # first replay uploads the graph
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(self.replays)]
            for start, end in events:
                start.record()
                graph.replay()
                end.record()
            torch.cuda.synchronize()
        samples = [s.elapsed_time(e) / calls for s, e in events]
        del graph
        return _summary(samples)


class CudaEagerTimer(Timer):
    method = "cuda-eager+events"

    def __init__(self, replays: int = 50, warmup: int = 3) -> None:
        self.replays, self.warmup = replays, warmup

    def time(self, fn: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int = 1) -> Timing:
        with self._lock.exclusive(), torch.inference_mode():
            for _ in range(self.warmup):
                fn(x)
            torch.cuda.synchronize()
            samples = []
            for _ in range(self.replays):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(x)
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
        return _summary(samples)


class CpuTimer(Timer):
    method = "cpu-perf_counter-median"

    def __init__(self, min_repeats: int = 5, max_repeats: int = 50, target_s: float = 0.05, warmup: int = 2) -> None:
        self.min_repeats, self.max_repeats, self.target_s, self.warmup = min_repeats, max_repeats, target_s, warmup

    def time(self, fn: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int = 1) -> Timing:
        with self._lock.exclusive(), torch.inference_mode():
            for _ in range(self.warmup):
                fn(x)
            samples: list[float] = []
            t_end = time.perf_counter() + self.target_s
            while len(samples) < self.max_repeats and (len(samples) < self.min_repeats or time.perf_counter() < t_end):
                t0 = time.perf_counter()
                fn(x)
                samples.append((time.perf_counter() - t0) * 1e3)
        return _summary(samples)


def default_timer(setup: Setup, quick: bool = False, in_graph_events: bool = True) -> Timer:
    if setup.device == "cuda":
        return CudaGraphTimer(replays=20, layer_target_ms=5.0, min_layer_replays=3, max_layer_replays=10,
                              in_graph_events=in_graph_events) if quick else \
            CudaGraphTimer(in_graph_events=in_graph_events)
    return CpuTimer(min_repeats=3, max_repeats=20, target_s=0.02) if quick else CpuTimer()


# ---- modules for single layers -------------------------------------------------------------------
def layer_module(layer: Layer) -> nn.Module:
    """The module the network runs for this layer, alone (the head includes pooling and flattening). A plain
    identity (``Layer.noop``) runs nothing and is never measured (latency tables price it at 0): ValueError."""
    if layer.noop:
        raise ValueError(f"layer {layer.key()!r} is a plain identity: it runs nothing, so it has no entry to measure")
    if layer.kind == "stem":
        return _conv_bn(layer.in_c, layer.out_c, layer.kernel, layer.stride, act=layer.activation)
    if layer.kind == "head":
        return nn.Sequential(_conv_bn(layer.in_c, layer.out_c, 1, act=layer.activation), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(1))
    if layer.kind == "classifier":
        return nn.Linear(layer.in_c, layer.out_c)
    return Block(layer)


def layer_input(layer: Layer, batch_size: int) -> torch.Tensor:
    if layer.kind == "classifier":
        return torch.randn(batch_size, layer.in_c)
    return torch.randn(batch_size, layer.in_c, layer.size, layer.size)


def time_layer(layer: Layer, setup: Setup, timer: Timer, calls: int) -> Timing:
    return time_layers([layer], setup, timer, calls)[0]


def time_layers(layers: Sequence[Layer], setup: Setup, timer: Timer, calls: int) -> list[Timing]:
    """Time a group of layers, each in isolation (its own module and input), in one go of ``timer``."""
    t = time.perf_counter()
    with timer._lock.shared():
        t = timer._spent("wait", t)
        with torch.device(setup.device):  # weights initialised where they run (no host-to-device copies)
            items = [setup.prepare(layer_module(layer), layer_input(layer, setup.batch_size)) for layer in layers]
        if setup.device == "cuda":
            torch.cuda.synchronize()  # no initialising kernel of ours may run into another process's timing
        t = timer._spent("build", t)
    out = timer.time_group(items, calls)
    timer._spent("timing", t)
    return out


def time_network(genotype: Genotype, resolution: int, num_classes: int, setup: Setup, timer: Timer) -> Timing:
    with timer._lock.shared():
        model = build_model(genotype, num_classes, input_size=resolution, dropout=0.0)
        module, x = setup.prepare(model, torch.randn(setup.batch_size, 3, resolution, resolution))
        if setup.device == "cuda":
            torch.cuda.synchronize()
    return timer.time(module, x, 1)


def layer_groups(layers: Iterable[Layer], setup: Setup, timer: Timer, group_layers: int = 64,
                 group_bytes: int = 4 << 30) -> Iterator[list[Layer]]:
    """The layers as the timer takes them: on CUDA groups of at most ``group_layers`` whose inputs (and
    their expansions) take at most ``group_bytes``, one graph each; elsewhere one layer at a time."""
    limit = group_layers if isinstance(timer, CudaGraphTimer) else 1
    elem = torch.finfo(setup.dtype).bits // 8
    group: list[Layer] = []
    size = 0
    for layer in layers:
        nbytes = setup.batch_size * layer.in_c * layer.size * layer.size * elem * 4  # input + its expansions
        if group and (len(group) >= limit or size + nbytes > group_bytes):
            yield group
            group, size = [], 0
        group.append(layer)
        size += nbytes
    if group:
        yield group


def measure_layers(
    layers: Iterable[Layer], setup: Setup, timer: Timer, on_result: Callable[[Layer, Timing], None],
    calls_per_graph: int = 10, group_layers: int = 64, group_bytes: int = 4 << 30, workers: int = 1,
) -> None:
    """Time each layer in isolation; ``on_result`` receives each (the caller stores and checkpoints).
    On CUDA, layers go to the timer in groups (``layer_groups``).

    Where the time goes on an H100 (benchmarks/measure_speed.py, fp16, batch 1): ~85 % is the first call
    of each new layer shape in the warm-up (cuDNN choosing and building its kernels, host work); the same
    keys a second time run at ~280 layers/s. Building, warming up and capturing groups in 8 threads (the
    GPU idle, timing one group at a time) measured 0.39x as fast: that host work does not run in parallel
    across threads, and cuDNN's caches are per thread. ``workers`` > 1 does it in that many processes
    instead (``measure_in_workers``), each with its own CUDA context, cuDNN handle and interpreter."""
    calls = calls_per_graph if isinstance(timer, CudaGraphTimer) else 1
    # workers hold their groups at the same time: together no more device memory than one process
    groups = layer_groups(layers, setup, timer, group_layers, group_bytes // workers)
    if workers > 1:
        for layer, t in measure_in_workers(list(groups), setup, timer, calls, workers):
            on_result(layer, t)
        return
    torch.manual_seed(0)
    for group in groups:
        for layer, t in zip(group, time_layers(group, setup, timer, calls), strict=True):
            on_result(layer, t)


NetworkItem = tuple[Genotype, int]  # a network to time end to end: genotype, resolution


def _worker_main(rank: int, setup: Setup, timer_cls: type[Timer], timer_settings: dict[str, Any], calls: int,
                 num_classes: int, lock: DeviceLock, tasks: Any, results: Any, parent: int) -> None:
    """A measuring worker: takes (index, item) from ``tasks`` until None -- an item is a group of layers
    or a network (genotype string, resolution) -- and puts (index, timings) on ``results`` as each is
    timed (a list for a group, one Timing for a network), then ("done", profile) -- or ("error", why).
    Stops when its parent ``parent`` is gone (killed without cleaning up), not to keep the device busy."""
    import queue

    try:
        torch.set_num_threads(setup.threads or 1)
        torch.manual_seed(rank)
        timer = timer_cls(**timer_settings)
        timer._lock = lock
        while os.getppid() == parent:
            try:
                task = tasks.get(timeout=2)
            except queue.Empty:  # the parent died before it queued everything
                continue
            if task is None:
                break
            index, item = task
            if isinstance(item, list):
                results.put((index, time_layers(item, setup, timer, calls)))
            else:
                g, res = item
                results.put((index, time_network(Genotype.from_string(g), res, num_classes, setup, timer)))
        results.put(("done", timer.profile()))
    except BaseException as e:  # reported to the parent, which raises it
        results.put(("error", _why(e)))


def in_workers(items: Sequence[list[Layer] | NetworkItem], setup: Setup, timer: Timer, workers: int, calls: int = 1,
               num_classes: int = 1000) -> Iterator[tuple[int, Any]]:
    """Time ``items`` -- groups of layers (as ``time_layers``) or networks (as ``time_network``) -- in
    ``workers`` fresh (spawned) processes that share the device through one ``DeviceLock``: each builds,
    warms up and captures its next item while others do the same, and replays alone. Yields (index of
    the item, its timings) as each arrives, in completion order, so an interrupt loses only the items
    in flight. The workers' host seconds per phase are added to ``timer.profile()`` (summed over
    workers, so they exceed the wall time; "wait" is time spent waiting for the lock). A worker that
    fails or dies raises ``TimingProcessError``; the others are stopped."""
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")
    lock = DeviceLock(ctx)
    tasks, results = ctx.Queue(), ctx.Queue()
    n = min(workers, len(items))
    for i, item in enumerate(items):
        tasks.put((i, item if isinstance(item, list) else (item[0].to_string(), item[1])))
    for _ in range(n):
        tasks.put(None)
    procs = [ctx.Process(target=_worker_main, args=(rank, setup, type(timer), timer.settings(), calls, num_classes,
                                                    lock, tasks, results, os.getpid()), daemon=True)
             for rank in range(n)]
    for proc in procs:
        proc.start()
    prof = timer.__dict__.setdefault("_profile", {})
    finished = 0
    try:
        while finished < n:
            try:
                index, payload = results.get(timeout=5)
            except queue.Empty:
                dead = [p.exitcode for p in procs if not p.is_alive() and p.exitcode != 0]  # 0: its "done" is due
                if dead:
                    raise TimingProcessError(f"timing worker died (exit code {dead[0]})") from None
                continue
            if index == "done":
                finished += 1
                for phase, sec in payload.items():
                    prof[phase] = prof.get(phase, 0.0) + sec
            elif index == "error":
                raise TimingProcessError(f"timing worker failed: {payload}")
            else:
                yield index, payload
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        # the tasks nobody will take stay unsent: without this, the queue's feeder thread, blocked on a full
        # pipe (megabytes of layer groups), would keep this process from exiting after an error or Ctrl-C
        tasks.cancel_join_thread()


def measure_in_workers(groups: Sequence[list[Layer]], setup: Setup, timer: Timer, calls: int, workers: int
                       ) -> Iterator[tuple[Layer, Timing]]:
    """``in_workers`` for groups of layers: yields (layer, timing) as each group arrives."""
    for i, timings in in_workers(groups, setup, timer, workers, calls):
        yield from zip(groups[i], timings, strict=True)


# ---- end-to-end with several runtimes ------------------------------------------------------------
def measure_model_runtimes(genotype: Genotype, resolution: int, num_classes: int, setup: Setup) -> dict[str, Any]:
    """One network end to end: eager, CUDA graph (on CUDA) and onnxruntime (when installed)."""
    out: dict[str, Any] = {}
    if setup.device == "cuda":
        out["torch-eager"] = time_network(genotype, resolution, num_classes, setup, CudaEagerTimer()).to_dict()
        out["torch-cuda-graph"] = time_network(genotype, resolution, num_classes, setup, CudaGraphTimer()).to_dict()
    else:
        out["torch-eager"] = time_network(genotype, resolution, num_classes, setup, CpuTimer()).to_dict()
    try:
        ort = time_onnxruntime(genotype, resolution, num_classes, setup)
    except Exception as e:  # an exporter/runtime gap must not hide the torch figures
        ort = {"onnxruntime": {"skipped": f"onnxruntime failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"}}
    if ort is not None:
        out.update(ort)
    return out


def time_onnxruntime(genotype: Genotype, resolution: int, num_classes: int, setup: Setup) -> dict[str, Any] | None:
    """The network exported as ``hwnas export`` does, timed on onnxruntime (None: onnxruntime not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    model = build_model(genotype, num_classes, input_size=resolution, dropout=0.0).eval()
    if setup.precision == "fp16":
        model = model.half()
    x = torch.randn(setup.batch_size, 3, resolution, resolution, dtype=setup.dtype)
    available = ort.get_available_providers()
    provider = "CUDAExecutionProvider" if setup.device == "cuda" and "CUDAExecutionProvider" in available \
        else "CPUExecutionProvider"
    if setup.precision == "fp16" and provider == "CPUExecutionProvider":
        return {"onnxruntime": {"skipped": "fp16 needs onnxruntime's CUDA provider (install hwnas[gpu])"}}
    run = OrtModule(model, x, setup.threads or torch.get_num_threads(), provider)  # as `--runtime onnxruntime`
    t = CpuTimer(min_repeats=10, max_repeats=200, target_s=0.5, warmup=3).time(run, x)
    return {f"onnxruntime-{provider.removesuffix('ExecutionProvider').lower()}": t.to_dict()}


# ---- metadata ------------------------------------------------------------------------------------
def device_info(setup: Setup) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                            "cpu": _cpu_name(), "threads": torch.get_num_threads()}
    if setup.runtime == "onnxruntime":
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    if setup.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"device_name": props.name, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                 "driver": _nvidia_driver(), "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "cuda_math": cuda_math()}
    else:
        info |= {"device_name": info["cpu"]}
    return info


def cuda_math() -> dict[str, Any]:
    """How this process computes on CUDA, which decides what "fp32" times: PyTorch's defaults (not changed by
    hwnas) run fp32 convolutions in TF32 on Ampere and later GPUs (``torch.backends.cudnn.allow_tf32``) and
    fp32 matmuls in full precision (``torch.get_float32_matmul_precision() == "highest"``), with cuDNN's
    autotuner off. fp16 tables are unaffected."""
    return {"fp32_convolutions": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
            "fp32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _nvidia_driver() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def hwnas_version() -> str:
    return __version__


# ---- CPU: measuring in young processes ------------------------------------------------------------
@dataclass(frozen=True)
class YoungTask:
    """One fresh process's share of a CPU table: a probe network, some layers, some calibration networks."""

    layers: list[Layer]
    networks: list[tuple[Genotype, int]]
    probe: tuple[Genotype, int] | None
    setup: Setup
    timer_settings: dict[str, Any]
    host_allocator: str
    num_classes: int


def _why(e: BaseException) -> str:
    """An exception in one line, for a timing process to report to its parent."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


class TimingProcessError(RuntimeError):
    """A timing process (a fresh CPU process, a measuring worker) failed or died; what it measured before
    is kept."""


def _young_process_main(task: YoungTask, results: Any) -> None:
    """Runs in a fresh process: puts ("probe" | "layer" | "network", index, Timing) on ``results`` as each
    measurement finishes (so an interrupt loses none), then ("done", -1, None) or ("error", -1, why)."""
    try:
        if task.host_allocator != HOST_ALLOCATOR_DEFAULT:
            steady_host_allocator()
        if task.setup.threads:
            torch.set_num_threads(task.setup.threads)
        torch.manual_seed(0)
        timer = CpuTimer(**task.timer_settings)
        if task.probe:
            results.put(("probe", -1, time_network(*task.probe, task.num_classes, task.setup, timer)))
        for i, layer in enumerate(task.layers):
            results.put(("layer", i, time_layer(layer, task.setup, timer, 1)))
        for i, (g, res) in enumerate(task.networks):
            results.put(("network", i, time_network(g, res, task.num_classes, task.setup, timer)))
        results.put(("done", -1, None))
    except BaseException as e:  # reported to the parent, which raises it
        results.put(("error", -1, _why(e)))


def _in_young_processes(tasks: Sequence[YoungTask]) -> Iterator[tuple[str, Any, Timing]]:
    """Run each task in a fresh (spawned) process, one at a time; yield (kind, item, timing) as each
    measurement arrives: ("probe", (genotype, resolution)), ("layer", Layer), ("network", (genotype, res))."""
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")
    for task in tasks:
        results = ctx.Queue()
        proc = ctx.Process(target=_young_process_main, args=(task, results), daemon=True)
        proc.start()
        try:
            while True:
                try:
                    kind, i, t = results.get(timeout=5)
                except queue.Empty:
                    if not proc.is_alive():
                        raise TimingProcessError(f"CPU timing process died (exit code {proc.exitcode})") from None
                    continue
                if kind == "done":
                    break
                if kind == "error":
                    raise TimingProcessError(f"CPU timing process failed: {t}")
                item = task.probe if kind == "probe" else task.layers[i] if kind == "layer" else task.networks[i]
                yield kind, item, t
        finally:
            if proc.is_alive():
                proc.terminate()
            proc.join()


def young_tasks(layers: Sequence[Layer], networks: Sequence[tuple[Genotype, int]], per_process: int,
                probe: tuple[Genotype, int] | None, setup: Setup, timer: CpuTimer, host_allocator: str,
                num_classes: int) -> list[YoungTask]:
    """``per_process`` layers per process; the calibration networks spread evenly over the processes, so
    they see the machine in the states the layers saw (a shared VM drifts by 10 % and more over the
    20 minutes a table takes); every process also times ``probe`` first, which records that drift."""
    n = max(1, math.ceil(len(layers) / per_process))
    per_net = math.ceil(len(networks) / n)
    return [YoungTask(list(layers[i * per_process:(i + 1) * per_process]),
                      list(networks[i * per_net:(i + 1) * per_net]), probe, setup, timer.settings(), host_allocator,
                      num_classes) for i in range(n)]


# ---- building a whole table (resumable) ----------------------------------------------------------
def build_table(
    table: LatencyTable, setup: Setup, timer: Timer, calibration: list[Genotype],
    checkpoint: Callable[[LatencyTable], None], progress: Callable[[str, int, int], None] | None = None,
    calls_per_graph: int = 10, checkpoint_every_s: float = 15.0, layers_per_process: int = 0, workers: int = 1,
) -> LatencyTable:
    """Measure what ``table`` lacks: every layer of its space at its resolutions, then the calibration
    networks end to end, then fit the overhead model. ``checkpoint`` is called every
    ``checkpoint_every_s`` seconds and at the end (also when interrupted), so no measurement is lost.

    ``layers_per_process`` (CPU only; 0 = everything in this process): time the layers in fresh processes
    of that many layers each, with the calibration networks spread over the same processes
    (``young_tasks``), so every measurement sees a young process, as ``hwnas latency validate`` and a
    freshly started server do; ``metadata["probe"]`` holds each process's time for one fixed network.
    Measured on the 2-core EPYC: one process that has timed 44,000 layers runs the same networks ~10 %
    slower than a fresh one (3 % after 5,000), which biased the fitted overhead and left the CPU table's
    validation MAPE at 12.5 % (6.7 % with the calibration networks re-measured in a fresh process).

    ``workers`` > 1 (CUDA): the layers, then the calibration networks, are timed by that many processes
    sharing the GPU (``in_workers``), one process timing at a time."""
    space = table.space
    todo = [layer for r in table.resolutions for layer in space_layers(space, r, table.num_classes)
            if layer.key() not in table.entries]
    cal_todo = pending_calibration(table, calibration)
    total = len(todo) + len(cal_todo)
    done, last_save, t_start = 0, time.monotonic(), time.monotonic()
    spent0 = float(table.metadata.get("measure_seconds", 0.0))

    def tick(what: str) -> None:
        nonlocal done, last_save
        done += 1
        table.metadata["measure_seconds"] = round(spent0 + time.monotonic() - t_start, 1)
        if progress:
            progress(what, done, total)
        if time.monotonic() - last_save > checkpoint_every_s:
            checkpoint(table)
            last_save = time.monotonic()

    def store(layer: Layer, t: Timing) -> None:
        table.entries[layer.key()] = t.to_dict()
        tick("layers")

    def store_network(g: Genotype, res: int, t: Timing) -> None:
        table.calibration.append({"genotype": g.to_string(), "resolution": res, **t.to_dict()})
        tick("calibration")

    allocator = str(table.metadata.get("host_allocator", HOST_ALLOCATOR_DEFAULT))
    if total:
        table.metadata["measure_workers"] = workers  # this run's (not a checked setting: what is timed is the same)
    try:
        if layers_per_process > 0 and isinstance(timer, CpuTimer) and total:
            probe = (calibration[0], table.resolutions[0]) if calibration else None
            probes = table.metadata.setdefault("probe", {"genotype": probe[0].to_string() if probe else None,
                                                         "resolution": table.resolutions[0], "ms": []})
            for kind, item, t in _in_young_processes(young_tasks(
                    todo, cal_todo, layers_per_process, probe, setup, timer, allocator, table.num_classes)):
                if kind == "probe":
                    probes["ms"].append(round(t.ms, 4))
                elif kind == "layer":
                    store(item, t)
                else:
                    store_network(*item, t)
        else:
            measure_layers(todo, setup, timer, store, calls_per_graph, workers=workers)
            if workers > 1 and cal_todo:
                for i, t in in_workers(cal_todo, setup, timer, workers, num_classes=table.num_classes):
                    store_network(*cal_todo[i], t)
            else:
                for g, res in cal_todo:
                    store_network(g, res, time_network(g, res, table.num_classes, setup, timer))
        table.fit_overhead()
    finally:
        table.metadata["measure_seconds"] = round(spent0 + time.monotonic() - t_start, 1)
        if timer.profile():
            table.metadata["measure_profile_s"] = timer.profile()  # this run's host seconds per phase
        checkpoint(table)
    return table
