"""Proxy training: genotype -> accuracy, the evaluator contract of the search (airbench-style loop).

* Data lives on the training device as uint8 (N, 3, H, W), reflect-padded once; every batch is a slice of
  a seeded ``randperm``, cropped and flipped by batched tensor ops. No DataLoader, no per-image Python.
* One flat loop per candidate: SGD with Nesterov momentum (our own foreach update, whose learning rate is
  a device tensor so the step can live in a CUDA graph), label smoothing, linear warm-up then linear
  decay to zero (a one-cycle shape suits short budgets), weight decay on conv/linear weights only.
* On CUDA the whole training step (forward, backward, optimizer) is captured in one CUDA graph, with
  channels_last and bf16 autocast (``Recipe.precision="auto"``); several candidates train in lock-step on
  separate streams sharing one input batch, so their kernels overlap. On CPU the same loop runs eagerly
  in fp32, channels_last too (tests, CI). Measured on an H100 (benchmarks/train_variants.py, EfficientNet-B0
  at 32 px, batch 512): plain fp32 eager 14.1k img/s; channels_last + graph 28.9k; + bf16 autocast 39.2k; fp16
  autocast 45.1k but it needs loss scaling, whose overflow checks do not fit a graph without host syncs.
* A candidate that fails (CUDA out of memory, a non-finite loss) returns ``Metrics`` with ``failure``
  set; the others keep training.
"""

from __future__ import annotations

import math
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.data import pool_dir_prefix, remove_stale_pool_dirs
from hwnas.genotype import Genotype
from hwnas.model import build_model
from hwnas.units import is_integer, is_number

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters, with units. ``lr`` is the peak learning rate for a batch of 512 images and
    scales linearly with ``batch_size``."""

    batch_size: int = 256
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # on conv/linear weights, not on BN or biases
    label_smoothing: float = 0.1
    warmup: float = 0.15  # fraction of the steps spent warming up linearly from 0
    crop_pad: int = 4  # pixels of reflect padding for random crops (0 = no crops)
    flip: bool = True
    dropout: float = 0.0
    drop_path: float = 0.0
    zero_init_residual: bool = True  # residual blocks start as the identity (last BN scale 0)
    eval_batch_size: int | None = None  # None: batch_size (the shapes training used, cuDNN's caches warm)
    precision: str = "auto"  # autocast dtype on CUDA: auto (bf16 where supported), bf16 or fp32; CPU: fp32

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.lr <= 0 or not 0 <= self.warmup < 1 or self.crop_pad < 0:
            raise ValueError(f"invalid recipe: {self}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown training precision {self.precision!r} (expected {', '.join(PRECISIONS)})")

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype this recipe trains with on ``device`` (None: plain fp32)."""
        if device.type != "cuda" or self.precision == "fp32":
            return None
        if self.precision == "auto" and not torch.cuda.is_bf16_supported():
            return None
        return torch.bfloat16


@dataclass(frozen=True)
class Budget:
    """How long each candidate trains: ``epochs`` (may be fractional) or wall-clock ``seconds`` of
    training (candidates that train concurrently share that wall-clock time)."""

    epochs: float | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.seconds is None):
            raise ValueError("a budget is either epochs or seconds")
        if (self.epochs or self.seconds or 0) <= 0:
            raise ValueError("a budget must be positive")

    def describe(self) -> str:
        return f"{self.epochs:g} epochs" if self.epochs is not None else f"{self.seconds:g} s"


