"""Accuracy inherited from a trained supernet (``hwnas.supernet``): weight sharing at inference cost.

A candidate is scored without training it: the supernet runs it (``activate``), its BatchNorm statistics
are recalibrated on a fixed set of training images (the statistics the supernet kept during training mix
every path's; SPOS and OFA recalibrate per subnet, cumulative averages over ``bn_images`` images, no
augmentation), and its accuracy on the validation split (held out from supernet training) is the result.
Weights are never updated. What this costs and how well it ranks networks against their own training is
measured in ``docs/evaluators.md``.

``load_supernet(checkpoint)`` rebuilds the supernet from a checkpoint that ``hwnas supernet train`` wrote
(read with ``torch.load(weights_only=True)`` by the CLI), checking every field it uses: a damaged checkpoint,
another space's or one whose weights do not fit is a one-line ``SupernetError``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.evaluators.training import DeviceData
from hwnas.search.run import EvalResult
from hwnas.supernet import SUPERNET_KINDS, SupernetError, build_supernet
from hwnas.supernet.base import Supernet
from hwnas.supernet.train import FORMAT, VERSION
from hwnas.units import is_integer

BN_IMAGES = 1024  # training images the BatchNorm statistics are recalibrated on, per candidate
BATCH = 256


def _field(ckpt: Mapping[str, Any], key: str, ok: Any, what: str) -> Any:
    v = ckpt.get(key)
    if not ok(v):
        shown = repr(v)[:40] if isinstance(v, str | int | float | bool | None) else type(v).__name__
        raise SupernetError(f"supernet checkpoint: {key} must be {what}, got {shown}")
    return v


def load_supernet(ckpt: Any, *, kind: str | None = None) -> tuple[Supernet, dict[str, Any]]:
    """The supernet a checkpoint holds (on the CPU, weights loaded), and the checkpoint's other fields
    (``data``, ``train``, ``progress``, ``seed``). ``kind``: the space the caller searches; a checkpoint of
    another space is refused."""
    from hwnas.spaces import SpaceError, get_space

    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        raise SupernetError("not an hwnas supernet checkpoint (write one with hwnas supernet train)")
    _field(ckpt, "version", lambda v: v == VERSION, f"{VERSION} (this hwnas reads version {VERSION})")
    space_rec = _field(ckpt, "space", lambda v: isinstance(v, Mapping) and v.get("kind") in SUPERNET_KINDS
                       and isinstance(v.get("config"), Mapping | None), "an object naming a space with a supernet "
                       f"({', '.join(SUPERNET_KINDS)})")
    if kind is not None and space_rec["kind"] != kind:
        raise SupernetError(f"the supernet is of the {space_rec['kind']} space, not the {kind} space searched")
    num_classes = _field(ckpt, "num_classes", lambda v: is_integer(v, low=2, high=1 << 20), "an integer in 2..1048576")
    input_size = _field(ckpt, "input_size", lambda v: is_integer(v, low=8, high=4096), "an integer in 8..4096")
    settings = _field(ckpt, "supernet", lambda v: isinstance(v, Mapping) and all(isinstance(k, str) for k in v),
                      "an object of settings")
    for key in ("data", "train", "progress"):
        _field(ckpt, key, lambda v: isinstance(v, Mapping), "an object")
    state = _field(ckpt, "state_dict", lambda v: isinstance(v, Mapping) and all(
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items()), "a mapping name -> tensor")
    try:
        space = get_space(space_rec["kind"], space_rec["config"])
    except SpaceError as e:
        raise SupernetError(f"supernet checkpoint: its space: {e}") from None
    try:
        net = build_supernet(space, num_classes, input_size, settings)
    except TypeError as e:  # a setting the supernet does not take
        raise SupernetError(f"supernet checkpoint: its settings: {str(e)[:120]}") from None
    mine = net.state_dict()
    missing, extra = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
    if missing or extra:
        raise SupernetError(f"supernet checkpoint: its weights do not fit its supernet ("
                            f"{'missing ' + missing[0] if missing else 'unexpected ' + extra[0]})"[:160])
    for k, t in mine.items():
        if state[k].shape != t.shape:
            raise SupernetError(f"supernet checkpoint: {k} is {tuple(state[k].shape)}, the supernet's is "
                                f"{tuple(t.shape)}"[:160])
        if state[k].is_floating_point() and not torch.isfinite(state[k]).all():
            raise SupernetError(f"supernet checkpoint: {k} holds NaN or infinite values")
    net.load_state_dict(state)
    meta = {k: ckpt[k] for k in ("data", "train", "progress", "seed") if k in ckpt}
    return net, meta


def _batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class SupernetEvaluator:
    """``evaluate(arch) -> EvalResult``: the validation accuracy of ``arch`` with the supernet's weights."""

    def __init__(self, net: Supernet, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 device: str | torch.device = "cpu", bn_images: int = BN_IMAGES, batch_size: int = BATCH,
                 seed: int = 0) -> None:
        if bn_images < 1 or batch_size < 1:
            raise SupernetError("bn_images and batch_size must be positive")
        self.device = torch.device(device)
        self.net = net.to(self.device)
        tx, ty = train
        pick = np.sort(np.random.default_rng([seed, 0xB7]).permutation(len(ty))[:bn_images])
        self.calib = DeviceData(tx[pick], ty[pick], self.device)
        self.val = DeviceData(*val, self.device)
        if len(self.val) == 0:
            raise SupernetError("the validation split is empty: nothing to score subnets on")
        self.batch = batch_size
        self.bns = _batchnorms(net)

    @torch.no_grad()
    def accuracy(self, arch: Any) -> float:
        """``SupernetError`` for an architecture outside the supernet."""
        net = self.net
        net.activate(arch)
        for bn in self.bns:  # cumulative averages over the calibration images
            bn.reset_running_stats()
            bn.momentum = None
        net.train()
        for s in range(0, len(self.calib), self.batch):
            net(self.calib.plain(s, s + self.batch))
        net.eval()
        correct = 0
        for s in range(0, len(self.val), self.batch):
            logits = net(self.val.plain(s, s + self.batch))
            correct += int((logits.argmax(1) == self.val.y[s:s + self.batch]).sum())
        return correct / len(self.val)

    def evaluate(self, arch: Any) -> EvalResult:
        t0 = time.perf_counter()
        try:
            acc = self.accuracy(arch)
        except SupernetError as e:  # outside the supernet: a failed trial, not a dead study
            return EvalResult(None, str(e))
        except RuntimeError as e:  # e.g. out of memory
            return EvalResult(None, f"supernet evaluation failed: {(str(e).splitlines() or ['?'])[0][:160]}")
        if not math.isfinite(acc):
            return EvalResult(None, "supernet evaluation gave no accuracy")
        return EvalResult(acc, details={"evaluator": "supernet", "bn_images": len(self.calib),
                                        "val_images": len(self.val),
                                        "eval_seconds": round(time.perf_counter() - t0, 3)})

    def __call__(self, arch: Any) -> EvalResult:
        return self.evaluate(arch)

    def evaluate_many(self, archs: list[Any]) -> list[EvalResult]:
        return [self.evaluate(a) for a in archs]


__all__ = ["BATCH", "BN_IMAGES", "SupernetEvaluator", "load_supernet"]
