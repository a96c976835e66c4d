"""``hwnas latency measure | predict | validate | measure-model``."""

from __future__ import annotations

import argparse
import csv
import inspect
import io
import shlex
import statistics
import string
import sys
import time
from pathlib import Path
from typing import Any

from hwnas.atomic import save_figure
from hwnas.cli.common import (
    BATCH_SIZES,
    CLASSES,
    NETWORKS,
    PROCESSES,
    RESOLUTION,
    RESOLUTIONS,
    SEED,
    THREADS,
    Parser,
    UsageError,
    check_output_file,
    choice_list,
    dumps_strict,
    int_in,
    load_arch,
    load_space,
    shipped_dir,
    write_text_atomic,
)
from hwnas.genotype import Genotype, parse_genotype
from hwnas.latency.table import (
    MIN_CALIBRATION,
    LatencyTable,
    calibration_genotypes,
    error_stats,
    random_genotypes,
    space_fingerprint,
)

DEFAULT_OUT = "latency_tables/{device}{runtime}-{precision}-bs{batch}-r{resolutions}.json"
SOFTWARE = ("torch", "cuda", "cudnn", "onnxruntime")  # versions recorded in a table's metadata
SETTINGS_CHECKED = ("device", "runtime", "precision", "batch_size", "resolutions", "num_classes",
                    "space_fingerprint", "channels_last", "threads", "timing", "host_allocator", "cuda_math",
                    "calibration_seed",  # another seed's networks would join the fit unrecorded; more of them may
                    *SOFTWARE)  # other kernels: entries of two versions would mix
PROBE_EVERY = 10  # validate (CPU tables): time the table's probe network before every 10th network
PROBE_WARN = 0.05  # and warn when its median moved more than 5 % from the table's


def shipped_tables_dir() -> Path:
    return shipped_dir("hwnas.latency_tables", "latency_tables")


def find_table(arg: str) -> Path:
    p = Path(arg)
    if p.is_file():
        return p
    if not p.parent.parts:  # a shipped table by name, with or without .json
        for cand in (shipped_tables_dir() / arg, shipped_tables_dir() / f"{arg}.json"):
            if cand.is_file():
                return cand
    names = sorted(x.stem for x in shipped_tables_dir().glob("*.json") if ".validation" not in x.name)
    raise UsageError(f"latency table not found: {arg} (shipped: {', '.join(names) or 'none'})")


def load_table(arg: str) -> Any:
    """A measured table (file or shipped name), or a benchmark's device latencies (``nb201:DEVICE``)."""
    from hwnas.latency import tabular

    if tabular.is_benchmark_source(arg):
        return tabular.load(arg)
    path = find_table(arg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read latency table {arg}: {e}") from None
    return LatencyTable.from_json(text, str(path))


def _setup(args: argparse.Namespace, precision: str, batch: int) -> Any:
    from hwnas.latency.measure import Setup

    channels_last = args.channels_last if args.channels_last is not None else args.device == "cuda"
    try:
        return Setup(args.device, precision, batch, channels_last, args.threads, getattr(args, "runtime", "torch"))
    except ValueError as e:
        raise UsageError(str(e)) from None


def _apply_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def apply_host_allocator(device: str) -> dict[str, str]:
    """CPU timing reuses freed memory (glibc mallopt; see ``steady_host_allocator``): ``{"host_allocator":
    setting}`` to record beside CPU figures; nothing on CUDA."""
    if device != "cpu":
        return {}
    from hwnas.latency.measure import steady_host_allocator

    return {"host_allocator": steady_host_allocator()}


def _slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False)


