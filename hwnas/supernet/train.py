"""Training a supernet: uniform single-path sampling (SPOS), optionally with the sandwich rule (torch).

Every step draws ``paths`` architectures uniformly from the space (``space.sample``), runs the same batch
through each (``activate`` then forward/backward) and takes one SGD step on the summed gradients; with
``sandwich`` (BigNAS/OFA; elastic supernets only) the largest and the smallest architecture are run at every
step too. (BigNAS also distils the largest into the others in place; not done here.)

Everything a step draws -- its batch, its crops and flips, its architectures -- comes from generators seeded
with ``(seed, step)``, so a run stopped at any step boundary and resumed from its checkpoint is the run that
was not stopped (same weights, same losses). ``checkpoint(state)`` is called at the end of every epoch and when
the run stops (an interrupt held to the step boundary, or ``should_stop``); the CLI writes it atomically.
The checkpoint holds tensors and plain Python values only, so it loads with ``torch.load(weights_only=True)``
(``hwnas.evaluators.supernet.load_supernet`` checks it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwnas import interrupts
from hwnas.evaluators.training import DeviceData
from hwnas.supernet import SupernetError
from hwnas.supernet.base import Supernet
from hwnas.units import is_integer, is_number

FORMAT = "hwnas-supernet"
VERSION = 1


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """How the supernet is trained. ``lr`` is per batch of ``batch_size`` (cosine to 0 over the run)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    paths: int = 1  # uniformly drawn architectures per step
    sandwich: bool = False  # also the largest and the smallest architecture every step
    crop_pad: int = 4
    flip: bool = True

    def check(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"supernet training: {what}")

        need(is_integer(self.epochs, low=1, high=10_000), f"epochs must be an integer in 1..10000, "
             f"got {self.epochs!r}")
        need(is_integer(self.batch_size, low=1, high=65_536), f"batch_size must be an integer in "
             f"1..65536, got {self.batch_size!r}")
        need(is_number(self.lr, high=10, positive=True), f"lr must be in (0, 10], got {self.lr!r}")
        need(is_number(self.momentum, low=0) and self.momentum < 1, f"momentum must be in [0, 1), got "
             f"{self.momentum!r}")
        need(is_number(self.weight_decay, low=0) and self.weight_decay < 1, f"weight_decay must be in [0, 1), got "
             f"{self.weight_decay!r}")
        need(is_number(self.grad_clip, low=0), f"grad_clip must be >= 0 (0: none), got {self.grad_clip!r}")
        need(is_integer(self.paths, low=0, high=16), f"paths must be an integer in 0..16, got {self.paths!r}")
        need(isinstance(self.sandwich, bool), f"sandwich must be true or false, got {self.sandwich!r}")
        need(self.paths >= 1 or self.sandwich, "paths 0 trains nothing without the sandwich rule")
        need(is_integer(self.crop_pad, low=0, high=64), f"crop_pad must be an integer in 0..64, got "
             f"{self.crop_pad!r}")
        need(isinstance(self.flip, bool), f"flip must be true or false, got {self.flip!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    step: int  # steps done (of ``total_steps``)
    total_steps: int
    epoch_losses: list[float]  # mean training loss of each finished epoch (over every path run)
    seconds: float  # training time, this run and the runs it resumes
    stopped: bool  # stopped before the end (resumable from the last checkpoint)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return max(1, n_images // batch_size)  # the last partial batch is dropped (BN sees full batches)


def _batch_indices(n: int, batch: int, seed: int, step: int, per_epoch: int) -> np.ndarray:
    epoch, i = divmod(step, per_epoch)
    order = np.random.default_rng([seed, 0x5EED, epoch]).permutation(n)
    return order[i * batch:(i + 1) * batch]


def _paths(space: Any, settings: TrainSettings, ends: tuple[Any, Any] | None, seed: int, step: int) -> list[Any]:
    """The step's architectures: the largest and the smallest (``ends``, with the sandwich rule), then
    ``paths`` uniform draws."""
    rng = np.random.default_rng([seed, 0xA5C4, step])
    archs = [space.decode(space.sample(rng)) for _ in range(settings.paths)]
    return [ends[1], ends[0], *archs] if ends is not None else archs


def train_supernet(net: Supernet, train: tuple[np.ndarray, np.ndarray], settings: TrainSettings, *, seed: int = 0,
                   device: str | torch.device = "cpu", resume: dict[str, Any] | None = None,
                   checkpoint: Callable[[dict[str, Any]], None] | None = None,
                   progress: Callable[[int, int, float], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train ``net`` on ``train`` (uint8 NHWC images, integer labels) with ``settings``. ``resume``: the
    ``progress`` part of a checkpoint this run continues (its weights and optimizer state already loaded with
    ``load_state``). ``checkpoint(state)`` gets ``state_of(...)``'s dict; ``progress(step, total, loss)``
    after every step."""
    settings.check()
    ends = net.sandwich() if settings.sandwich else None
    if settings.sandwich and ends is None:
        raise SupernetError(f"the {net.kind} supernet has no smallest/largest architecture: no sandwich rule")
    device = torch.device(device)
    x, y = train
    if len(y) < settings.batch_size:
        raise SupernetError(f"{len(y)} training images are fewer than one batch of {settings.batch_size}")
    data = DeviceData(x, y, device, pad=settings.crop_pad)
    per_epoch = steps_per_epoch(len(y), settings.batch_size)
    total = per_epoch * settings.epochs
    net.to(device).train()
    opt = optimizer_of(net, settings)
    done = dict(resume or {})
    step, seconds = int(done.get("step", 0)), float(done.get("seconds", 0.0))
    epoch_losses = [float(v) for v in done.get("epoch_losses", [])]
    if "optimizer" in done:
        opt.load_state_dict(done["optimizer"])
    if not 0 <= step <= total:
        raise SupernetError(f"the checkpoint is at step {step}, beyond this training's {total} steps")
    loss_sum = float(done.get("epoch_loss_sum", 0.0))
    space = net.space

    def save(stopped: bool) -> None:
        if checkpoint is not None:
            checkpoint({"step": step, "total_steps": total, "epoch_losses": list(epoch_losses),
                        "epoch_loss_sum": loss_sum, "seconds": seconds, "finished": step >= total and not stopped,
                        "optimizer": opt.state_dict()})

    stopped = False
    with interrupts.deferred():  # an interrupt is held to the next step boundary
        while step < total:
            try:
                interrupts.safe_point()
            except KeyboardInterrupt:
                stopped = True
                break
            if should_stop is not None and should_stop():
                stopped = True
                break
            t0 = time.perf_counter()
            lr = 0.5 * settings.lr * (1 + math.cos(math.pi * step / total))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.from_numpy(_batch_indices(len(y), settings.batch_size, seed, step, per_epoch)).to(device)
            gen = torch.Generator(device=device)
            gen.manual_seed(int(np.random.default_rng([seed, 0xC809, step]).integers(2**62)))
            xb, yb = data.augmented(idx, gen, settings.flip), data.y[idx]
            opt.zero_grad(set_to_none=True)
            losses = []
            for arch in _paths(space, settings, ends, seed, step):
                net.activate(arch)
                loss = F.cross_entropy(net(xb), yb)
                loss.backward()
                losses.append(float(loss.detach()))
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
            opt.step()
            step += 1
            seconds += time.perf_counter() - t0
            loss_sum += sum(losses) / len(losses)
            if progress is not None:
                progress(step, total, losses[-1])
            if step % per_epoch == 0:
                epoch_losses.append(loss_sum / per_epoch)
                loss_sum = 0.0
                save(False)
        if stopped:
            save(True)
    return TrainResult(step, total, epoch_losses, seconds, stopped)


def optimizer_of(net: Supernet, settings: TrainSettings) -> torch.optim.Optimizer:
    """Nesterov SGD; weight decay on the weights of convolutions and linear layers only."""
    decay = [p for p in net.parameters() if p.dim() > 1]
    rest = [p for p in net.parameters() if p.dim() <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": settings.weight_decay},
                            {"params": rest, "weight_decay": 0.0}], lr=settings.lr, momentum=settings.momentum,
                           nesterov=settings.momentum > 0)


def space_record(space: Any) -> dict[str, Any]:
    """``{"kind", "config"}``: what ``hwnas.spaces.get_space`` rebuilds the space from (config None: the
    kind's only space)."""
    to_dict = getattr(space, "to_dict", None)
    return {"kind": space.kind, "config": to_dict() if callable(to_dict) else None}


def state_of(net: Supernet, settings: TrainSettings, seed: int, progress: dict[str, Any],
             data: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint: what rebuilds the supernet, how it was trained and on what, its weights and progress."""
    return {"format": FORMAT, "version": VERSION, "space": space_record(net.space), "supernet": net.settings(),
            "num_classes": net.num_classes, "input_size": net.input_size, "train": settings.to_dict(),
            "seed": seed, "data": dict(data), "progress": progress,
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


__all__ = ["FORMAT", "VERSION", "TrainResult", "TrainSettings", "optimizer_of", "space_record", "state_of",
           "steps_per_epoch", "train_supernet"]
