"""``hwnas supernet``: train a weight-sharing supernet, score subnets with its weights, show a checkpoint.

``train`` writes one checkpoint file (atomically, at the end of every epoch and when interrupted); the same
command with ``--resume PATH`` continues it exactly. ``eval`` scores architectures with inherited weights (the
evaluator ``hwnas search --evaluator supernet:PATH`` uses). Checkpoints are read with
``torch.load(weights_only=True)`` and every field is checked (``hwnas.evaluators.supernet.load_supernet``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from hwnas.cli.common import (
    SEED,
    UsageError,
    check_output_file,
    dumps_strict,
    int_in,
    load_recipe,
    load_torch_file,
    positive_float,
    recipe_table,
    val_size_of,
)
from hwnas.cli.train import _has_cuda, data_options, embedded_note, load_data
from hwnas.supernet import SUPERNET_KINDS

VAL_FRACTION = 0.2  # as hwnas search's default [data] val_fraction: the split a search scores subnets on


def _settings_arg(text: str) -> dict[str, Any]:
    """``C=8,N=1`` or ``width=0.25``: the supernet's own settings (ints where they are ints)."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE...], got {part[:40]!r}")
        try:
            num = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key.strip()}={value[:20]!r} is not a number") from None
        if not math.isfinite(num):
            raise argparse.ArgumentTypeError(f"{key.strip()}={value[:20]!r} is not a finite number")
        out[key.strip()] = int(num) if num.is_integer() and "." not in value and "e" not in value.lower() else num
    return out