# ---- measure ------------------------------------------------------------------------------------
def cmd_measure(args: argparse.Namespace) -> int:
    space = load_space(args.recipe)
    combos = [(p, b) for p in args.precision for b in args.batch_size]
    if len(combos) > 1 and not all(k in args.output for k in (
            *(["{precision}"] if len(args.precision) > 1 else []), *(["{batch}"] if len(args.batch_size) > 1 else []))):
        raise UsageError("several precisions/batch sizes need {precision}/{batch} in -o, e.g. " + DEFAULT_OUT)
    if args.workers > 1 and args.device != "cuda":
        raise UsageError("--workers needs --device cuda (on CPU, other processes would share the cores a layer is "
                         "timed on; see --layers-per-process)")
    fields = ("device", "runtime", "precision", "batch", "resolutions")
    try:
        used = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(args.output) if f is not None]
    except ValueError as e:
        used, bad = [], f"{e}"
    else:  # {device.__class__}, {0}, {}: not fields; {device:>99999999}, {batch!r}: not plain
        bad = ", ".join(f"{{{f}{'!' + c if c else ''}{':' + s if s else ''}}}" for f, s, c in used
                        if f not in fields or s or c)
    if bad:
        raise UsageError(f"-o {args.output}: not a valid name template ({bad}); fields: "
                         "{device} {runtime} {precision} {batch} {resolutions}")
    for precision, batch in combos:  # -o is a template: every name it gives is checked now, not after timing
        name = args.output.format(device="device", precision=precision, batch=batch, resolutions="224", runtime="")
        if "{device" not in args.output and "{runtime" not in args.output:
            check_output_file(name, "-o")
    calib = calibration_genotypes(space, args.calibration, args.calibration_seed)
    if len(calib) < MIN_CALIBRATION:  # found now, not after hours of layers
        raise UsageError(f"--calibration {args.calibration} gives {len(calib)} calibration networks (with the "
                         f"references the space holds); the overhead fit needs at least {MIN_CALIBRATION}")
    from hwnas.latency.measure import (  # torch: after the checks above, which answer at once
        TimingProcessError,
        build_table,
        default_timer,
        device_info,
        hwnas_version,
        now_iso,
    )

    _apply_threads(args.threads)
    command = "hwnas " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if args.command_line is None \
        else args.command_line
    for precision, batch in combos:
        setup = _setup(args, precision, batch)
        timer = default_timer(setup, quick=args.quick, in_graph_events=args.in_graph_events)
        per_process = args.layers_per_process if setup.device == "cpu" else 0
        info = device_info(setup)
        out = Path(args.output.format(device=_slug(info["device_name"]), precision=precision, batch=batch,
                                      resolutions="-".join(map(str, args.resolution)),
                                      runtime="" if setup.runtime == "torch" else f"-{setup.runtime}"))
        check_output_file(out, "-o")
        allocator = apply_host_allocator(setup.device)
        metadata: dict[str, Any] = {
            "device": setup.device, "runtime": setup.runtime, **info, **allocator, "precision": precision,
            "batch_size": batch,
            "resolutions": args.resolution, "num_classes": args.num_classes, "channels_last": setup.channels_last,
            "threads": info["threads"], "timing_method": timer.method,
            "timing": {**timer.settings(), "calls_per_graph": args.calls_per_graph,
                       **({"layers_per_process": per_process} if setup.device == "cpu" else {})},
            "space": space.to_dict(),
            "space_fingerprint": space_fingerprint(space), "calibration_networks": args.calibration,
            "calibration_seed": args.calibration_seed, "date": now_iso(), "hwnas_version": hwnas_version(),
            "command": command,
        }
        table = _resume_or_new(out, metadata)
        print(f"measuring {out} ({len(table.entries)} entries already there): {info['device_name']}, {precision}, "
              f"batch {batch}, resolution(s) {', '.join(map(str, args.resolution))}", file=sys.stderr)

        def save(t: LatencyTable, path: Path = out) -> None:
            write_text_atomic(path, t.to_json())

        with _progress() as bar:
            task = bar.add_task("layers", total=None)

            def progress(what: str, done: int, total: int, task: Any = task) -> None:
                bar.update(task, description=what, completed=done, total=total)

            try:
                build_table(table, setup, timer, calib, save, progress, calls_per_graph=args.calls_per_graph,
                            layers_per_process=per_process, workers=args.workers)
            except KeyboardInterrupt:
                print(f"hwnas: interrupted; {len(table.entries)} entries and {len(table.calibration)} calibration "
                      f"networks saved in {out}: rerun the same command to resume", file=sys.stderr)
                return 130
            except TimingProcessError as e:
                print(f"hwnas: error: {e}; {len(table.entries)} entries and {len(table.calibration)} calibration "
                      f"networks saved in {out}: rerun the same command to resume", file=sys.stderr)
                return 1
        probe = table.metadata.get("probe") or {}
        if len(probe.get("ms") or []) > 1:
            lo, hi = min(probe["ms"]), max(probe["ms"])
            print(f"{out}: probe network {lo:.3f}-{hi:.3f} ms over {len(probe['ms'])} processes (machine drift "
                  f"{(hi / lo - 1) * 100:.1f}%)")
        for r, o in sorted(table.overhead.items()):
            print(f"{out}: {len(table.entries)} entries; resolution {r}: latency = {o.a:.4f} ms + {o.b:.4f} x sum "
                  f"+ {o.c:.4f} ms x layers (fit on {o.n} networks, MAPE {o.fit_mape:.2f}%); "
                  f"{table.metadata['measure_seconds']:.0f} s measuring")
    return 0


