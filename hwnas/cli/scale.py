"""``hwnas scale search`` (EfficientNet step 1: grid of depth/width/resolution coefficients) and
``hwnas scale family`` (step 2: B0..B7 from coefficients, explicit multipliers or the published preset)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hwnas.atomic import save_figure
from hwnas.cli.common import (
    BATCH_SIZE,
    CLASSES,
    EPOCHS,
    FLOPS_HELP,
    LR,
    RESOLUTION,
    RUNS,
    SEED,
    UsageError,
    check_output_file,
    dumps_strict,
    load_arch,
    non_negative_float,
    positive_float,
    positive_float_at_most,
    positive_int,
    write_text_atomic,
)
from hwnas.compound import (
    MAX_MULTIPLIER,
    PRESETS,
    Coefficients,
    CompoundError,
    Member,
    coefficient_grid,
    efficientnet_family,
    family_from_coefficients,
    family_from_multipliers,
    parse_coefficients,
    parse_multipliers,
    parse_phis,
    round8,
    subsample,
)
from hwnas.references import REFERENCE_NAMES
from hwnas.units import NumberError, number


def _compound(fn: Any, *a: Any) -> Any:
    try:
        return fn(*a)
    except CompoundError as e:
        raise UsageError(str(e)) from None


def _console(to_stderr: bool) -> Any:
    from rich.console import Console

    c = Console(stderr=to_stderr)
    if not c.is_terminal:  # logs and pipes: wide enough for every column
        c.width = max(c.width, 130)
    return c


# ---- family ----------------------------------------------------------------------------------------
def _coefficients_from_search(path: str) -> Coefficients:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"scale search result {path} is a directory (give its scale-search.json)" if p.is_dir()
                         else f"scale search result not found: {path}")
    try:
        best = json.loads(p.read_text(encoding="utf-8"))["best"]
        coefs = [number(best[k], f"best {k}", low=1, high=MAX_MULTIPLIER) for k in ("alpha", "beta", "gamma")]
        return _compound(parse_coefficients, ",".join(map(repr, coefs)))
    except NumberError as e:
        raise UsageError(f"scale search result {path}: {e}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UsageError(f"{path} is not a result of hwnas scale search ({type(e).__name__}: {e})") from None


def build_family(args: argparse.Namespace) -> tuple[list[Member], dict[str, Any]]:
    name, base = load_arch(args.arch)
    verbatim = args.multipliers is not None or args.preset is not None
    if verbatim and args.resolution is not None:
        raise UsageError("--resolution is the base of --coefficients; --multipliers/--preset carry resolutions")
    if args.multipliers is not None and args.phi is not None:
        raise UsageError("--phi selects members of --coefficients/--from-search/--preset, not of --multipliers")
    phis = _compound(parse_phis, "0-7" if args.phi is None else args.phi)  # --phi "" is an error, not all
    nc = args.num_classes
    spec: dict[str, Any] = {"arch": name, "base_genotype": base.to_string(), "num_classes": nc}
    if args.multipliers is not None:
        triples = _compound(parse_multipliers, args.multipliers)
        spec["multipliers"] = [list(t) for t in triples]
        return _compound(family_from_multipliers, base, triples, nc), spec
    if args.preset is not None:
        if max(phis) > 7:
            raise UsageError(f"--preset {args.preset} has members 0-7, not {max(phis)}")
        spec["preset"] = args.preset
        members = efficientnet_family(base, nc)
        return [members[p] for p in phis], spec
    coeffs = (_coefficients_from_search(args.from_search) if args.from_search
              else _compound(parse_coefficients, args.coefficients))
    spec |= {"coefficients": coeffs.to_dict(), "base_resolution": args.resolution or 224,
             "resolution_rounding": "nearest multiple of 8",
             "dropout_rule": "0.2 + 0.3 * phi / 7, capped at 0.5"}
    return _compound(family_from_coefficients, base, coeffs, phis, args.resolution or 224, nc), spec


def _family_table(rows: list[dict[str, Any]], title: str, with_latency: bool) -> Any:
    from rich.table import Table

    t = Table(title=title, caption=f"{FLOPS_HELP}; depth = repeats x d (ceil per stage), width = channels x w "
              "(multiple of 8, never below 90 %)")
    cols = ["member", "phi", "width", "depth", "res", "dropout", "params (M)", "FLOPs (B)"]
    if with_latency:
        cols.append("predicted ms")
    if any("parity_max_rel_error" in r for r in rows):
        cols += ["parity rel err", "ORT ms bs1", "torch CPU ms bs1"]
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        cells = [r["name"], "-" if r["phi"] is None else str(r["phi"]), f"{r['width']:.4g}", f"{r['depth']:.4g}",
                 str(r["resolution"]), f"{r['dropout']:g}", f"{r['params'] / 1e6:.2f}", f"{r['flops'] / 1e9:.3f}"]
        if with_latency:
            p = r.get("predicted_latency") or {}
            cells.append(f"{p['ms']:.3f}" if p.get("ms") is not None else "n/a")
        if "parity_max_rel_error" in r:
            cells += [f"{r['parity_max_rel_error']:.1e}", _ms(r.get("ort_ms")), _ms(r.get("torch_cpu_ms"))]
        t.add_row(*cells)
    return t


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def plot_family(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["name"] for r in rows]
    a1.plot(names, [r["flops"] / 1e9 for r in rows], "o-", label="FLOPs (B multiply-adds)")
    a1.plot(names, [r["params"] / 1e6 for r in rows], "s-", label="params (M)")
    a1.set_yscale("log")
    a1.set_title("cost per member")
    a1.legend()
    a2.plot(names, [r["resolution"] for r in rows], "o-", label="resolution (px)")
    a2b = a2.twinx()
    a2b.plot(names, [r["width"] for r in rows], "s--", color="tab:orange", label="width x")
    a2b.plot(names, [r["depth"] for r in rows], "^--", color="tab:green", label="depth x")
    a2.set_title("scaling per member")
    a2.legend(loc="upper left")
    a2b.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def cmd_scale_family(args: argparse.Namespace) -> int:
    from hwnas.cli.export import export_dir, load_table_arg
    from hwnas.latency.table import predicted_latency

    out_dir = export_dir(args.export) if args.export else None
    if args.plot:
        check_output_file(args.plot, "--plot")
        if Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
            raise UsageError(f"--plot {args.plot}: give a .png (or .pdf, .svg, .jpg) file name")
    members, spec = build_family(args)
    table = load_table_arg(args.table)
    rows = [{**m.to_dict(), "predicted_latency": predicted_latency(table, m.genotype, m.resolution)}
            for m in members]
    title = f"{spec['arch']} family" + (f" ({spec['coefficients']['alpha']:g}, {spec['coefficients']['beta']:g}, "
                                        f"{spec['coefficients']['gamma']:g})" if "coefficients" in spec else "")
    status = 0
    if out_dir is not None:
        status = _export_family(members, rows, out_dir, args, table, spec)
    plot = Path(args.plot) if args.plot else (out_dir / "family.png" if out_dir else None)
    if plot is not None:
        plot_family(rows, plot, title)
    result = {**spec, "members": rows, "plot": str(plot) if plot else None}
    if out_dir is not None:
        write_text_atomic(out_dir / "family.json", dumps_strict(result, indent=2) + "\n")
    console = _console(args.json)
    console.print(_family_table(rows, title, table is not None))
    if plot is not None:
        console.print(f"plot: {plot}")
    if args.json:
        print(dumps_strict(rows, indent=2))
    return status


def _export_family(members: list[Member], rows: list[dict[str, Any]], out_dir: Path, args: argparse.Namespace,
                   table: Any, spec: dict[str, Any]) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hwnas.export import ExportError, export_genotype

    bad = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=_console(True), transient=True) as bar:
        task = bar.add_task("exporting", total=len(members))
        for m, row in zip(members, rows, strict=True):
            bar.update(task, description=f"exporting {m.name} ({m.resolution} px)")
            path = out_dir / f"{m.name.lower()}.onnx"
            info = {"family": {k: v for k, v in spec.items() if k != "base_genotype"} | {
                "member": m.name, "phi": m.phi, "width": m.width, "depth": m.depth}}
            try:
                s = export_genotype(m.genotype, path, m.resolution, args.num_classes, dropout=m.dropout,
                                    table=table, runs=args.runs, measure=not args.no_latency, info=info)
            except ExportError as e:
                raise UsageError(f"{m.name}: {e}") from None
            lat = s.get("measured_latency") or {}
            row |= {"onnx": str(path), "parity_max_rel_error": s["parity"]["max_rel_error"],
                    "parity_ok": s["parity"]["ok"],
                    "ort_ms": (lat.get("onnxruntime") or {}).get("median_ms"),
                    "torch_cpu_ms": (lat.get("torch_cpu") or {}).get("median_ms")}
            if not s["parity"]["ok"]:
                bad.append(m.name)
            bar.advance(task)
    print(f"exported {len(members)} checked ONNX files (+ .json sidecars) to {out_dir}", file=sys.stderr)
    if bad:
        print(f"hwnas: parity check failed for: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


# ---- search ----------------------------------------------------------------------------------------
def cmd_scale_search(args: argparse.Namespace) -> int:
    from hwnas.cli.export import export_dir

    name, base = load_arch(args.arch)  # bad input is reported before torch loads (seconds)
    out_dir = Path(args.out_dir or f"search/runs/scale-search-{name.replace('.json', '')}")
    export_dir(str(out_dir))
    grid = _compound(coefficient_grid, args.step, 1.0, 2.0, args.tolerance)
    cands = subsample(grid, args.max_candidates)
    if args.baseline:
        cands = [Coefficients(1.0, 1.0, 1.0), *cands]

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hwnas.cli.search import _resize
    from hwnas.cli.train import _has_cuda, embedded_note, load_data
    from hwnas.evaluators.training import Budget, Evaluator, EvaluatorError, Recipe
    from hwnas.scaling import scale
    from hwnas.walker import flops, params

    device = ("cuda" if _has_cuda() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA device")
    data = load_data(argparse.Namespace(data_dir=args.data_dir, dataset=args.dataset, cache_dir=args.cache_dir,
                                        image_size=None, download=args.download))
    try:
        tx, ty, vx, vy = data.split_validation(args.val_size)
        recipe = Recipe(batch_size=args.batch_size, lr=args.lr)
        budget = Budget(epochs=args.epochs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    evaluators: dict[int, Any] = {}
    rows: list[dict[str, Any]] = []
    embedded_note(args)
    print(f"hwnas scale search: {len(cands)} of {len(grid)} grid candidates (step {args.step:g}, "
          f"|a*b^2*g^2 - 2| <= {args.tolerance:g}) on {data.name} ({len(ty)} train / {len(vy)} val, "
          f"{data.resolution} px), {budget.describe()} each at proxy width x{args.proxy_width:g} on {device}",
          file=sys.stderr)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=_console(True)) as bar:
        task = bar.add_task("candidates", total=len(cands))
        for c in cands:
            res = max(8, round(data.resolution * c.gamma))
            if res not in evaluators:
                try:
                    evaluators[res] = Evaluator(
                        (_resize(tx, res) if res != data.resolution else tx, ty),
                        (_resize(vx, res) if res != data.resolution else vx, vy),
                        data.num_classes, budget, recipe, device)
                except ValueError as e:
                    raise UsageError(str(e)) from None
            g = scale(base, width=c.beta, depth=c.alpha)
            proxy = scale(g, width=args.proxy_width)
            bar.update(task, description=f"a={c.alpha:g} b={c.beta:g} g={c.gamma:g} at {res} px")
            try:
                m = evaluators[res].evaluate(proxy, args.seed)
            except EvaluatorError as e:  # the device broke (a sticky CUDA error): every later candidate would fail
                print(f"hwnas: {e}; stopping with {len(rows)} of {len(cands)} candidates", file=sys.stderr)
                break
            deploy = round8(args.resolution * c.gamma)
            rows.append({**c.to_dict(), "accuracy": m.val_acc, "failure": m.failure, "proxy_resolution": res,
                         "train_seconds": round(m.train_seconds, 2), "deploy_resolution": deploy,
                         "flops": flops(g, deploy, args.num_classes), "params": params(g, args.num_classes),
                         "genotype": g.to_string(), "baseline": c == Coefficients(1.0, 1.0, 1.0) and args.baseline})
            bar.advance(task)
    scored = [r for r in rows if r["accuracy"] is not None and not r["baseline"]]
    if not scored:
        raise UsageError("every candidate failed to train")
    best = max(scored, key=lambda r: (r["accuracy"], -r["flops"]))
    for r in rows:
        r["best"] = r is best
    result = {"arch": name, "base_genotype": base.to_string(), "dataset": data.name, "data_source": data.source,
              "grid": {"step": args.step, "range": [1.0, 2.0], "target": 2.0, "tolerance": args.tolerance,
                       "size": len(grid), "evaluated": len(cands) - int(args.baseline)},
              "budget": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                         "proxy_width": args.proxy_width, "val_size": args.val_size, "seed": args.seed,
                         "device": device},
              "deploy_base_resolution": args.resolution, "num_classes": args.num_classes, "flops_unit": "multiply-adds",
              "candidates": rows, "best": {k: best[k] for k in ("alpha", "beta", "gamma", "product", "accuracy")}}
    write_text_atomic(out_dir / "scale-search.json", dumps_strict(result, indent=2) + "\n")
    _plot_search(rows, out_dir / "scale-search.png", name)
    console = _console(args.json)
    console.print(_search_table(rows, name))
    console.print(f"best: alpha {best['alpha']:g}, beta {best['beta']:g}, gamma {best['gamma']:g} "
                  f"(accuracy {best['accuracy']:.4f}); results {out_dir}/scale-search.json, plot "
                  f"{out_dir}/scale-search.png; next: hwnas scale family {args.arch} --from-search "
                  f"{out_dir}/scale-search.json")
    if args.json:
        print(dumps_strict(result, indent=2))
    return 0


def _search_table(rows: list[dict[str, Any]], name: str) -> Any:
    from rich.table import Table

    t = Table(title=f"{name}: compound coefficients at phi = 1", caption=f"{FLOPS_HELP}; accuracy: proxy training "
              "on the validation split; FLOPs at the deployment resolution")
    for c in ("alpha (depth)", "beta (width)", "gamma (res)", "a*b^2*g^2", "proxy px", "accuracy", "deploy px",
              "FLOPs (M)", "params (M)", ""):
        t.add_column(c, justify="right")
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else f"failed: {r['failure']}"
        mark = "best" if r["best"] else ("baseline" if r["baseline"] else "")
        t.add_row(f"{r['alpha']:g}", f"{r['beta']:g}", f"{r['gamma']:g}", f"{r['product']:.3f}",
                  str(r["proxy_resolution"]), acc, str(r["deploy_resolution"]), f"{r['flops'] / 1e6:.1f}",
                  f"{r['params'] / 1e6:.2f}", mark, style="bold" if r["best"] else None)
    return t


def _plot_search(rows: list[dict[str, Any]], path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = [r for r in rows if r["accuracy"] is not None]
    sc = ax.scatter([r["flops"] / 1e6 for r in ok], [r["accuracy"] for r in ok], c=[r["gamma"] for r in ok],
                    cmap="viridis")
    fig.colorbar(sc, ax=ax, label="gamma (resolution)")
    for r in ok:
        ax.annotate(f"{r['alpha']:g},{r['beta']:g},{r['gamma']:g}", (r["flops"] / 1e6, r["accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
        if r["best"] or r["baseline"]:
            ax.scatter([r["flops"] / 1e6], [r["accuracy"]], s=160, facecolors="none",
                       edgecolors="red" if r["best"] else "black", label="best" if r["best"] else "baseline (phi 0)")
    ax.set_xlabel("FLOPs at deployment resolution (M multiply-adds)")
    ax.set_ylabel("proxy accuracy")
    ax.set_title(f"{name}: (alpha, beta, gamma) grid at phi = 1")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


# ---- registration ----------------------------------------------------------------------------------
def register(sub: Any) -> None:
    from hwnas.cli.common import Parser
    from hwnas.cli.train import data_options

    arch_help = f"a reference ({', '.join(REFERENCE_NAMES)}), a genotype string or a JSON file"
    sp = sub.add_parser("scale", help="EfficientNet compound scaling: coefficient search and B0..B7 families")
    ssub = sp.add_subparsers(dest="scale_command", required=True, parser_class=Parser)

    s = ssub.add_parser(
        "search", help="grid-search (alpha, beta, gamma) for depth, width, resolution at phi = 1",
        description="EfficientNet step 1: every (alpha, beta, gamma) on a --step grid in [1, 2]^3 with "
        "|alpha*beta^2*gamma^2 - 2| <= --tolerance (alpha depth, beta width, gamma resolution), evaluated with the "
        "proxy trainer on images resized to round(data px * gamma). Writes scale-search.json and .png. "
        f"{FLOPS_HELP}.")
    s.add_argument("arch", metavar="ARCH", help=arch_help)
    s.add_argument("--step", type=positive_float, default=0.05, help="grid step, at least 0.005 (default 0.05)")
    s.add_argument("--tolerance", type=non_negative_float, default=0.1,
                   help="allowed |a*b^2*g^2 - 2| (default 0.1, which keeps the paper's 1.2,1.1,1.15 = 1.92)")
    s.add_argument("--max-candidates", type=positive_int, default=None,
                   help="evaluate at most this many, spread evenly over the sorted grid (default: all)")
    s.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip training the unscaled network (phi 0) for reference")
    s.add_argument("--epochs", type=EPOCHS, default=2.0, help="proxy epochs per candidate (default 2)")
    s.add_argument("--batch-size", type=BATCH_SIZE, default=128)
    s.add_argument("--lr", type=LR, default=0.2, help="peak learning rate per 512 images")
    s.add_argument("--proxy-width", type=positive_float_at_most(MAX_MULTIPLIER), default=0.5,
                   help="train a width-scaled proxy of each candidate (default 0.5; 1 = the candidate itself)")
    s.add_argument("--val-size", type=positive_int, default=1000, help="validation images carved from train")
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--resolution", type=RESOLUTION, default=224,
                   help="deployment base resolution for the FLOPs column (default 224; candidate: round8(R*gamma))")
    s.add_argument("--num-classes", type=CLASSES, default=1000, help="classes for the FLOPs/params columns")
    s.add_argument("--out-dir", help="where scale-search.json/.png go (default search/runs/scale-search-ARCH)")
    s.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    data_options(s)
    s.set_defaults(func=cmd_scale_search)

    f = ssub.add_parser(
        "family", help="build B0..B7 from compound coefficients, explicit multipliers or the EfficientNet preset",
        description="EfficientNet step 2: member phi has depth alpha^phi (repeats ceil per stage), width beta^phi "
        "(channels rounded to a multiple of 8, never below 90 %) and resolution round8(R * gamma^phi) (nearest "
        "multiple of 8). Explicit --multipliers/--preset resolutions are used verbatim. Dropout: the published "
        f"0.2/0.3/0.4/0.5 schedule for the preset, 0.2 + 0.3*phi/7 for coefficients. {FLOPS_HELP}.")
    f.add_argument("arch", metavar="ARCH", help=arch_help)
    how = f.add_mutually_exclusive_group(required=True)
    how.add_argument("--coefficients", metavar="A,B,G", help="alpha (depth), beta (width), gamma (resolution)")
    how.add_argument("--multipliers", metavar="W,D,R;...", help="explicit (width, depth, resolution) per member")
    how.add_argument("--from-search", metavar="JSON", help="the best coefficients of a scale-search.json")
    how.add_argument("--preset", choices=sorted(PRESETS), help="published multipliers (efficientnet: B0..B7)")
    f.add_argument("--phi", help="members: 0-7, 3 or 0,2,4 (default 0-7)")
    f.add_argument("--resolution", type=RESOLUTION, default=None, help="base resolution for --coefficients "
                   "(default 224)")
    f.add_argument("--num-classes", type=CLASSES, default=1000, help="classifier outputs (default 1000)")
    f.add_argument("--table", help="latency table (file or shipped name): predicted latency per member")
    f.add_argument("--plot", help="PNG of the family (default DIR/family.png with --export)")
    f.add_argument("--export", metavar="DIR", help="write a checked ONNX file + sidecar per member (and "
                   "family.json) into DIR")
    f.add_argument("--runs", type=RUNS, default=10, help="timed runs per latency figure when exporting")
    f.add_argument("--no-latency", action="store_true", help="skip latency measurement when exporting")
    f.add_argument("--json", action="store_true", help="the members as JSON on stdout (the table goes to stderr)")
    f.set_defaults(func=cmd_scale_family)
