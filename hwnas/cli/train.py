"""``hwnas train`` (one network, full recipe) and ``hwnas data prepare``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from hwnas.atomic import write_atomic
from hwnas.cli.common import (
    BATCH_SIZE,
    EPOCHS,
    LR,
    MAX_EPOCHS,
    MAX_SECONDS,
    SECONDS,
    SEED,
    TRAIN_RESOLUTION,
    Parser,
    UsageError,
    check_output_dir,
    check_output_file,
    dumps_strict,
    load_arch,
    non_negative_int,
    probability,
)

EMBEDDED = Path(__file__).resolve().parents[1] / "datasets" / "cifar10-mini.tar.xz"
EMBEDDED_NOTE = ("the embedded CIFAR-10 subset (5,000 train / 1,000 test real images, low fidelity); "
                 "pass --data-dir with the full data (an ImageFolder folder or archive, or a torchvision "
                 "CIFAR-10 folder; --download on a connected machine) for real figures")


def cache_root(arg: str | None) -> Path:
    """The data cache: --cache-dir, else $HWNAS_CACHE, else ~/.cache/hwnas (``hwnas cache info`` shows it)."""
    return Path(arg or os.environ.get("HWNAS_CACHE") or Path.home() / ".cache" / "hwnas")


def cache_origin(arg: str | None) -> str:
    """Which setting chose ``cache_root(arg)``: "--cache-dir", "$HWNAS_CACHE" or "default"."""
    return "--cache-dir" if arg else "$HWNAS_CACHE" if os.environ.get("HWNAS_CACHE") else "default"


def load_data(args: argparse.Namespace) -> Any:
    """The dataset named by --data-dir (or the embedded subset), decoded once and cached. The caller says
    that the embedded subset is used (``embedded_note``) once its other input is checked: one line per error."""
    from rich.console import Console
    from rich.progress import Progress

    from hwnas.data import DataError, load_dataset

    path = Path(args.data_dir) if args.data_dir else EMBEDDED
    check_output_dir(cache_root(args.cache_dir), "$HWNAS_CACHE" if cache_origin(args.cache_dir) == "$HWNAS_CACHE"
                     else "--cache-dir")
    with Progress(console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("decoding images", total=None)
        try:
            return load_dataset(path, args.dataset, cache_root(args.cache_dir), resolution=args.image_size,
                                download=args.download,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
        except DataError as e:
            raise UsageError(str(e)) from None


def embedded_note(args: argparse.Namespace) -> None:
    if not args.data_dir:
        print(f"hwnas: using {EMBEDDED_NOTE}", file=sys.stderr)


def data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="cifar10", help="dataset name (labels the cache and reports)")
    p.add_argument("--data-dir", help="ImageFolder folder or archive (train/ + test/ or val/), torchvision CIFAR-10 "
                   "folder, or an hwnas .npz cache (default: the embedded CIFAR-10 subset)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision into --data-dir")
    p.add_argument("--image-size", type=TRAIN_RESOLUTION, default=None,
                   help="resize (shorter side) and centre-crop images to this size (default: keep)")
    p.add_argument("--cache-dir", help="where decoded datasets are kept, one file each (default $HWNAS_CACHE or "
                   "~/.cache/hwnas; see hwnas cache info)")


def cmd_data_prepare(args: argparse.Namespace) -> int:
    data = load_data(args)
    embedded_note(args)
    print(dumps_strict({"name": data.name, "source": data.source, "classes": list(data.classes),
                      "train": len(data.train_y), "test": len(data.test_y), "resolution": data.resolution}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    name, g = load_arch(args.arch)  # bad input is reported before torch loads (seconds)
    if args.resume and not args.output:
        args.output = args.resume  # the finished training replaces the interrupted one
    if args.output:  # found now, not after the training
        check_output_file(args.output, "-o")
        _check_overwrite(Path(args.output), args.resume, args.force)
    resume = _resume_state(args.resume, g) if args.resume else None
    data = load_data(args)

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hwnas.evaluators.training import Budget, Evaluator, EvaluatorError, Metrics, Recipe, TrainState

    try:
        recipe = Recipe(batch_size=args.batch_size, lr=args.lr, drop_path=args.drop_path, dropout=args.dropout,
                        precision=args.precision)
        budget = Budget(epochs=args.epochs) if args.seconds is None else Budget(seconds=args.seconds)
        if args.val_size:
            tx, ty, vx, vy = data.split_validation(args.val_size)
            held, held_name = (vx, vy), "val"
        else:
            tx, ty, held, held_name = data.train_x, data.train_y, (data.test_x, data.test_y), "test"
        device = ("cuda" if _has_cuda() else "cpu") if args.device == "auto" else args.device
        ev = Evaluator((tx, ty), held, data.num_classes, budget, recipe, device, concurrency=1)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if resume is not None:
        try:
            ev.check_resume(resume, args.seed)
        except ValueError as e:
            raise UsageError(f"--resume {args.resume}: {e}") from None
    out = Path(args.output) if args.output else None
    saved: dict[str, Any] = {}

    def save(_: int, model: torch.nn.Module, m: Any, interrupted: bool = False,
             state: TrainState | None = None) -> None:
        if out is None:
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        ckpt = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "genotype": g.to_dict(), "num_classes": data.num_classes, "classes": list(data.classes),
                "input_size": data.resolution, "metrics": m.to_dict(), "dataset": data.name,
                "interrupted": interrupted}
        if state is not None:
            ckpt["resume"] = state.to_dict()
        write_atomic(out, lambda f: torch.save(ckpt, f))
        saved["path"] = str(out)

    def save_interrupted(i: int, model: torch.nn.Module, m: Any, state: TrainState | None) -> None:
        if out is None:
            return
        save(i, model, m, interrupted=True, state=state)
        how = (f"continue it with the same command and --resume {out}" if state is not None else
               "stopped inside a step, so it cannot be resumed")
        print(f"hwnas train: {m.failure} ({m.epochs:.2f} epochs): the weights trained so far are saved to {out} "
              f"(not evaluated; {how}; exportable with hwnas export --weights)", file=sys.stderr)

    embedded_note(args)
    print(f"training {name} on {data.name} ({len(ty)} images, {data.resolution}px) for {budget.describe()} on "
          f"{device}" + (f", resumed at step {resume.step} of {resume.total}" if resume is not None else ""),
          file=sys.stderr)
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("train", total=None)
        try:
            m = ev.evaluate_many([g], args.seed, progress=lambda s, t: bar.update(task, completed=s, total=t),
                                 on_trained=save, on_interrupt=save_interrupted, resume=resume)[0]
        except EvaluatorError as e:  # the device broke (a sticky CUDA error): a failed training, said in one line
            m = e.partial[0] if e.partial else Metrics(g.to_string(), args.seed, device=device, failure=str(e))
    result = {"arch": name, "genotype": g.to_string(), "dataset": data.name, "held_out": held_name,
              f"{held_name}_acc": m.val_acc, **{k: v for k, v in m.to_dict().items() if k not in ("genotype",
                                                                                                   "val_acc")},
              "checkpoint": saved.get("path")}
    if args.json:
        print(dumps_strict(result, indent=2))
    elif m.failure:
        print(f"{name}: {m.failure}")  # "training failed: ...", "build failed: ...", "interrupted after ..."
    else:
        print(f"{name}: {held_name} accuracy {m.val_acc:.4f} after {m.epochs:g} epochs ({m.train_seconds:.1f} s, "
              f"{m.images_per_s:.0f} img/s)" + (f"; checkpoint {out}" if out else ""))
    return 1 if m.failure else 0


def register(sub: Any) -> None:
    t = sub.add_parser("train", help="train one network and report held-out accuracy",
                       description="Train ARCH with the proxy recipe (GPU-resident data, CUDA graphs on GPU) and "
                       "report test accuracy (or --val-size for a validation split carved from train).")
    t.add_argument("arch", metavar="ARCH", help="reference name, genotype string or JSON file")
    data_options(t)
    b = t.add_mutually_exclusive_group()
    b.add_argument("--epochs", type=EPOCHS, default=10.0, help=f"epochs (default 10, at most {MAX_EPOCHS:g})")
    b.add_argument("--seconds", type=SECONDS, default=None,
                   help=f"wall-clock training budget instead (at most {MAX_SECONDS:g})")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if present")
    t.add_argument("--batch-size", type=BATCH_SIZE, default=256)
    t.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="CUDA autocast: auto = bf16 where the GPU supports it (measured 1.35x faster than fp32 "
                        "on an H100); the CPU always trains in fp32")
    t.add_argument("--lr", type=LR, default=0.2, help="peak learning rate per 512 images")
    t.add_argument("--dropout", type=probability, default=0.0, help="dropout before the classifier, in [0, 1)")
    t.add_argument("--drop-path", type=probability, default=0.0,
                   help="stochastic depth rate of the last block, in [0, 1)")
    t.add_argument("--val-size", type=non_negative_int, default=0,
                   help="hold out this many training images and report on them instead of the test split")
    t.add_argument("--seed", type=SEED, default=0)
    t.add_argument("-o", "--output", help="checkpoint path (.pt: state_dict + genotype, loads with weights_only); "
                   "an interrupted training (Ctrl-C, SIGTERM) saves the weights trained so far there, with what "
                   "--resume needs")
    t.add_argument("--resume", metavar="CKPT", help="continue the interrupted training saved in CKPT where it "
                   "stopped (same ARCH, data and options as when it started; on CPU the result is identical to an "
                   "uninterrupted run); -o defaults to CKPT")
    t.add_argument("--force", action="store_true", help="replace an existing checkpoint at -o (refused without it, "
                   "unless --resume names that file)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("data", help="prepare datasets")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    p = dsub.add_parser("prepare", help="decode a dataset once into the cache")
    data_options(p)
    p.set_defaults(func=cmd_data_prepare)


def _check_overwrite(out: Path, resume: str | None, force: bool) -> None:
    """Refuse to replace an existing file at -o (a finished training, another one's interrupted state) unless
    --force says so or --resume continues that very file."""
    if force or not (out.exists() or out.is_symlink()):
        return
    if resume is not None:
        try:
            if os.path.samefile(resume, out):
                return
        except OSError:  # --resume names no file: said by its own check
            pass
    raise UsageError(f"-o {out} already exists: pass --force to replace it (or --resume {out} to continue the "
                     "interrupted training saved there)")


def _resume_state(path: str, g: Any) -> Any:
    """The ``TrainState`` saved in the interrupted checkpoint ``path`` for genotype ``g`` (one-line errors)."""
    from hwnas.cli.export import load_checkpoint
    from hwnas.evaluators.training import TrainState
    from hwnas.genotype import Genotype, GenotypeError

    ckpt = load_checkpoint(path)
    if ckpt.get("interrupted") is not True:
        raise UsageError(f"--resume {path}: not an interrupted training (nothing to resume)")
    if "resume" not in ckpt:
        raise UsageError(f"--resume {path}: the training was stopped inside a step; its weights are saved but "
                         "it cannot be resumed")
    try:  # read and compared as hwnas export --weights does
        was = Genotype.from_dict(ckpt.get("genotype"))
    except GenotypeError as e:
        raise UsageError(f"--resume {path}: {e}") from None
    if was.normalized() != g.normalized():
        raise UsageError(f"--resume {path}: the checkpoint trained {was.to_string()}, not ARCH {g.to_string()}")
    try:
        return TrainState.from_dict(ckpt["resume"], ckpt["state_dict"])
    except ValueError as e:
        raise UsageError(f"--resume {path}: {e}") from None


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False