def _resume_or_new(out: Path, metadata: dict[str, Any]) -> LatencyTable:
    if not out.exists():
        return LatencyTable(metadata=metadata, source=str(out))
    try:
        old = LatencyTable.from_json(out.read_text(encoding="utf-8"), str(out))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {out}: {e}") from None
    # a table from before a setting was recorded counts as torch, and as measured with this process's CUDA math
    settings = {"cuda_math": metadata.get("cuda_math"), **old.metadata, "runtime": old.runtime}
    diff = [k for k in SETTINGS_CHECKED if settings.get(k) != metadata.get(k)]
    if old.metadata.get("device_name") != metadata["device_name"]:
        diff.insert(0, "device_name")
    if diff:
        raise UsageError(f"{out} exists with other settings ({', '.join(diff)}): choose another -o or delete it")
    old.metadata.update({k: metadata[k] for k in ("date", "command", "hwnas_version")})
    # the same seed draws the same networks first: a resume with more extends the set, one with fewer keeps it
    old.metadata["calibration_networks"] = max(int(old.metadata.get("calibration_networks") or 0),
                                               int(metadata["calibration_networks"]))
    return old


# ---- predict ------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    table = load_table(args.table)
    name, g = load_arch(args.arch)
    res = args.resolution or table.resolutions[0]
    ms = table.predict(g, res)
    s, n = table.layer_sum(g, res)
    d = {"arch": name, "genotype": g.to_string(), "table": table.source, "device": table.metadata["device_name"],
         "runtime": table.runtime, "precision": table.metadata["precision"],
         "batch_size": table.metadata["batch_size"], "resolution": res, "latency_ms": ms, "layer_sum_ms": s,
         "layers": n}
    if args.json:
        print(dumps_strict(d, indent=2))
    else:
        print(f"{name}: {ms:.4f} ms predicted on {table.describe()} at {res}x{res} ({n} layers, "
              f"sum of entries {s:.4f} ms)")
    return 0


# ---- validate -----------------------------------------------------------------------------------
def probe_warning(table: Any) -> str | None:
    """Time a CPU table's probe network on this machine, as the table was measured (threads, batch, precision,
    timer): a warning when it runs outside the table's own spread (its measuring processes' probe times) by
    more than PROBE_WARN, with the command that measures a table for this machine; None when it runs within
    it, or for a table without a probe (GPU tables, benchmark latencies). The probe takes about a second."""
    import statistics

    md = getattr(table, "metadata", {})
    probe = md.get("probe") or {}
    if md.get("device") != "cpu" or not probe.get("genotype") or not probe.get("ms"):
        return None
    import torch

    from hwnas.latency.measure import Setup, device_info, time_network

    threads = torch.get_num_threads()
    try:
        _apply_threads(md.get("threads"))
        setup = Setup("cpu", md["precision"], int(md["batch_size"]), bool(md.get("channels_last")), md.get("threads"),
                      table.runtime)
        now = time_network(parse_genotype(probe["genotype"]), int(probe["resolution"]), table.num_classes, setup,
                           _timer_from(table, setup)).ms
        here = device_info(setup)["device_name"]
    except ValueError:  # a runtime not installed here (onnxruntime): nothing to compare
        return None
    finally:
        torch.set_num_threads(threads)  # the search's training keeps its own
    lo, hi, mid = min(probe["ms"]), max(probe["ms"]), statistics.median(probe["ms"])
    if lo * (1 - PROBE_WARN) <= now <= hi * (1 + PROBE_WARN):
        return None
    same = "a machine of the same name" if here == md.get("device_name") else repr(md.get("device_name"))
    res = ",".join(str(r) for r in table.resolutions)
    return (f"this machine ({here}) runs the latency table's probe network in {now:.3g} ms, {now / mid:.2f}x the "
            f"{mid:.3g} ms measured on {same} (its own spread {lo:.3g}-{hi:.3g} ms): the table's latencies describe "
            f"that machine. To search for this one, measure a table here: hwnas latency measure --device cpu "
            f"--threads {md.get('threads') or torch.get_num_threads()} --batch-size {md['batch_size']} "
            f"--resolution {res}{'' if table.runtime == 'torch' else f' --runtime {table.runtime}'} -o my-cpu.json")