def read_checkpoint(path: str, kind: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(supernet, its other fields) from a ``hwnas supernet train`` checkpoint, or one line naming the fault."""
    from hwnas.evaluators.supernet import load_supernet
    from hwnas.supernet import SupernetError

    ckpt = load_torch_file(path, "supernet checkpoint")
    try:
        return load_supernet(ckpt, kind=kind)
    except SupernetError as e:
        raise UsageError(f"{path}: {e}") from None


def _device(name: str) -> str:
    return ("cuda" if _has_cuda() else "cpu") if name == "auto" else name


def _space_of(args: argparse.Namespace) -> Any:
    from hwnas.spaces import SpaceError, get_space

    config = None
    if args.recipe:
        if args.space != "mbconv":
            raise UsageError(f"--recipe gives an MBConv space's [space] table; the {args.space} space takes none")
        config = {k: v for k, v in recipe_table(load_recipe(args.recipe), args.recipe, "space").items() if k != "kind"}
    try:
        return get_space(args.space, config or None)
    except SpaceError as e:
        raise UsageError(f"--recipe {args.recipe}: {e}" if args.recipe else str(e)) from None


def _data_record(data: Any, val_size: int) -> dict[str, Any]:
    """What a checkpoint says of the data it was trained on: searches with it must use the same split."""
    return {"name": data.name, "source": str(data.source), "classes": list(data.classes),
            "resolution": int(data.resolution), "train_images": len(data.train_y), "val_size": int(val_size)}


def check_data(meta: dict[str, Any], data: Any, path: str) -> int:
    """The validation size the supernet held out, after checking ``data`` is the data it was trained on (its
    validation split was never trained on; another dataset's would be)."""
    rec = meta.get("data") or {}
    mine = {"classes": list(data.classes), "train_images": len(data.train_y)}
    for key, value in mine.items():
        if rec.get(key) != value:
            raise UsageError(f"{path} was trained on other data ({rec.get('name', '?')}: {key} differ); give the "
                             f"--data-dir it was trained on")
    val = rec.get("val_size")
    if not isinstance(val, int) or isinstance(val, bool) or not 1 <= val < len(data.train_y):
        raise UsageError(f"{path}: its data record has no usable val_size")
    return val


def checkpoint_fingerprint(path: str) -> dict[str, Any]:
    """What a study scored with a supernet is tied to: the checkpoint's content (a resume with another, or with
    the same file trained further, is refused), not its path."""
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise UsageError(f"cannot read supernet checkpoint {path}: {e.strerror or e}") from None
    return {"supernet_sha256": h.hexdigest()}


def search_evaluator(path: str, space: Any, data: Any, device: str, seed: int) -> Any:
    """The evaluator of ``hwnas search --evaluator supernet:PATH``: the checkpoint's supernet, checked against
    the space searched and the data, scoring on the split it held out."""
    from hwnas.evaluators.supernet import SupernetEvaluator
    from hwnas.supernet.train import space_record

    net, meta = read_checkpoint(path, kind=space.kind)
    if space_record(net.space) != space_record(space):
        raise UsageError(f"{path} is a supernet of another {space.kind} space than the one searched (its [space] "
                         "table differs): search the space it was trained on")
    val_size = check_data(meta, data, path)
    tx, ty, vx, vy = data.split_validation(val_size)
    if data.resolution != net.input_size:
        from hwnas.cli.search import _resize

        tx, vx = _resize(tx, net.input_size), _resize(vx, net.input_size)
    prog = meta["progress"]
    if not prog.get("finished"):
        print(f"hwnas: note: {path} was stopped at step {prog.get('step')} of {prog.get('total_steps')} "
              "(hwnas supernet train --resume finishes it)", file=sys.stderr)
    print(f"  supernet: scoring candidates with the weights of {path} ({len(vy)} held-out images, BatchNorm "
          f"recalibrated per candidate)", file=sys.stderr, flush=True)
    return SupernetEvaluator(net, (tx, ty), (vx, vy), device=device, seed=seed)


def cmd_supernet_train(args: argparse.Namespace) -> int:
    import torch

    from hwnas.atomic import write_atomic
    from hwnas.supernet import SupernetError, build_supernet
    from hwnas.supernet.train import TrainSettings, state_of, steps_per_epoch, train_supernet

    out = Path(args.output)
    check_output_file(out, "-o")
    if out.exists() and not args.force and not args.resume:
        raise UsageError(f"-o {out} already exists: pass --force to replace it (or --resume to continue it)")
    try:
        settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, paths=args.paths,
                                 sandwich=args.sandwich)
        settings.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
    space = _space_of(args)
    resumed: dict[str, Any] | None = None
    if args.resume:
        net, meta = read_checkpoint(str(out), kind=args.space)
        if meta.get("train") != settings.to_dict() or meta.get("seed") != args.seed:
            raise UsageError(f"--resume: {out} was trained with other settings or seed; give the same options")
        if net.settings() != {**net.settings(), **args.supernet}:
            raise UsageError(f"--resume: {out} is a supernet with other settings ({net.settings()})")
        from hwnas.supernet.train import space_record

        if space_record(net.space) != space_record(space):
            raise UsageError(f"--resume: {out} holds another {space.kind} space than --recipe defines")
        resumed = dict(meta["progress"])
        if resumed.get("finished"):
            print(f"{out}: already trained ({resumed.get('step')} steps); nothing to resume", file=sys.stderr)
            return 0
    data = load_data(args)
    embedded_note(args)
    val_size = check_data(meta, data, str(out)) if args.resume else val_size_of(len(data.train_y), VAL_FRACTION)
    try:
        tx, ty, _, _ = data.split_validation(val_size)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.resume:
        try:
            net = build_supernet(space, data.num_classes, data.resolution, args.supernet)
        except TypeError as e:
            raise UsageError(f"--supernet: {str(e)[:120]}") from None
        except SupernetError as e:
            raise UsageError(f"--supernet: {e}") from None
    device = _device(args.device)
    record = _data_record(data, val_size)

    def save(progress: dict[str, Any]) -> None:
        ckpt = state_of(net, settings, args.seed, progress, record)
        write_atomic(out, lambda f: torch.save(ckpt, f))

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    n_params = sum(p.numel() for p in net.parameters())
    print(f"training the {space.kind} supernet ({', '.join(f'{k}={v}' for k, v in net.settings().items())}, "
          f"{n_params / 1e6:.2f}M parameters) on {len(ty)} {data.name} images at {data.resolution} px ({val_size} "
          f"held out for scoring subnets), {settings.epochs} epochs of batch {settings.batch_size}, "
          f"{settings.paths} path(s) per step{' + sandwich' if settings.sandwich else ''}, {device}"
          + (f", resuming at step {resumed.get('step')}" if resumed else ""), file=sys.stderr, flush=True)
    bar = Progress(TextColumn("supernet"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not sys.stderr.isatty())
    with bar:
        task = bar.add_task("train", total=None, loss="-")

        per_epoch = steps_per_epoch(len(ty), settings.batch_size)

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.3f}")
            if bar.disable and step % per_epoch == 0:  # off a terminal: a line per epoch
                print(f"  epoch {step // per_epoch}/{settings.epochs}: step {step}/{total}, loss {loss:.3f}",
                      file=sys.stderr, flush=True)

        try:
            result = train_supernet(net, (tx, ty), settings, seed=args.seed, device=device, resume=resumed,
                                    checkpoint=save, progress=progress)
        except SupernetError as e:
            raise UsageError(str(e)) from None
    if result.stopped:
        print(f"hwnas: interrupted at step {result.step} of {result.total_steps}; saved {out}; continue with the same "
              f"command and --resume", file=sys.stderr)
        return 130
    losses = ", ".join(f"{v:.3f}" for v in result.epoch_losses[-3:])
    print(f"{out}: {result.total_steps} steps in {result.seconds:.0f} s; last epochs' training loss {losses}")
    return 0


def _archs(args: argparse.Namespace, space: Any) -> list[Any]:
    import numpy as np

    from hwnas.cli.common import load_arch

    archs = []
    for text in args.arch:
        try:
            a = load_arch(text)[1] if space.kind == "mbconv" else space.parse(text)  # mbconv: a name or file too
            space.encode(a)  # in the space, or SpaceError saying why
        except ValueError as e:
            raise UsageError(f"--arch {text[:60]!r}: {str(e).splitlines()[0] if str(e) else e}") from None
        archs.append(a)
    rng = np.random.default_rng(args.seed)
    archs += [space.decode(space.sample(rng)) for _ in range(args.sample)]
    if not archs:
        raise UsageError("give architectures to score (--arch ARCH) or --sample K")
    return archs


def cmd_supernet_eval(args: argparse.Namespace) -> int:
    from hwnas.evaluators.supernet import SupernetEvaluator

    net, meta = read_checkpoint(args.checkpoint)
    archs = _archs(args, net.space)
    data = load_data(args)
    embedded_note(args)
    val_size = check_data(meta, data, args.checkpoint)
    tx, ty, vx, vy = data.split_validation(val_size)
    ev = SupernetEvaluator(net, (tx, ty), (vx, vy), device=_device(args.device), seed=args.seed)
    rows = []
    for a in archs:
        r = ev.evaluate(a)
        if r.acc is None:
            raise UsageError(f"{a.to_string()[:80]}: {r.failure}")
        rows.append({"arch": a.to_string(), "acc": r.acc, "seconds": r.details["eval_seconds"]})
        if not args.json:
            print(f"{r.acc * 100:6.2f}%  {a.to_string()}", flush=True)
    if args.json:
        print(dumps_strict({"checkpoint": args.checkpoint, "val_images": val_size, "bn_images": len(ev.calib),
                            "progress": {k: meta["progress"].get(k) for k in ("step", "total_steps", "finished")},
                            "results": rows}, indent=2))
    return 0


def cmd_supernet_info(args: argparse.Namespace) -> int:
    net, meta = read_checkpoint(args.checkpoint)
    prog = meta["progress"]
    info = {"space": net.space.kind, "supernet": net.settings(), "num_classes": net.num_classes,
            "input_size": net.input_size, "params": sum(p.numel() for p in net.parameters()),
            "data": meta["data"], "train": meta["train"], "seed": meta.get("seed"),
            "progress": {k: prog.get(k) for k in ("step", "total_steps", "finished", "seconds", "epoch_losses")}}
    print(dumps_strict(info, indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("supernet", help="weight sharing: train a supernet, score subnets with its weights",
                       description="A supernet holds every architecture of a space in one set of weights (SPOS; "
                       "elastic in the Once-for-All sense for MBConv). Train it once, then score any architecture "
                       "in a second by inheriting its weights (hwnas search --evaluator supernet:PATH). See "
                       "docs/evaluators.md.")
    cmds = p.add_subparsers(dest="supernet_command", required=True, parser_class=type(p))
    t = cmds.add_parser("train", help="train a supernet with uniform single-path sampling (resumable)")
    t.add_argument("--space", choices=SUPERNET_KINDS, required=True, help="the space it holds")
    t.add_argument("--recipe", help="a recipe whose [space] table defines the MBConv space (default: the default "
                   "space)")
    t.add_argument("--supernet", type=_settings_arg, default={}, metavar="KEY=VALUE,...",
                   help="the supernet's own settings: nb201 C=16,N=5 (the benchmark's network; C=8,N=1 trains "
                   "in minutes on a CPU); mbconv width=1.0 (channel multiplier, as the proxy trainer's)")
    t.add_argument("--epochs", type=int_in(1, 10_000), default=10, help="passes over the training split (default 10)")
    t.add_argument("--batch-size", type=int_in(1, 65_536), default=64, help="images per step (default 64)")
    t.add_argument("--lr", type=positive_float, default=0.05, help="SGD learning rate, cosine to 0 (default 0.05)")
    t.add_argument("--paths", type=int_in(0, 16), default=1,
                   help="architectures drawn uniformly per step, gradients summed (default 1)")
    t.add_argument("--sandwich", action="store_true",
                   help="also train the largest and the smallest architecture every step (elastic MBConv only)")
    t.add_argument("--seed", type=SEED, default=0, help="seeds batches, augmentation and the drawn paths")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if present")
    t.add_argument("-o", "--output", required=True, metavar="PATH", help="the checkpoint to write")
    t.add_argument("--resume", action="store_true", help="continue the interrupted training saved in -o PATH")
    t.add_argument("--force", action="store_true", help="replace an existing -o PATH")
    data_options(t)
    t.set_defaults(func=cmd_supernet_train)

    e = cmds.add_parser("eval", help="score architectures with the supernet's weights (no training)")
    e.add_argument("checkpoint", metavar="PATH", help="a checkpoint hwnas supernet train wrote")
    e.add_argument("--arch", action="append", default=[], metavar="ARCH",
                   help="an architecture of the supernet's space (repeat for more)")
    e.add_argument("--sample", type=int_in(0, 100_000), default=0, help="also score K uniformly drawn architectures")
    e.add_argument("--seed", type=SEED, default=0, help="draws --sample and the BatchNorm calibration images")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if present")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    data_options(e)
    e.set_defaults(func=cmd_supernet_eval)

    i = cmds.add_parser("info", help="what a supernet checkpoint holds")
    i.add_argument("checkpoint", metavar="PATH")
    i.set_defaults(func=cmd_supernet_info)

