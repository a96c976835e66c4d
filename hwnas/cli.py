"""Command-line interface. The only layer that reads files, environment and flags.

Bad input of any kind ends with one line ``hwnas: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from hwnas import __version__
from hwnas.genotype import Genotype, GenotypeError, parse_genotype
from hwnas.references import REFERENCE_NAMES, describe_reference, reference
from hwnas.space import SearchSpace, SpaceError
from hwnas.walker import flops, params, walk

FLOPS_HELP = "FLOPs are multiply-adds (MACs) of conv and linear layers, as in the MnasNet/EfficientNet papers"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


# ---- input resolution ---------------------------------------------------------------------------
def load_arch(arg: str) -> tuple[str, Genotype]:
    """ARCH is a reference name, a genotype string, or a JSON file holding a genotype."""
    key = arg.strip().lower().replace("_", "-")
    if key in REFERENCE_NAMES:
        return key, reference(key)
    path = Path(arg)
    if path.suffix.lower() == ".json" or (path.exists() and "," not in arg):
        if not path.is_file():
            raise UsageError(f"genotype file not found: {arg}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {arg}: {e}") from None
        try:
            return path.name, Genotype.from_json(text)
        except GenotypeError as e:
            raise UsageError(f"{arg}: {e}") from None
    if "," not in arg:
        raise UsageError(
            f"unknown architecture {arg!r}: not a reference ({', '.join(REFERENCE_NAMES)}), "
            "a genotype string or a .json file"
        )
    return "genotype", parse_genotype(arg)


def load_recipe(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"recipe not found: {path}")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"recipe {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot read recipe {path}: {e}") from None


def load_space(recipe_path: str | None) -> SearchSpace:
    recipe = load_recipe(recipe_path)
    if "space" not in recipe:
        return SearchSpace.default()
    try:
        return SearchSpace.from_dict(recipe["space"])
    except (SpaceError, TypeError) as e:
        raise UsageError(f"recipe {recipe_path}: {e}") from None


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
    genotypes = [space.decode(space.sample(rng)) for _ in range(args.n)]
    if args.json:
        print(json.dumps([{"genotype": g.to_string(), "resolution": args.resolution,
                           "flops": flops(g, args.resolution), "params": params(g)} for g in genotypes], indent=2))
    else:
        for g in genotypes:
            print(g.to_string())
    return 0


# ---- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hwnas", description="Hardware-aware multi-objective neural architecture search. "
                + FLOPS_HELP + ".")
    p.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("describe", help="params and FLOPs of an architecture, per stage",
                       description=f"Params and FLOPs of ARCH. {FLOPS_HELP}.")
    d.add_argument("arch", metavar="ARCH", help=f"a reference ({', '.join(REFERENCE_NAMES)}), "
                   "a genotype string, or a JSON file")
    d.add_argument("--resolution", type=positive_int, default=224, help="input size in pixels (default 224)")
    d.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs (default 1000)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=cmd_describe)

    sp = sub.add_parser("space", help="inspect the search space")
    ssub = sp.add_subparsers(dest="space_command", required=True, parser_class=_Parser)
    info = ssub.add_parser("info", help="choices and size of the space")
    info.add_argument("--recipe", help="TOML recipe whose [space] table defines the space (default: built-in)")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_space_info)
    smp = ssub.add_parser("sample", help="print random genotypes of the space")
    smp.add_argument("-n", type=positive_int, default=5, help="how many (default 5)")
    smp.add_argument("--seed", type=non_negative_int, default=0)
    smp.add_argument("--recipe", help="TOML recipe whose [space] table defines the space (default: built-in)")
    smp.add_argument("--resolution", type=positive_int, default=224, help="resolution for --json FLOPs")
    smp.add_argument("--json", action="store_true", help=f"with params and FLOPs. {FLOPS_HELP}")
    smp.set_defaults(func=cmd_space_sample)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, GenotypeError, SpaceError) as e:
        print(f"hwnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