def _timer_from(table: LatencyTable, setup: Any) -> Any:
    from hwnas.latency.measure import CpuTimer, CudaGraphTimer

    t = dict(table.metadata.get("timing") or {})
    t.pop("calls_per_graph", None)
    t.pop("layers_per_process", None)
    cls = CudaGraphTimer if setup.device == "cuda" else CpuTimer
    params = inspect.signature(cls).parameters
    unknown = sorted(set(t) - set(params))  # a setting of another version, or of the other device's timer
    if unknown:
        raise UsageError(f"latency table {table.source}: metadata timing has settings this hwnas's "
                         f"{setup.device} timer does not know: {', '.join(unknown)}")
    for k, v in t.items():  # counts are integers, switches true/false (the table check bounds the numbers)
        want = type(params[k].default)
        if (want is int and (isinstance(v, bool) or not isinstance(v, int))) or (want is bool) != isinstance(v, bool):
            raise UsageError(f"latency table {table.source}: metadata timing {k} must be "
                             f"{'true or false' if want is bool else 'an integer' if want is int else 'a number'}, "
                             f"got {v!r}")
    return cls(**t)


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def cmd_validate(args: argparse.Namespace) -> int:
    table = load_table(args.table)
    md = table.metadata
    if args.workers > 1 and md["device"] != "cuda":
        raise UsageError(f"--workers needs a CUDA table ({table.source} was measured on {md['device']}: other "
                         "processes would share the cores a network is timed on)")
    if args.recipe:
        table.check_space(load_space(args.recipe))
    space = table.space
    res = args.resolution or table.resolutions[0]
    table.check_resolution(res)
    prefix = args.output or str(Path(table.source).with_suffix("")) + ".validation" + \
        ("" if res == table.resolutions[0] else f"-r{res}")  # the shipped reports' names
    where = Path(prefix).parent
    try:  # found now, not after minutes of timing
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write the validation report to {where}/: {e.strerror}; pass -o PREFIX") from None
    for ext in ("json", "csv", "png"):  # the folder is there now: a directory in the way, or not writable
        check_output_file(f"{prefix}.{ext}", "validation report")
    from hwnas.latency.measure import Setup, TimingProcessError, device_info, in_workers, now_iso, time_network

    _apply_threads(md.get("threads"))
    try:
        setup = Setup(md["device"], md["precision"], int(md["batch_size"]), bool(md.get("channels_last")),
                      md.get("threads"), table.runtime)
    except ValueError as e:
        raise UsageError(f"cannot validate {table.source} here: {e}") from None
    info_here = device_info(setup)
    here, math_here = info_here["device_name"], info_here.get("cuda_math")
    if here != md["device_name"]:
        print(f"hwnas: warning: table measured on {md['device_name']!r}, validating on {here!r}", file=sys.stderr)
    if math_here and md.get("cuda_math") and math_here != md["cuda_math"]:
        print(f"hwnas: warning: table measured with CUDA math {md['cuda_math']}, validating with {math_here}",
              file=sys.stderr)
    software = [f"{k} {md[k]} here {info_here.get(k)}" for k in SOFTWARE
                if md.get(k) is not None and md.get(k) != info_here.get(k)]
    if software:
        print(f"hwnas: warning: table measured with other software ({'; '.join(software)})", file=sys.stderr)
    allocator = apply_host_allocator(setup.device)
    if allocator and allocator["host_allocator"] != md.get("host_allocator", "default"):
        print(f"hwnas: warning: table measured with host allocator {md.get('host_allocator', 'default')!r}, "
              f"validating with {allocator['host_allocator']!r}", file=sys.stderr)
    calib = {row["genotype"] for row in table.calibration}
    nets = random_genotypes(space, args.n, args.seed, exclude=calib)
    timer = _timer_from(table, setup)
    probe = md.get("probe") or {}
    probe_g = parse_genotype(probe["genotype"]) if probe.get("genotype") and probe.get("ms") \
        and int(probe.get("resolution", 0)) == res else None
    probe_now: list[float] = []
    found: dict[int, dict[str, Any]] = {}
    t0 = time.monotonic()

    def row(g: Genotype, meas: Any) -> dict[str, Any]:
        pred, naive = table.predict(g, res), table.naive_sum(g, res)
        return {"genotype": g.to_string(), "predicted_ms": pred, "naive_sum_ms": naive, "measured_ms": meas.ms,
                "measured_p10_ms": meas.p10, "measured_p90_ms": meas.p90, "error_pct": (pred - meas.ms) / meas.ms * 100}

    with _progress() as bar:
        task = bar.add_task("validating", total=len(nets))
        if args.workers > 1:  # CUDA tables only (probes are a CPU table's)
            try:
                for i, meas in in_workers([(g, res) for g in nets], setup, timer, args.workers,
                                          num_classes=table.num_classes):
                    found[i] = row(nets[i], meas)
                    bar.advance(task)
            except TimingProcessError as e:
                print(f"hwnas: error: {e}; rerun (with fewer --workers if it ran out of memory)", file=sys.stderr)
                return 1
        else:
            for i, g in enumerate(nets):
                if probe_g is not None and i % PROBE_EVERY == 0:  # the machine's state, beside the table's record
                    probe_now.append(time_network(probe_g, res, table.num_classes, setup, timer).ms)
                found[i] = row(g, time_network(g, res, table.num_classes, setup, timer))
                bar.advance(task)
    rows = [found[i] for i in range(len(nets))]
    measured = [r["measured_ms"] for r in rows]
    drift: dict[str, Any] = {}
    if probe_now:
        then, now = statistics.median(probe["ms"]), statistics.median(probe_now)
        drift = {"probe": {"genotype": probe["genotype"], "table_median_ms": then, "now_ms": probe_now,
                           "ratio": now / then}}
        if abs(now / then - 1) > PROBE_WARN:
            print(f"hwnas: warning: this machine runs the table's probe network {abs(now / then - 1) * 100:.1f}% "
                  f"{'slower' if now > then else 'faster'} than when the table was measured ({now:.3f} vs "
                  f"{then:.3f} ms, median); the errors below include that drift", file=sys.stderr)
    report = {
        "table": table.source, "device": md["device_name"], "validated_on": here, "runtime": table.runtime,
        "precision": md["precision"],
        "batch_size": md["batch_size"], "resolution": res, "seed": args.seed,
        **allocator, **({"cuda_math": math_here} if math_here else {}),
        **error_stats([r["predicted_ms"] for r in rows], measured),
        "naive_sum": error_stats([r["naive_sum_ms"] for r in rows], measured),
        "median_measured_ms": statistics.median(measured), **drift,
        "validation_seconds": round(time.monotonic() - t0, 1), "workers": args.workers,
        "table_measure_seconds": md.get("measure_seconds"), "entries": len(table.entries),
        "date": now_iso(), "command": "hwnas " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }
    write_text_atomic(Path(f"{prefix}.json"), dumps_strict(report, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(Path(f"{prefix}.csv"), buf.getvalue())
    _scatter(rows, report, Path(f"{prefix}.png"))
    if args.json:
        print(dumps_strict(report, indent=2))
    else:
        print(f"{table.source} at {res}px, {report['n']} networks: MAPE {report['mape']:.2f}%, max "
              f"{report['max_error']:.2f}%, {report['within_5pct']:.0f}% within +-5%, Spearman "
              f"{_num(report['spearman'], '.4f')}, bias {report['bias']:+.2f}% (naive sum: MAPE "
              f"{report['naive_sum']['mape']:.2f}%); "
              f"report: {prefix}.{{json,csv,png}}")
    return 0


def _runtime_words(report: dict[str, Any]) -> str:
    return "" if report.get("runtime", "torch") == "torch" else f"{report['runtime']}, "


def _scatter(rows: list[dict[str, Any]], report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [r["measured_ms"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    lo, hi = min(m) * 0.9, max(m) * 1.1
    ax.fill_between([lo, hi], [lo * 0.95, hi * 0.95], [lo * 1.05, hi * 1.05], color="0.9", label="±5 %")
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1)
    ax.scatter(m, [r["naive_sum_ms"] for r in rows], s=10, c="tab:orange", alpha=0.6,
               label=f"naive sum (MAPE {report['naive_sum']['mape']:.1f} %)")
    ax.scatter(m, [r["predicted_ms"] for r in rows], s=12, c="tab:blue",
               label=f"hwnas (MAPE {report['mape']:.2f} %, ρ {_num(report['spearman'], '.3f')})")
    ax.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", xlim=(lo, hi), ylim=(lo, hi),
           title=f"{report['device']}\n{_runtime_words(report)}{report['precision']}, batch {report['batch_size']}, "
                 f"{report['resolution']} px, {report['n']} networks")
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# ---- measure-model ------------------------------------------------------------------------------
def cmd_measure_model(args: argparse.Namespace) -> int:
    from hwnas.latency.measure import device_info, measure_model_runtimes

    name, g = load_arch(args.arch)
    _apply_threads(args.threads)
    setup = _setup(args, args.precision, args.batch_size)
    allocator = apply_host_allocator(setup.device)
    results = measure_model_runtimes(g, args.resolution, args.num_classes, setup)
    d = {"arch": name, "genotype": g.to_string(), **device_info(setup), **allocator, "precision": args.precision,
         "batch_size": args.batch_size, "resolution": args.resolution, "channels_last": setup.channels_last,
         "runtimes": results}
    if args.json:
        print(dumps_strict(d, indent=2))
    else:
        print(f"{name} on {d['device_name']}, {args.precision}, batch {args.batch_size}, {args.resolution}px:")
        for rt, t in results.items():
            print(f"  {rt:24s} " + (f"{t['ms']:.4f} ms (p10 {t['p10']:.4f}, p90 {t['p90']:.4f}, n={t['n']})"
                                    if "ms" in t else t.get("skipped", "")))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every latency source a search can use: the shipped measured tables, then the benchmark devices."""
    from hwnas import tabular
    from hwnas.latency.tabular import PREFIX, BenchmarkLatency

    rows: list[dict[str, Any]] = []
    for path in sorted(shipped_tables_dir().glob("*.json")):
        if ".validation" in path.name:
            continue
        try:
            t = LatencyTable.from_json(path.read_text(encoding="utf-8"), str(path))
        except (OSError, ValueError) as e:
            rows.append({"name": path.stem, "kind": "table", "describe": f"unreadable: {str(e)[:80]}"})
            continue
        rows.append({"name": path.stem, "kind": "table", "space": "mbconv", "describe": t.describe(),
                     "resolutions": list(t.resolutions)})
    nb = tabular.nb201()
    for dev in sorted(nb.latency):
        src = BenchmarkLatency(dev, nb)
        rows.append({"name": PREFIX + dev, "kind": "benchmark", "space": "nb201", "describe": src.describe(),
                     "resolutions": [32], **src.summary()})
    if args.json:
        print(dumps_strict(rows, indent=2))
        return 0
    print("measured tables (MBConv space; --table NAME):")
    for r in rows:
        if r["kind"] == "table":
            res = ",".join(map(str, r.get("resolutions", [])))
            print(f"  {r['name']:48s} {r['describe']}" + (f" at {res} px" if res else ""))
    print("NAS-Bench-201 published latencies (--space nb201; --table nb201:DEVICE; 32 px input):")
    for r in rows:
        if r["kind"] == "benchmark":
            print(f"  {r['name']:24s} {r['describe']:40s} median {r['median_ms']:.4g} ms "
                  f"({r['min_ms']:.4g}-{r['max_ms']:.4g})")
    return 0


# ---- parser -------------------------------------------------------------------------------------
def register(sub: Any) -> None:
    lat = sub.add_parser("latency", help="latency lookup tables: measure, predict, validate")
    lsub = lat.add_subparsers(dest="latency_command", required=True, parser_class=Parser)

    def device_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        p.add_argument("--threads", type=THREADS, default=None, help="CPU threads (default: torch's)")
        cl = p.add_mutually_exclusive_group()
        cl.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                        help="NHWC memory format (default on CUDA)")
        cl.add_argument("--no-channels-last", dest="channels_last", action="store_false")
        p.add_argument("--num-classes", type=CLASSES, default=1000)

    m = lsub.add_parser("measure", help="time every layer the space can produce; writes a table",
                        description="Time every layer key reachable in the space (CUDA graphs + events on GPU, "
                        "repeat-median on CPU, with torch or onnxruntime), then calibration networks end to end. "
                        "Resumable: rerun the same command after an interrupt.")
    device_opts(m)
    m.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                   help="what runs the layers: torch (eager on CPU, CUDA graphs on GPU) or onnxruntime (CPU "
                   "provider: each layer exported as `hwnas export` does; --device cpu) (default: torch)")
    m.add_argument("--precision", type=choice_list("fp32", "fp16"), default=["fp32"],
                   help="fp32,fp16 (on CUDA, fp32 as PyTorch runs it by default: TF32 convolutions on Ampere "
                        "and later, full-precision matmuls; recorded as cuda_math in the table)")
    m.add_argument("--batch-size", type=BATCH_SIZES, default=[1], help="e.g. 1,64 (one table each)")
    m.add_argument("--resolution", type=RESOLUTIONS, default=[224], help="deployment resolution(s), e.g. 224,32")
    m.add_argument("--recipe", help="TOML recipe whose [space] table defines the space (default: built-in)")
    m.add_argument("--calibration", type=NETWORKS, default=40,
                   help="random calibration networks per resolution (default 40), plus the references")
    m.add_argument("--calibration-seed", type=SEED, default=20261122)
    m.add_argument("--calls-per-graph", type=int_in(1, 100_000), default=10, help="layer calls per CUDA graph")
    m.add_argument("--layers-per-process", type=int_in(0, 100_000), default=2000,
                   help="CPU: time layers in fresh processes of this many layers each, the calibration networks "
                   "spread over them (a process that has timed tens of thousands of layers runs ~10%% slower); "
                   "0 = all in one process (default 2000)")
    m.add_argument("--workers", type=PROCESSES, default=1,
                   help="CUDA: processes that build, warm up and capture layers side by side (host work: cuDNN "
                   "choosing kernels for each new shape), each replaying with the GPU to itself (default 1)")
    m.add_argument("--quick", action="store_true", help="fewer repeats (for tests)")
    m.add_argument("--no-in-graph-events", dest="in_graph_events", action="store_false",
                   help="CUDA: time each layer in a CUDA graph of its own (calls-per-graph calls) instead of groups "
                   "of layers with timing events inside one graph -- for drivers without in-graph events")
    m.add_argument("-o", "--output", default=DEFAULT_OUT,
                   help="table path; may use {device} {runtime} {precision} {batch} {resolutions} (default: "
                   "%(default)s; {runtime} is empty for torch)")
    m.set_defaults(func=cmd_measure, command_line=None)

    ls = lsub.add_parser("list", help="latency sources: shipped tables and benchmark device settings")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    p = lsub.add_parser("predict", help="predicted latency of an architecture from a table")
    p.add_argument("arch", metavar="ARCH")
    p.add_argument("--table", required=True, help="table file or shipped table name")
    p.add_argument("--resolution", type=RESOLUTION, default=None, help="default: the table's first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    v = lsub.add_parser("validate", help="predicted vs measured on random networks of the table's space")
    v.add_argument("--table", required=True)
    v.add_argument("-n", type=NETWORKS, default=100)
    v.add_argument("--seed", type=SEED, default=0)
    v.add_argument("--resolution", type=RESOLUTION, default=None)
    v.add_argument("--recipe", help="check the table was measured for this recipe's space")
    v.add_argument("-o", "--output", default=None,
                   help="report prefix (default: TABLE.validation, TABLE.validation-rRES at another resolution)")
    v.add_argument("--workers", type=PROCESSES, default=1,
                   help="CUDA tables: processes that build, warm up and capture networks side by side, each "
                   "timing with the GPU to itself (default 1)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    mm = lsub.add_parser("measure-model", help="one network end to end: eager, CUDA graph, onnxruntime")
    mm.add_argument("arch", metavar="ARCH")
    device_opts(mm)
    mm.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    mm.add_argument("--batch-size", type=int_in(1, 1 << 16), default=1)
    mm.add_argument("--resolution", type=RESOLUTION, default=224)
    mm.add_argument("--json", action="store_true")
    mm.set_defaults(func=cmd_measure_model)