@dataclass
class Metrics:
    genotype: str
    seed: int
    val_acc: float | None = None  # fraction correct on the held-out split
    train_seconds: float = 0.0
    epochs: float = 0.0
    steps: int = 0
    images_per_s: float = 0.0
    final_loss: float | None = None
    failure: str | None = None
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainState:
    """Where an interrupted training stopped, at a step boundary: enough to continue it exactly as the
    uninterrupted run would have gone on (same recipe, budget, seed, data and device type; on CPU the result is
    bit-identical, on CUDA the batches and schedule are, and dropout masks may differ). ``to_dict`` holds only
    tensors, numbers, strings and lists, so it loads with ``torch.load(weights_only=True)``."""

    step: int  # optimizer steps done
    total: int  # steps of the whole schedule (the learning rate follows it)
    epoch_start: int  # the step at which the current epoch began
    perm: torch.Tensor | None  # the current epoch's image order (None: the next epoch has not begun)
    generator: torch.Tensor  # the batch generator's state (crops, flips, orders)
    torch_rng: torch.Tensor  # torch's global CPU generator (dropout, drop-path on CPU)
    momentum: dict[str, torch.Tensor]  # SGD momentum per parameter name
    loss_sum: float  # training loss summed over the current epoch's steps so far
    final_loss: float | None  # the last finished epoch's mean loss
    train_seconds: float  # training time spent so far
    settings: dict[str, Any]  # what must match to resume (``Evaluator.resume_settings``)
    weights: dict[str, torch.Tensor] | None = None  # the model's state_dict (saved beside, not in ``to_dict``)

    @classmethod
    def saved_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "weights"]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.saved_fields()}

    @classmethod
    def from_dict(cls, d: Any, weights: dict[str, torch.Tensor]) -> TrainState:
        """Read back ``to_dict``'s output, with the model's ``weights``; a damaged one is a ValueError naming the
        field."""
        if not isinstance(d, dict):
            raise ValueError(f"the resume state must be an object, got {type(d).__name__}")
        missing = [k for k in cls.saved_fields() if k not in d]
        if missing:
            raise ValueError(f"the resume state lacks {', '.join(missing)}")

        def count(v: Any) -> bool:
            return is_integer(v, low=0)  # at most 2^63 - 1

        checks: dict[str, tuple[Callable[[Any], bool], str]] = {
            "step": (count, "a count"), "total": (lambda v: count(v) and v > 0, "a positive count"),
            "epoch_start": (count, "a count"),
            "perm": (lambda v: v is None or (isinstance(v, torch.Tensor) and v.dtype == torch.int64 and v.dim() == 1),
                     "an int64 vector or null"),
            "generator": (lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8, "a uint8 tensor"),
            "torch_rng": (lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8, "a uint8 tensor"),
            "momentum": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                               for k, t in v.items()), "a mapping name -> tensor"),
            # a diverged epoch's sum may be inf or NaN (the epoch's end fails the training); an int, a float's value
            "loss_sum": (lambda v: isinstance(v, float) or is_number(v), "a number"),
            "final_loss": (lambda v: v is None or is_number(v), "a finite number or null"),
            "train_seconds": (lambda v: is_number(v, low=0), "a non-negative number"),
            "settings": (lambda v: isinstance(v, dict), "an object"),
        }
        for k, (ok, what) in checks.items():
            if not ok(d[k]):
                raise ValueError(f"resume state: {k} must be {what}, got {type(d[k]).__name__}")
        if not d["epoch_start"] <= d["step"] <= d["total"]:
            raise ValueError(f"resume state: step {d['step']} is not between epoch_start {d['epoch_start']} "
                             f"and total {d['total']}")
        return cls(**{k: d[k] for k in cls.saved_fields()}, weights=weights)


