"""Shared helpers for the benchmarks (run from the repository root: ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing (e.g. on the GPU machine)
RESULTS = ROOT / "benchmarks" / "results"


def environment(device: str) -> dict[str, Any]:
    import torch

    from hwnas import __version__

    env = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
           "hwnas": __version__, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "command": "python " + " ".join(sys.argv)}
    if device == "cuda":
        env["device_name"] = torch.cuda.get_device_name(0)
    else:
        from hwnas.latency.measure import _cpu_name

        env["device_name"] = _cpu_name()
    return env


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def load_data(data_dir: str | None, cache: str | None) -> Any:
    from hwnas.data import load_dataset

    src = Path(data_dir) if data_dir else ROOT / "hwnas" / "datasets" / "cifar10-mini.tar.xz"
    return load_dataset(src, "cifar10", Path(cache or ROOT / "data" / "cache"))


def image_subset(data: Any, x: Any, y: Any, n: int | None, seed: int) -> tuple[Any, Any]:
    """A stratified, seeded subset of ``n`` of the images ``x`` (labels ``y``) of ``data``'s classes; all of them
    when ``n`` is None or not smaller."""
    if n is None or n >= len(y):
        return x, y
    from hwnas.data import ImageData

    sub = ImageData(name=data.name, classes=data.classes, train_x=x, train_y=y, test_x=x[:0], test_y=y[:0],
                    source=data.source)
    _, _, keep_x, keep_y = sub.split_validation(n, seed=seed)
    return keep_x, keep_y


def resize_images(x: Any, side: int | None) -> Any:
    """uint8 NHWC images resized to ``side`` x ``side`` (bilinear, antialiased when shrinking); ``x`` itself when
    ``side`` is None or already its size."""
    if side is None or x.shape[1] == side:
        return x
    import numpy as np
    import torch
    import torch.nn.functional as F

    out = []
    for i in range(0, len(x), 4096):  # bounded memory on 50k images
        t = torch.from_numpy(np.ascontiguousarray(x[i:i + 4096])).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.ascontiguousarray(np.concatenate(out))


def gradient_search_arguments(ap: Any, out: Path) -> None:
    """The options the differentiable-search benchmarks share: the data, the image subsets, the batch, the alpha
    learning rate, the output and torch's threads."""
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.xz"))
    ap.add_argument("--cache", default=None, help="decoded-data cache (default: data/cache in the checkout)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-images", type=int, default=2560)
    ap.add_argument("--val-images", type=int, default=2560)
    ap.add_argument("--alpha-lr", type=float, default=3e-3,
                    help="Adam lr of alpha (NB201/GDAS: 3e-4 over ~20k steps; 10x here for ~50x fewer steps)")
    ap.add_argument("--out", default=str(out), help="results JSON (the plot goes beside it, .png)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core machine two spinning threads ran 2-3x slower)")


def gradient_search_split(args: Any) -> tuple[Any, ...]:
    """torch's threads set, CIFAR-10 loaded and split as NB201's DARTS/GDAS search it: the training set 50/50
    (train_x, train_y, val_x, val_y); the runs keep ``--train-images`` / ``--val-images`` of each."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(args.data, args.cache)
    return data.split_validation(len(data.train_y) // 2, seed=0)
