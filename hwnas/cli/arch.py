"""``hwnas describe`` and ``hwnas space``: architectures and the search space, no torch needed."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

import numpy as np

from hwnas.cli.common import (
    CLASSES,
    FLOPS_HELP,
    RESOLUTION,
    SEED,
    Parser,
    UsageError,
    dumps_strict,
    load_arch,
    load_space,
    streamed_count,
)
from hwnas.genotype import Genotype
from hwnas.references import REFERENCE_NAMES, describe_reference
from hwnas.space import SearchSpace
from hwnas.spaces import SPACE_KINDS
from hwnas.walker import walk


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


def guess_space(arch: str) -> str:
    """The space an architecture string belongs to, from its form: NB201's ``|op~0|+|...|``, a DARTS cell pair
    (``darts:...`` or DARTS's ``Genotype(...)``), a NAS-Bench-Macro 8-digit code, else an MBConv genotype
    (string, JSON file or reference name)."""
    if arch.startswith("|"):
        return "nb201"
    if arch.lstrip().startswith(("darts:", "Genotype(")):
        return "darts"
    if len(arch) == 8 and set(arch) <= set("012"):
        return "macro"
    return "mbconv"


def cell_describe_data(kind: str, arch: str, resolution: int | None, num_classes: int | None) -> dict[str, Any]:
    """FLOPs, params and the benchmark's published results of an architecture of a benchmark space."""
    from hwnas.spaces import get_space

    space = get_space(kind)
    a = space.parse(arch)
    space.encode(a)  # in the space, or SpaceError saying why
    d: dict[str, Any] = {"space": kind, "arch": a.to_string()}
    if space.has_costs:
        res, nc = resolution or space.default_resolution, num_classes or space.default_num_classes
        d.update({"resolution": res, "num_classes": nc, "flops": space.flops(a, res, nc),
                  "params": space.params(a, nc), "flops_unit": "multiply-adds"})
    from hwnas import tabular

    if kind == "nb201":
        t = tabular.nb201()
        i = t.index[a.to_string()]
        d["benchmark"] = {"nb201_index": i, **{f"test_acc_{k}": float(v[i]) for k, v in t.acc.items()},
                          "latency_ms": {k: float(v[i]) for k, v in sorted(t.latency.items())}}
    elif kind == "macro":
        m = tabular.macro()
        code = space.code(a)  # type: ignore[attr-defined]
        i = m.index[code]
        d["benchmark"] = {"code": code, "mean_acc": float(m.mean_acc[i]), "test_acc": [float(x) for x in m.test_acc[i]],
                          "params": int(m.params[i]), "flops": int(m.flops[i])}
    elif kind == "transnas-micro":
        tn = tabular.transnas_micro()
        i = tn.index[a.to_string()]
        d["benchmark"] = {k: float(v[i]) for k, v in tn.val.items()}
    return d


def cmd_describe(args: argparse.Namespace) -> int:
    kind = args.space or guess_space(args.arch)
    if kind != "mbconv":
        d = cell_describe_data(kind, args.arch, args.resolution, args.num_classes)
        if args.json:
            print(dumps_strict(d, indent=2))
            return 0
        print(f"{kind}: {d['arch']}")
        if "flops" in d:
            print(f"params: {d['params']:,} at {d['num_classes']} classes; FLOPs: {_fmt_m(d['flops'])} multiply-adds "
                  f"at {d['resolution']}x{d['resolution']}")
        for k, v in d.get("benchmark", {}).items():
            if isinstance(v, dict):
                print(f"{k}: " + ", ".join(f"{dk} {dv:.4g}" for dk, dv in v.items()))
            else:
                print(f"{k}: {v}")
        return 0
    args.resolution = args.resolution or 224
    args.num_classes = args.num_classes or 1000
    name, g = load_arch(args.arch)
    d = describe_data(name, g, args.resolution, args.num_classes)
    if args.json:
        print(dumps_strict(d, indent=2))
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


def _space(args: argparse.Namespace) -> Any:
    if getattr(args, "space", None) not in (None, "mbconv"):
        if args.recipe:
            raise UsageError("--recipe defines an MBConv space; give --space or --recipe, not both")
        from hwnas.spaces import get_space

        return get_space(args.space)
    return load_space(args.recipe)


def space_info_data(space: SearchSpace) -> dict[str, Any]:
    return {"name": space.name, "n_dims": space.n_dims, "size": space.size(),
            "dims": {name: list(opts) for name, opts in space.dims}, "space": space.to_dict()}


def cmd_space_info(args: argparse.Namespace) -> int:
    space = _space(args)
    if space.kind != "mbconv":
        info = space.info()
        if args.json:
            print(dumps_strict(info, indent=2))
            return 0
        print(f"space {space.kind} ({space.name}): {space.n_dims} choice dimensions, {space.size():,} architectures; "
              f"costs at {space.default_resolution} px, {space.default_num_classes} classes"
              + ("" if space.has_costs else " (no FLOPs/params model: its networks differ per task)"))
        for name, opts in space.dims:
            print(f"  {name}: {' '.join(map(str, opts))}")
        return 0
    if args.json:
        print(dumps_strict(space_info_data(space), indent=2))
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
    space = _space(args)
    rng = np.random.default_rng(args.seed)
    # streamed: the first lines come at once, whatever -n is (and `| head` or Ctrl-C stops it)
    print("[" if args.json else "", end="\n" if args.json else "")
    for i in range(args.n):
        g = space.decode(space.sample(rng))
        if args.json:
            res = args.resolution or space.default_resolution
            item = dumps_strict({"genotype": g.to_string(), "resolution": res,
                               **({"flops": space.flops(g, res), "params": space.params(g)} if space.has_costs
                                  else {})}, indent=2)
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
    d.add_argument("--resolution", type=RESOLUTION, default=None,
                   help="input size in pixels (default: the space's, 224 for mbconv)")
    d.add_argument("--num-classes", type=CLASSES, default=None, help="classifier outputs (default: the space's, 1000 "
                   "for mbconv)")
    d.add_argument("--space", choices=SPACE_KINDS, default=None,
                   help="the architecture's space (default: from its form: |op~0|+... is nb201, darts:... or "
                        "Genotype(...) darts, 8 digits macro)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=cmd_describe)

    sp = sub.add_parser("space", help="inspect the search space")
    ssub = sp.add_subparsers(dest="space_command", required=True, parser_class=Parser)
    info = ssub.add_parser("info", help="choices and size of the space")
    info.add_argument("--recipe", help="TOML recipe whose [space] table defines the space (default: built-in)")
    info.add_argument("--space", choices=SPACE_KINDS, default=None, help="a built-in space (default mbconv)")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_space_info)
    smp = ssub.add_parser("sample", help="print random genotypes of the space")
    smp.add_argument("-n", type=streamed_count, default=5,
                     help="how many (default 5; streamed, so any number: stop it with | head or Ctrl-C)")
    smp.add_argument("--seed", type=SEED, default=0)
    smp.add_argument("--recipe", help="TOML recipe whose [space] table defines the space (default: built-in)")
    smp.add_argument("--space", choices=SPACE_KINDS, default=None, help="a built-in space (default mbconv)")
    smp.add_argument("--resolution", type=RESOLUTION, default=None,
                     help="resolution for --json FLOPs (default: the space's, 224 for mbconv)")
    smp.add_argument("--json", action="store_true", help=f"with params and FLOPs. {FLOPS_HELP}")
    smp.set_defaults(func=cmd_space_sample)