class _StepBoundary:
    """Holds the KeyboardInterrupt of a SIGINT or SIGTERM (as ``hwnas`` maps it) until the training step under
    way is whole, so an interrupted training stops where it can be resumed exactly. A second signal does not
    wait. Only in the main thread (where Python runs signal handlers) and only over handlers written in
    Python: an ignored or default signal stays as it is (pool workers ignore SIGINT)."""

    def __init__(self) -> None:
        self.saved: dict[int, Any] = {}
        self.pending: tuple[int, Any] | None = None

    def __enter__(self) -> _StepBoundary:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handler = signal.getsignal(sig)
                if callable(handler):
                    self.saved[sig] = handler
                    signal.signal(sig, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        if self.pending is not None:  # asked twice: now
            self.saved[signum](signum, frame)
        self.pending = (signum, frame)

    def check(self) -> None:
        """At a step boundary: deliver a held signal (its handler raises KeyboardInterrupt)."""
        if self.pending is not None:
            signum, frame = self.pending
            self.pending = None
            self.saved[signum](signum, frame)

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        if exc_type is None:  # a signal held during the last step is not lost
            self.check()


# ---- data on the device ---------------------------------------------------------------------------
class DeviceData:
    """A split held on ``device``: uint8 images (N, 3, H, W) and int64 labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device, pad: int = 0) -> None:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
        if pad:
            t = F.pad(t.float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8)
        self.x = t.to(device)
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
        self.pad = pad
        self.device = device
        self.size = x.shape[1]
        self.mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.y)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def augmented(self, idx: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
        """Random crops (from the padded images) and horizontal flips, batched."""
        x = self.x[idx]
        n, s, p = len(idx), self.size, self.pad
        if p:
            dy = torch.randint(0, 2 * p + 1, (n,), device=self.device, generator=gen)
            dx = torch.randint(0, 2 * p + 1, (n,), device=self.device, generator=gen)
            ar = torch.arange(s, device=self.device)
            rows = (dy[:, None] + ar)[:, None, :, None]
            cols = (dx[:, None] + ar)[:, None, None, :]
            x = x[torch.arange(n, device=self.device)[:, None, None, None],
                  torch.arange(3, device=self.device)[None, :, None, None], rows, cols]
        if flip:
            mask = torch.rand(n, device=self.device, generator=gen) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return self.normalize(x)

    def plain(self, start: int, stop: int) -> torch.Tensor:
        x = self.x[start:stop]
        if self.pad:
            x = x[:, :, self.pad:self.pad + self.size, self.pad:self.pad + self.size]
        return self.normalize(x)


# ---- one candidate --------------------------------------------------------------------------------
class _SGD:
    """Nesterov SGD over foreach ops; ``lr`` is a 0-d device tensor (graph-safe, updated in place)."""

    def __init__(self, model: nn.Module, recipe: Recipe, lr: torch.Tensor) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.dim() > 1]  # decayed first, then the rest
        named += [(n, p) for n, p in model.named_parameters() if p.dim() <= 1]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.decay = self.params[:sum(p.dim() > 1 for p in self.params)]
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.recipe, self.lr = recipe, lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        r = self.recipe
        grads = [p.grad for p in self.params]
        if r.weight_decay:
            torch._foreach_add_(grads[: len(self.decay)], self.decay, alpha=r.weight_decay)
        torch._foreach_mul_(self.bufs, r.momentum)
        torch._foreach_add_(self.bufs, grads)
        if r.nesterov:
            upd = torch._foreach_add(grads, self.bufs, alpha=r.momentum)
            torch._foreach_mul_(upd, self.lr)
        else:
            upd = torch._foreach_mul(self.bufs, self.lr)  # new tensors: the buffers keep the momentum
        torch._foreach_sub_(self.params, upd)

    def reset(self) -> None:
        for b in self.bufs:
            b.zero_()

    def momentum(self) -> dict[str, torch.Tensor]:
        return {n: b.detach().cpu().clone() for n, b in zip(self.names, self.bufs, strict=True)}

    def load_momentum(self, saved: dict[str, torch.Tensor]) -> None:
        """In place (a captured CUDA graph reads these very buffers)."""
        if set(saved) != set(self.names):
            other = sorted(set(saved) ^ set(self.names))[0]
            raise ValueError(f"the resume state's momentum does not fit this network (parameter {other})")
        for n, b in zip(self.names, self.bufs, strict=True):
            if saved[n].shape != b.shape:
                raise ValueError(f"the resume state's momentum does not fit this network ({n}: "
                                 f"{tuple(saved[n].shape)} vs {tuple(b.shape)})")
            b.copy_(saved[n])


class _Candidate:
    def __init__(self, genotype: Any, num_classes: int, resolution: int, device: torch.device,
                 recipe: Recipe, seed: int, graph: bool, space: Any = None) -> None:
        torch.manual_seed(seed)  # init on the CPU generator: the same weights on every device
        if isinstance(genotype, Genotype):
            model = build_model(genotype, num_classes, input_size=resolution, dropout=recipe.dropout,
                                drop_path=recipe.drop_path, zero_init_last=recipe.zero_init_residual)
        elif space is not None:  # another space's architecture: its own network (the recipe's dropout,
            model = space.build(genotype, num_classes, input_size=resolution)  # drop-path: MBConv only)
        else:
            raise ValueError(f"a {type(genotype).__name__} is trained with its space (Evaluator(space=...))")
        # channels_last on every device: on CPU (oneDNN) the default recipe's proxies step 1.0-2.05x faster than
        # in NCHW, median 1.48x, the depthwise backward gaining most (benchmarks/cpu_proxy_step.py)
        self.channels_last = True
        self.model = model.to(device, memory_format=torch.channels_last)
        self.genotype, self.seed, self.recipe, self.device = genotype, seed, recipe, device
        self.lr = torch.zeros((), device=device)
        self.opt = _SGD(self.model, recipe, self.lr)
        self.use_graph = graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss_sum = torch.zeros((), device=device)
        self.failure: str | None = None
        self.stream = torch.cuda.Stream(device) if graph else None
        self.amp = recipe.autocast_dtype(device)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.amp is None:
            return F.cross_entropy(self.model(x), y, label_smoothing=self.recipe.label_smoothing)
        with torch.autocast(self.device.type, self.amp, cache_enabled=False):  # no weight-cast cache: graph-safe
            logits = self.model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.recipe.label_smoothing)

    def eager_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad()
        loss = self._loss(x, y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def capture(self, static_x: torch.Tensor, static_y: torch.Tensor) -> None:
        """Capture forward+backward+step in a CUDA graph reading ``static_x``/``static_y``; the warm-up
        steps run at lr 0 and the weights, BN statistics and momentum are restored afterwards."""
        assert self.stream is not None
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.lr.zero_()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            for _ in range(3):
                self.eager_step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(self.stream)
        self.opt.zero_grad()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            self.static_loss = self._loss(static_x, static_y)
            self.static_loss.backward()
            self.opt.step()
        with torch.cuda.stream(self.stream):
            graph.replay()  # the first replay uploads the graph: keep it out of the timed loop (lr is 0)
        torch.cuda.current_stream().wait_stream(self.stream)
        self.model.load_state_dict(state)
        self.opt.reset()
        self.graph = graph

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        if self.graph is not None:
            assert self.stream is not None
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                self.lr.fill_(lr)
                self.graph.replay()
                self.loss_sum += self.static_loss.detach()
        else:
            self.lr.fill_(lr)
            self.loss_sum += self.eager_step(x.contiguous(memory_format=torch.channels_last), y)

    @torch.no_grad()
    def accuracy(self, data: DeviceData, batch: int) -> float:
        """Fraction correct on ``data``, in batches of exactly ``batch`` images where there are that many
        (the last batch overlaps the one before and counts only its new images): every new input shape
        costs each convolution a first call (cuDNN heuristics, ~ms of host time each on an H100)."""
        self.model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        n = len(data)
        for i in range(0, n, batch):
            start = max(0, min(i, n - batch))
            x = data.plain(start, i + batch)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, self.amp or torch.float32, enabled=self.amp is not None):
                logits = self.model(x)
            correct += (logits.argmax(1) == data.y[start:i + batch])[i - start:].sum()
        self.model.train()
        return correct.item() / len(data)

    def release(self) -> None:
        self.graph = None
        self.model = None  # type: ignore[assignment]
        self.opt = None  # type: ignore[assignment]


def _is_oom(e: BaseException) -> bool:
    """Out of device memory, as torch, cuBLAS or cuDNN say it."""
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "status_alloc_failed" in text


def _failure(e: BaseException, stage: str) -> str:
    """The reason a candidate failed at ``stage`` (build, training, evaluation), in one line."""
    if _is_oom(e):
        return "cuda out of memory"
    if isinstance(e, ValueError) and stage == "build":
        return f"build failed: {e}"
    return f"{stage} failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


# ---- the evaluator ----------------------------------------------------------------------------------
class Evaluator:
    """``evaluate(genotype, seed) -> Metrics`` and ``evaluate_many``; the data is put on the device once.

    ``train`` and ``val`` are (uint8 images NHWC, labels); ``concurrency`` is how many candidates train at
    once on CUDA (``"auto"``: as many as fit in 70 % of free memory, at most 4; CPU: 1)."""

    def __init__(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], num_classes: int,
                 budget: Budget, recipe: Recipe | None = None, device: str = "cpu",
                 concurrency: int | str = "auto", use_graphs: bool = True, space: Any = None) -> None:
        self.device = torch.device(device)
        self.space = space  # builds the networks of architectures that are not MBConv genotypes (NB201, DARTS)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda requested, but torch sees no CUDA device")
        self.recipe = recipe or Recipe()
        self.budget, self.num_classes = budget, num_classes
        self.train = DeviceData(*train, self.device, pad=self.recipe.crop_pad)
        self.val = DeviceData(*val, self.device)
        self.resolution = self.train.size
        if len(self.train) < self.recipe.batch_size:
            raise ValueError(f"{len(self.train)} training images are fewer than one batch ({self.recipe.batch_size})")
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.concurrency = concurrency
        self._mem_per_candidate = 0  # bytes a captured candidate reserved on the GPU (largest seen)
        self.steps_per_epoch = len(self.train) // self.recipe.batch_size
        self.peak_lr = self.recipe.lr * self.recipe.batch_size / 512

    def lr_at(self, step: int, total: int) -> float:
        warm = max(1, int(total * self.recipe.warmup))
        if step < warm:
            return self.peak_lr * (step + 1) / warm
        return self.peak_lr * max(0.0, (total - step) / max(1, total - warm))

    def evaluate(self, genotype: Genotype, seed: int = 0) -> Metrics:
        return self.evaluate_many([genotype], seed)[0]

    def resume_settings(self, seed: int) -> dict[str, Any]:
        """What a resumed training must share with the interrupted one for the two to make one run."""
        return {"recipe": asdict(self.recipe), "budget": asdict(self.budget), "seed": seed,
                "train_images": len(self.train), "held_out_images": len(self.val), "num_classes": self.num_classes,
                "resolution": self.resolution, "device": self.device.type}

    def check_resume(self, state: TrainState, seed: int) -> None:
        """A ValueError naming the first setting in which this run differs from the interrupted one."""
        now = self.resume_settings(seed)
        for key, value in now.items():
            was = state.settings.get(key)
            if isinstance(value, dict) and isinstance(was, dict):
                diff = [k for k in value if value[k] != was.get(k)] or sorted(set(was) - set(value))
                if diff:
                    raise ValueError(f"the interrupted training had {key} {diff[0]} = {was.get(diff[0])!r}, this "
                                     f"run has {value.get(diff[0])!r}: resume with the options it was started with")
            elif was != value:
                raise ValueError(f"the interrupted training had {key} = {was!r}, this run has {value!r}: resume "
                                 "with the options (and data) it was started with")
        if state.perm is not None and len(state.perm) != len(self.train):
            raise ValueError(f"resume state: perm orders {len(state.perm)} images, not {len(self.train)}")
        if state.step - state.epoch_start > self.steps_per_epoch:
            raise ValueError(f"resume state: step {state.step} lies beyond the epoch begun at step "
                             f"{state.epoch_start} ({self.steps_per_epoch} steps an epoch)")

    def close(self) -> None:
        """Nothing to release (as ``EvaluatorPool.close``, so callers close whichever they hold)."""

    def evaluate_many(self, genotypes: Sequence[Genotype], seed: int = 0,
                      progress: Callable[[int, int], None] | None = None,
                      on_trained: Callable[[int, nn.Module, Metrics], None] | None = None,
                      on_interrupt: Callable[[int, nn.Module, Metrics, TrainState | None], None] | None = None,
                      resume: TrainState | None = None) -> list[Metrics]:
        """Train each genotype (same seed, same batches) and measure held-out accuracy. ``on_trained``
        receives (index, trained model, metrics) of each successful candidate, e.g. to save it. A
        ``KeyboardInterrupt`` while training first hands each candidate still training to ``on_interrupt``
        (index, model as trained so far, metrics with the steps done and the failure "interrupted ...", not
        evaluated; and the ``TrainState`` to resume it from, or None if the interrupt broke into a step), then
        goes on up. SIGINT and SIGTERM wait for the step under way. ``resume`` (one genotype; its ``weights``
        are the interrupted model's state_dict) continues such a training where it stopped."""
        if resume is not None:
            if len(genotypes) != 1:
                raise ValueError("a training is resumed one network at a time")
            self.check_resume(resume, seed)
        k = self._group_size(len(genotypes))
        out: list[Metrics] = []
        for i in range(0, len(genotypes), k):
            group = list(genotypes[i:i + k])
            try:
                shifted = None if on_interrupt is None else (
                    lambda j, model, m, st, i=i: on_interrupt(i + j, model, m, st))  # index in ``genotypes``
                results = self._run_group(group, seed, progress, shifted, resume)
            except Exception as e:  # not one candidate's fault (e.g. the shared batch): the group fails
                why = _failure(e, "training")
                results = [(Metrics(g.to_string(), seed, device=str(self.device), failure=why), None) for g in group]
            if not self.device_usable():  # a sticky CUDA error: every later candidate would fail as well
                why = next((m.failure for m, _ in results if m.failure), "a group")
                raise EvaluatorError(f"the CUDA device cannot be used any more after {why} (a fresh process gets "
                                     "a fresh CUDA context)", partial=[*out, *(m for m, _ in results)])
            for j, (m, model) in enumerate(results):
                if on_trained is not None and model is not None:
                    on_trained(i + j, model, m)
                out.append(m)
        return out

    def device_usable(self) -> bool:
        """Whether the device still runs work: after an illegal memory access or a device-side assert, a CUDA
        context fails every call until its process ends."""
        if self.device.type != "cuda":
            return True
        try:
            torch.cuda.synchronize(self.device)
            return float(torch.ones(1, device=self.device).add_(1).item()) == 2.0
        except torch.cuda.OutOfMemoryError:  # full (other processes' candidates), not broken
            return True
        except Exception:
            return False

    def _group_size(self, n: int) -> int:
        if not self.use_graphs:
            return 1
        if isinstance(self.concurrency, int):
            return max(1, self.concurrency)
        free, _ = torch.cuda.mem_get_info(self.device)
        per = self._mem_per_candidate
        return max(1, min(4, n, int(0.7 * free / per) if per else 4))

    def _run_group(self, genotypes: list[Genotype], seed: int, progress: Callable[[int, int], None] | None,
                   on_interrupt: Callable[[int, nn.Module, Metrics, TrainState | None], None] | None = None,
                   resume: TrainState | None = None) -> list[tuple[Metrics, nn.Module | None]]:
        dev, r = self.device, self.recipe
        t_group = time.perf_counter()
        metrics = [Metrics(g.to_string(), seed, device=str(dev)) for g in genotypes]
        cands: list[_Candidate | None] = []
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed)
        static_x = torch.zeros(r.batch_size, 3, self.resolution, self.resolution, device=dev)
        if self.use_graphs:
            static_x = static_x.contiguous(memory_format=torch.channels_last)
        static_y = torch.zeros(r.batch_size, dtype=torch.int64, device=dev)
        first = self.train.augmented(torch.arange(r.batch_size, device=dev), gen, r.flip)
        static_x.copy_(first)
        static_y.copy_(self.train.y[: r.batch_size])
        for g, m in zip(genotypes, metrics, strict=True):
            c: _Candidate | None = None
            try:
                before = torch.cuda.memory_reserved(dev) if self.use_graphs else 0
                c = _Candidate(g, self.num_classes, self.resolution, dev, r, seed, self.use_graphs, self.space)
                if resume is not None and resume.weights is not None:
                    c.model.load_state_dict(resume.weights)
                if self.use_graphs:
                    c.capture(static_x, static_y)
                    self._mem_per_candidate = max(self._mem_per_candidate,
                                                  torch.cuda.memory_reserved(dev) - before)
                if resume is not None:  # after the capture, which resets the momentum
                    c.opt.load_momentum(resume.momentum)
                    c.loss_sum.fill_(resume.loss_sum)
                    m.final_loss = resume.final_loss
            except Exception as e:  # this candidate fails (with the reason); the others go on
                m.failure = _failure(e, "build")
            cands.append(c if m.failure is None else None)
            if m.failure is not None and self.use_graphs:
                c = None  # its weights and graph pool go back to the driver (outside the except: no traceback)
                torch.cuda.empty_cache()
        gen.manual_seed(seed)  # every group sees the same batches, whatever happened above
        step = epoch_start = 0
        perm: torch.Tensor | None = None
        spent = 0.0  # training seconds before this run (resumed)
        if resume is None:
            total = self._total_steps(cands, static_x, static_y, gen)
        else:  # where the interrupted run stopped: its schedule, batches, momentum and partial epoch
            total, step, epoch_start, spent = resume.total, resume.step, resume.epoch_start, resume.train_seconds
            perm = None if resume.perm is None else resume.perm.to(dev)
            gen.set_state(resume.generator)
            torch.set_rng_state(resume.torch_rng)
        first_step = step
        self._sync()
        t0 = time.perf_counter()
        whole = True  # False while a step is under way: an interrupt then breaks into it
        try:
            with _StepBoundary() as boundary:
                while step < total and any(c is not None and c.failure is None for c in cands):
                    if perm is None:
                        perm = torch.randperm(len(self.train), device=dev, generator=gen)
                    for b in range(step - epoch_start, self.steps_per_epoch):
                        if step >= total:
                            break
                        whole = False
                        idx = perm[b * r.batch_size:(b + 1) * r.batch_size]
                        x, y = self.train.augmented(idx, gen, r.flip), self.train.y[idx]
                        if self.use_graphs:
                            static_x.copy_(x)
                            static_y.copy_(y)
                        lr = self.lr_at(step, total)
                        for c, m in zip(cands, metrics, strict=True):
                            if c is None or c.failure:
                                continue
                            try:
                                c.step(x, y, lr)
                            except Exception as e:
                                c.failure = m.failure = _failure(e, "training")
                        if self.use_graphs:
                            for c in cands:
                                if c is not None and c.stream is not None:
                                    torch.cuda.current_stream().wait_stream(c.stream)
                        step += 1
                        whole = True
                        if progress:
                            progress(step, total)
                        boundary.check()
                    self._end_epoch(cands, metrics, step, epoch_steps=step - epoch_start)
                    epoch_start, perm = step, None
        except KeyboardInterrupt:
            if on_interrupt is not None:  # the weights as trained so far
                self._sync()
                for j, (c, m) in enumerate(zip(cands, metrics, strict=True)):
                    if c is not None and c.failure is None:
                        m.steps, m.epochs = step, step / self.steps_per_epoch
                        m.train_seconds = spent + time.perf_counter() - t0
                        m.failure = f"interrupted after step {step} of {total}"
                        state = None if not whole else TrainState(
                            step=step, total=total, epoch_start=epoch_start,
                            perm=None if perm is None else perm.cpu(), generator=gen.get_state(),
                            torch_rng=torch.get_rng_state(), momentum=c.opt.momentum(),
                            loss_sum=float(c.loss_sum.item()), final_loss=m.final_loss,
                            train_seconds=m.train_seconds, settings=self.resume_settings(seed))
                        on_interrupt(j, c.model.eval(), m, state)
            raise
        self._sync()
        elapsed = time.perf_counter() - t0
        models: list[nn.Module | None] = [None] * len(cands)
        for i, (c, m) in enumerate(zip(cands, metrics, strict=True)):
            if c is None:
                continue
            m.steps, m.epochs = step, step / self.steps_per_epoch
            m.train_seconds = spent + elapsed
            m.images_per_s = (step - first_step) * r.batch_size / elapsed if elapsed > 0 else 0.0
            if resume is not None:
                m.extra["resumed_at_step"] = first_step
            m.extra["group_size"] = len(genotypes)
            if c.failure is None:
                try:
                    m.val_acc = c.accuracy(self.val, r.eval_batch_size or r.batch_size)
                    models[i] = c.model.eval()
                except Exception as e:
                    m.failure = _failure(e, "evaluation")
            c.release()
        if self.use_graphs:
            torch.cuda.empty_cache()
        self._sync()
        wall = time.perf_counter() - t_group
        amp = r.autocast_dtype(dev)
        for m in metrics:  # what the group cost in all (build, capture, training, evaluation)
            m.extra["group_wall_seconds"] = round(wall, 3)
            m.extra["precision"] = "bf16-autocast" if amp == torch.bfloat16 else "fp32"
        return list(zip(metrics, models, strict=True))

    def _total_steps(self, cands: list[_Candidate | None], x: torch.Tensor, y: torch.Tensor,
                     gen: torch.Generator) -> int:
        if self.budget.epochs is not None:
            return max(1, round(self.budget.epochs * self.steps_per_epoch))
        live = [c for c in cands if c is not None]
        if not live:
            return 0
        # time a few steps at lr 0 (weights unchanged except BN statistics, which are restored)
        states = [{k: v.clone() for k, v in c.model.state_dict().items()} for c in live]
        self._sync()
        t0, probe = time.perf_counter(), 3
        for _ in range(probe):
            for c in live:
                c.step(x, y, 0.0)
            if self.use_graphs:
                for c in live:
                    torch.cuda.current_stream().wait_stream(c.stream)  # type: ignore[arg-type]
        self._sync()
        per_step = (time.perf_counter() - t0) / probe
        for c, s in zip(live, states, strict=True):
            c.model.load_state_dict(s)
            c.opt.reset()
            c.loss_sum.zero_()
        assert self.budget.seconds is not None
        return max(1, int(self.budget.seconds / per_step))

    def _end_epoch(self, cands: list[_Candidate | None], metrics: list[Metrics], step: int,
                   epoch_steps: int) -> None:
        """Mean training loss of the epoch; a non-finite one fails the candidate."""
        for c, m in zip(cands, metrics, strict=True):
            if c is None or c.failure is not None or epoch_steps == 0:
                continue
            loss = c.loss_sum.item() / epoch_steps
            c.loss_sum.zero_()
            if math.isfinite(loss):
                m.final_loss = loss
            else:
                c.failure = m.failure = f"non-finite loss by step {step}"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ---- several evaluator processes on one device ------------------------------------------------------
class EvaluatorError(RuntimeError):
    """An evaluator cannot go on: its CUDA device fails every call (a sticky CUDA error), or a pool process
    died while loading its data, or a replacement could not start. (A candidate that fails, or a pool process
    that dies while training, is a failed ``Metrics``.) ``partial``: the metrics of the candidates finished
    before it stopped (a prefix, in order, of those it was given; the group that broke the device included,
    with its failure), so no finished work is lost."""

    def __init__(self, message: str, partial: Sequence[Metrics] = ()) -> None:
        super().__init__(message)
        self.partial = list(partial)


class EvaluatorPool:
    """``evaluate_many`` spread over ``processes`` spawned processes, each with its own ``Evaluator`` (its
    own CUDA context and copy of the data on the device) -- so one process's set-up of fresh candidates
    (building, cuDNN choosing kernels for each new shape, graph capture: host work, ~7.5 s per candidate on
    an H100) runs while another trains. The candidates of one call are dealt out in groups (at most
    ``group`` per process at a time, the evaluator's lock-step group) to whichever process is free, and come
    back in order. A process that dies (the kernel's OOM killer, a driver fault) fails the candidates it
    held, with the reason, and is replaced; the pool goes on. Interrupts are the caller's: the processes
    ignore SIGINT and are terminated by ``close()`` (or at exit: they are daemonic), or stop on their own
    when the parent is gone. Construction waits until every process holds its data, so a bad setting
    (e.g. a batch larger than the data) raises the evaluator's ``ValueError`` here."""

    def __init__(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], num_classes: int,
                 budget: Budget, recipe: Recipe | None = None, device: str = "cpu", processes: int = 2,
                 group: int = 4, space: Any = None) -> None:
        import multiprocessing
        import os

        self._ctx = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // processes)
        # the data reach the processes as one file, not as pickled arguments: spawning writes those into a pipe
        # the child reads only after importing torch, so each start would block this process for seconds and
        # the processes would start one after another (measured on 2 cores: 3.5-4.5 s per process). The file
        # (15-150 MB) goes into a folder named after this process, so that one left by a process killed with -9
        # is removed at the next start of a pool (or by hwnas cache clear)
        try:
            remove_stale_pool_dirs(Path(tempfile.gettempdir()))
            self._data_dir = tempfile.TemporaryDirectory(prefix=pool_dir_prefix())
        except OSError as e:  # e.g. a temporary folder (TMPDIR) that is missing or not writable
            raise EvaluatorError(f"cannot write the data for the evaluator processes: {e}") from None
        data = Path(self._data_dir.name) / "data.npy"
        try:
            with open(data, "wb") as f:
                for a in (*train, *val):
                    np.save(f, np.ascontiguousarray(a), allow_pickle=False)
        except BaseException as e:
            self._data_dir.cleanup()
            if isinstance(e, OSError):  # e.g. a full temporary folder
                raise EvaluatorError(f"cannot write the data for the evaluator processes: {e}") from None
            raise
        self._args = (str(data), num_classes, budget, recipe, device, threads, space)
        self.group, self.device = group, device
        self._procs: dict[int, tuple[Any, Any, Any]] = {}  # rank -> (process, its task queue, its result pipe)
        self._idle: set[int] = set()  # ready and holding nothing
        self._loading: set[int] = set()  # started, not ready yet
        self._holding: dict[int, tuple[int, int]] = {}  # rank -> (call, chunk) it is training
        self._next_rank = self._call = 0
        for _ in range(processes):
            self._spawn()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Until every process has loaded its data (a replacement loads while the others train); between calls."""
        while self._loading:
            kind, rank, payload = self._get(None)
            if kind == "error":
                self.close()
                raise ValueError(payload)
            self._loading.discard(rank)
            self._idle.add(rank)

    @property
    def processes(self) -> int:
        return len(self._procs)

    def _spawn(self) -> None:
        import os

        rank, self._next_rank = self._next_rank, self._next_rank + 1
        q = self._ctx.Queue()
        # results come back on a pipe of its own: a queue shared by all processes has one write lock, which a
        # process killed while writing (the OOM killer) would hold for ever, and every other process would hang
        reader, writer = self._ctx.Pipe(duplex=False)
        p = self._ctx.Process(target=_pool_worker, args=(rank, self._args, q, writer, os.getpid()), daemon=True)
        p.start()
        writer.close()  # the process holds the only write end: end of file when it dies
        self._procs[rank] = (p, q, reader)
        self._loading.add(rank)

    def _get(self, on_death: Callable[[int, int], None] | None) -> tuple[str, int, Any]:
        """The next message; a dead process is reported to ``on_death(rank, exit code)`` (or raised)."""
        from multiprocessing.connection import wait

        while True:
            readers = {reader: rank for rank, (_, _, reader) in self._procs.items()}
            reader = wait(list(readers))[0]
            try:
                return reader.recv()
            except EOFError:  # the process is gone
                rank = readers[reader]
                p = self._procs.pop(rank)[0]
                p.join()
                reader.close()
                self._idle.discard(rank)
                loading = rank in self._loading
                self._loading.discard(rank)
                if on_death is None or loading:  # replacing one that dies loading could go on for ever
                    self.close()
                    raise EvaluatorError(f"evaluator process died (exit code {p.exitcode})"
                                         + (" while loading its data" if loading else "")) from None
                on_death(rank, p.exitcode)

    def evaluate(self, genotype: Genotype, seed: int = 0) -> Metrics:
        return self.evaluate_many([genotype], seed)[0]

    def evaluate_many(self, genotypes: Sequence[Genotype], seed: int = 0) -> list[Metrics]:
        self._call += 1
        call, n = self._call, len(genotypes)
        per = min(self.group, max(1, math.ceil(n / max(1, self.processes))))
        chunks = [list(range(i, min(n, i + per))) for i in range(0, n, per)]
        pending = list(range(len(chunks)))
        out: list[Metrics | None] = [None] * n
        done = 0

        def died(rank: int, code: int) -> None:
            nonlocal done
            c, t = self._holding.pop(rank, (0, -1))
            if c == call:
                for i in chunks[t]:
                    out[i] = Metrics(genotypes[i].to_string(), seed, device=self.device,
                                     failure=f"evaluator process died (exit code {code})")
                done += 1
            self._spawn()  # the pool keeps its size (the new process loads its data while others train)

        while done < len(chunks):
            while pending and self._idle:
                rank, t = self._idle.pop(), pending.pop(0)
                self._procs[rank][1].put((call, t, [genotypes[i] for i in chunks[t]], seed))
                self._holding[rank] = (call, t)
            kind, rank, payload = self._get(died)
            if kind == "ready":  # a replacement
                self._loading.discard(rank)
                self._idle.add(rank)
            elif kind == "result":
                c, t, ms, retiring = payload
                self._holding.pop(rank, None)
                if not retiring:  # a retiring process (its CUDA context broken) ends; its end of file replaces it
                    self._idle.add(rank)
                if c == call:  # not a leftover of an interrupted call
                    for i, m in zip(chunks[t], ms, strict=False):
                        out[i] = m
                    if len(ms) < len(chunks[t]):  # not trained (a retiring process): another process will
                        chunks.append(chunks[t][len(ms):])
                        pending.append(len(chunks) - 1)
                    done += 1
            else:  # a replacement that could not start: what worked before must still work
                raise EvaluatorError(f"an evaluator process could not start: {payload}")
        return [m for m in out if m is not None]

    def close(self) -> None:
        for p, _, reader in self._procs.values():
            if p.is_alive():
                p.terminate()
            p.join()
            reader.close()
        self._procs.clear()
        self._idle.clear()
        self._loading.clear()
        self._data_dir.cleanup()


def _pool_worker(rank: int, args: tuple[Any, ...], tasks: Any, results: Any, parent: int) -> None:
    """One process of an ``EvaluatorPool``: ("ready" | "error", rank, why), then per task ("result", rank,
    (call, chunk, metrics)). Stops when its parent is gone."""
    import os
    import queue
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    data, num_classes, budget, recipe, device, threads, space = args
    try:
        with open(data, "rb") as f:
            train_x, train_y, val_x, val_y = (np.load(f, allow_pickle=False) for _ in range(4))
        torch.set_num_threads(threads)
        ev = Evaluator((train_x, train_y), (val_x, val_y), num_classes, budget, recipe, device, space=space)
    except BaseException as e:
        results.send(("error", rank, f"{(str(e).splitlines() or [type(e).__name__])[0]}"))
        return
    results.send(("ready", rank, None))
    while os.getppid() == parent:
        try:
            call, t, genotypes, seed = tasks.get(timeout=2)
        except queue.Empty:
            continue
        retiring = False
        try:
            ms = ev.evaluate_many(genotypes, seed)
        except EvaluatorError as e:  # its CUDA context is broken: what it finished goes back, the rest is dealt
            ms, retiring = e.partial or [Metrics(g.to_string(), seed, device=device, failure=str(e))
                                         for g in genotypes], True  # to another; a fresh process replaces this
        except Exception as e:  # not a failing candidate (those come back as Metrics): fail the group, go on
            why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
            ms = [Metrics(g.to_string(), seed, device=device, failure=why) for g in genotypes]
        results.send(("result", rank, (call, t, ms, retiring)))
        if retiring:
            return
