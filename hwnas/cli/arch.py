"""``hwnas describe`` and ``hwnas space``: architectures and the search space, no torch needed."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

import numpy as np

from hwnas.cli.common import CLASSES, FLOPS_HELP, RESOLUTION, SEED, Parser, load_arch, load_space, positive_int
from hwnas.genotype import Genotype
from hwnas.references import REFERENCE_NAMES, describe_reference
from hwnas.space import SearchSpace
from hwnas.walker import flops, params, walk


# ---- commands -----------------------------------------------------------------------------------
def _fmt_m(n: int) -> str:
    return f"{n / 1e6:.1f} M"


def describe_data(name: str, g: Genotype, resolution: int, num_classes: int) -> dict[str, Any]:
    layers = list(walk(g, resolution, num_classes))
    stages: list[dict[str, Any]] = []
    rows = iter(layers[1:-2])
    for i, st in enumerate(g.stages, start=1):
        blocks = [next(rows) for _ in range(st.repeats)]
        stages.append({
            "stage": i, "block": st.to_string(), "in_size": blocks[0].size, "out_size": blocks[-1].out_size,
            "flops": sum(b.macs() for b in blocks), "params": sum(b.params() for b in blocks),
        })
    return {
        "name": name,
        "genotype": g.to_string(),
        "genotype_json": g.to_dict(),
        "resolution": resolution,
        "num_classes": num_classes,
        "params": sum(layer.params() for layer in layers),
        "flops": sum(layer.macs() for layer in layers),
        "flops_unit": "multiply-adds",
        "stem": {"flops": layers[0].macs(), "params": layers[0].params(), "stride": layers[0].stride},
        "stages": stages,
        "head": {"flops": layers[-2].macs() + layers[-1].macs(), "params": layers[-2].params() + layers[-1].params()},
    }


def cmd_describe(args: argparse.Namespace) -> int:
    name, g = load_arch(args.arch)
    d = describe_data(name, g, args.resolution, args.num_classes)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    title = name if name not in REFERENCE_NAMES else f"{name}: {describe_reference(name)}"
    t = Table(title=title, caption=FLOPS_HELP)
    for col in ("stage", "block", "in", "out", "FLOPs", "params"):
        t.add_column(col, justify="left" if col == "block" else "right")
    t.add_row("stem", f"conv3x3 s{d['stem']['stride']} c{g.stem}", str(args.resolution), "",
              _fmt_m(d["stem"]["flops"]), f"{d['stem']['params']:,}")
    for s in d["stages"]:
        t.add_row(str(s["stage"]), s["block"], str(s["in_size"]), str(s["out_size"]), _fmt_m(s["flops"]),
                  f"{s['params']:,}")
    t.add_row("head", f"conv1x1 c{g.head} + fc{args.num_classes}", "", "", _fmt_m(d["head"]["flops"]),
              f"{d['head']['params']:,}")
    t.add_row("total", "", "", "", _fmt_m(d["flops"]), f"{d['params']:,}", style="bold")
    console = Console()
    console.print(t)
    console.print(f"genotype: {d['genotype']}", soft_wrap=True)
    console.print(f"params: {d['params']:,} at {args.num_classes} classes; "
                  f"FLOPs: {_fmt_m(d['flops'])} multiply-adds at {args.resolution}x{args.resolution}")
    return 0


def space_info_data(space: SearchSpace) -> dict[str, Any]:
    return {"name": space.name, "n_dims": space.n_dims, "size": space.size(),
            "dims": {name: list(opts) for name, opts in space.dims}, "space": space.to_dict()}


def cmd_space_info(args: argparse.Namespace) -> int:
    space = load_space(args.recipe)
    if args.json:
        print(json.dumps(space_info_data(space), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    def fmt(values: tuple[Any, ...]) -> str:
        return " ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)

    console = Console()
    console.print(f"[bold]space {space.name}[/]: {len(space.stages)} stages, {space.n_dims} choice dimensions; "
                  f"stem {space.stem}, head {space.head}, channels rounded to multiples of {space.divisor}")
    console.print(f"  activation: {fmt(space.activations)}; width factor: {fmt(space.width_factors)}; "
                  f"depth factor: {fmt(space.depth_factors)}")
    per_stage = [st.options() for st in space.stages]
    varying = [k for k in per_stage[0] if any(o[k] != per_stage[0][k] for o in per_stage)]
    for k, v in per_stage[0].items():
        if k not in varying:
            console.print(f"  every stage, {k}: {fmt(v)}")
    t = Table(title="stages")
    for col in ("stage", "base channels", "stride", *varying):
        t.add_column(col)
    for i, (st, o) in enumerate(zip(space.stages, per_stage, strict=True), start=1):
        t.add_row(str(i), str(st.channels), str(st.stride), *(fmt(o[k]) for k in varying))
    console.print(t)
    console.print(f"size: {space.size():.3e} choice vectors (an upper bound on distinct networks: ds ignores the "
                  "expansion, ir with expansion 1 is ds, and noskip is a no-op where no block can skip)")
    return 0


def cmd_space_sample(args: argparse.Namespace) -> int:
    space = load_space(args.recipe)
    rng = np.random.default_rng(args.seed)
    # streamed: the first lines come at once, whatever -n is (and `| head` or Ctrl-C stops it)
    print("[" if args.json else "", end="\n" if args.json else "")
    for i in range(args.n):
        g = space.decode(space.sample(rng))
        if args.json:
            item = json.dumps({"genotype": g.to_string(), "resolution": args.resolution,
                               "flops": flops(g, args.resolution), "params": params(g)}, indent=2)
            print(textwrap.indent(item, "  ") + ("," if i < args.n - 1 else ""))
        else:
            print(g.to_string())
    if args.json:
        print("]")
    return 0


def register(sub: Any) -> None:
    d = sub.add_parser("describe", help="params and FLOPs of an architecture, per stage",
                       description=f"Params and FLOPs of ARCH. {FLOPS_HELP}.")
    d.add_argument("arch", metavar="ARCH", help=f"a reference ({', '.join(REFERENCE_NAMES)}), "
                   "a genotype string, or a JSON file")
    d.add_argument("--resolution", type=RESOLUTION, default=224, help="input size in pixels (default 224)")
    d.add_argument("--num-classes", type=CLASSES, default=1000, help="classifier outputs (default 1000)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=cmd_describe)

    sp = sub.add_parser("space", help="inspect the search space")
    ssub = sp.add_subparsers(dest="space_command", required=True, parser_class=Parser)
    info = ssub.add_parser("info", help="choices and size of the space")
    info.add_argument("--recipe", help="TOML recipe whose [space] table defines the space (default: built-in)")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_space_info)
    smp = ssub.add_parser("sample", help="print random genotypes of the space")
    smp.add_argument("-n", type=positive_int, default=5, help="how many (default 5)")
    smp.add_argument("--seed", type=SEED, default=0)
    smp.add_argument("--recipe", help="TOML recipe whose [space] table defines the space (default: built-in)")
    smp.add_argument("--resolution", type=RESOLUTION, default=224, help="resolution for --json FLOPs")
    smp.add_argument("--json", action="store_true", help=f"with params and FLOPs. {FLOPS_HELP}")
    smp.set_defaults(func=cmd_space_sample)
