"""``hwnas score``: zero-cost proxy scores of architectures at initialisation (no training)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from hwnas.cli.common import SEED, UsageError, choice_list, dumps_strict, int_in
from hwnas.cli.train import data_options, embedded_note, load_data
from hwnas.evaluators.zero_cost import PROXIES
from hwnas.spaces import SPACE_KINDS

PROXY_HELP = ("synflow, naswot, jacov, snip, grad_norm, grasp, fisher, zico, zen, flops, params (multiply-adds), "
              "or all")


def parse_arch(text: str, kind: str | None) -> tuple[str, Any, Any]:
    """(space kind, space, architecture) of an ARCH argument: an MBConv genotype, reference name or JSON file;
    an NB201 cell string; a DARTS ``darts:...`` string or ``Genotype(...)``; a NAS-Bench-Macro code."""
    from hwnas.cli.arch import guess_space
    from hwnas.cli.common import load_arch
    from hwnas.spaces import get_space

    kind = kind or guess_space(text)
    space = get_space(kind)
    if kind == "mbconv":
        return kind, space, load_arch(text)[1]
    if not space.has_costs:
        raise UsageError(f"the {kind} space has no network hwnas can build to score")
    arch = space.parse(text)
    space.encode(arch)  # in the space, or SpaceError saying why
    return kind, space, arch


def cmd_score(args: argparse.Namespace) -> int:
    from hwnas.evaluators.zero_cost import BATCH_SIZE, ZeroCostError, ZeroCostScorer

    proxies = PROXIES if "all" in args.proxy else tuple(args.proxy)
    archs = [parse_arch(a, args.space) for a in args.arch]  # every ARCH checked before the data loads
    data = load_data(args)
    embedded_note(args)
    batch = args.batch_size or BATCH_SIZE
    scorers: dict[str, Any] = {}
    rows = []
    if not args.json:
        print(f"zero-cost scores at initialisation: one seeded minibatch of {batch} images (ZiCo: two) of "
              f"{data.name} at {data.resolution} px, {data.num_classes} classes, seed {args.seed}, CPU; higher is "
              "better; FLOPs are multiply-adds", flush=True)
    for text, (kind, space, arch) in zip(args.arch, archs, strict=True):
        if kind not in scorers:
            try:
                scorers[kind] = ZeroCostScorer(space, data.train_x, data.train_y, data.num_classes, batch_size=batch,
                                               seed=args.seed)
            except ZeroCostError as e:
                raise UsageError(str(e)) from None
        t0 = time.perf_counter()
        got = scorers[kind].score(arch, proxies)  # in the order asked; shared passes computed once
        secs = time.perf_counter() - t0
        name = arch.to_string() if hasattr(arch, "to_string") else str(arch)
        rows.append({"arch": text, "space": kind, "genotype": name, "scores": got, "seconds": round(secs, 3)})
        if not args.json:
            shown = text if len(text) <= 40 else text[:37] + "..."
            print(f"{shown}: " + ", ".join(f"{p} {_fmt(v)}" for p, v in got.items()) + f"  ({secs:.1f} s)",
                  flush=True)
    if args.json:
        print(dumps_strict({"batch_size": batch, "seed": args.seed, "resolution": data.resolution,
                            "num_classes": data.num_classes, "data": data.source, "results": rows}, indent=2))
    return 0


def _fmt(v: float) -> str:
    if v != v:  # NaN: e.g. jacov of a network whose output ignores its input
        return "nan"
    return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"


def register(sub: Any) -> None:
    p = sub.add_parser("score", help="zero-cost proxy scores of architectures (no training)",
                       description="Score architectures at initialisation with zero-cost proxies, from one "
                       "minibatch of real training images (see docs/evaluators.md for each proxy's definition).")
    p.add_argument("arch", nargs="+", metavar="ARCH",
                   help="an MBConv genotype, reference name or JSON file; an NB201 cell |op~0|+...; a DARTS cell "
                        "pair darts:... or Genotype(...); an 8-digit NAS-Bench-Macro code")
    p.add_argument("--proxy", default=["all"], type=choice_list("all", *PROXIES),
                   help=f"comma-separated: {PROXY_HELP} (default all)")
    p.add_argument("--space", choices=SPACE_KINDS, default=None,
                   help="the architectures' space (default: from each one's form)")
    p.add_argument("--batch-size", type=int_in(2, 4096), default=None, help="images per minibatch (default 64)")
    p.add_argument("--seed", type=SEED, default=0, help="draws the minibatch and seeds the initialisation")
    data_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_score)
