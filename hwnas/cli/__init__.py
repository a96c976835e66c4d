"""Command-line interface. The only layer that reads files, environment and flags.

Bad input of any kind ends with one line ``hwnas: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from collections.abc import Sequence

from hwnas import __version__, interrupts
from hwnas.cli import arch, bench, cache, export, latency, report, scale, score, search, supernet, train, transfer
from hwnas.cli.common import FLOPS_HELP, Parser, UsageError
from hwnas.data import DataError
from hwnas.genotype import GenotypeError
from hwnas.latency.table import TableError
from hwnas.search.records import CHOICES_WARNING
from hwnas.space import SpaceError
from hwnas.tabular import TabularError
from hwnas.units import NumberError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hwnas", description="Hardware-aware multi-objective neural architecture search. "
               + FLOPS_HELP + ".")
    p.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    arch.register(sub)
    latency.register(sub)
    train.register(sub)
    search.register(sub)
    supernet.register(sub)
    report.register(sub)
    score.register(sub)
    export.register(sub)
    scale.register(sub)
    transfer.register(sub)
    bench.register(sub)
    cache.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # a 5000-digit number in a JSON or TOML file is read (and refused by the range checks), not a ValueError of
    # Python's guard against slow conversions: the conversion of an argument-sized number is instant
    sys.set_int_max_str_digits(0)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a resume command or a worker repeats
    # SIGTERM (e.g. `timeout`, a job scheduler) saves work as Ctrl-C does; either waits for the storage call under
    # way in a search (hwnas.interrupts); not in the main thread (embedded use), the handlers stay as they are
    handlers = interrupts.install()
    try:
        with warnings.catch_warnings():
            # Optuna warns as it reads a damaged study's categorical choices back: check_study_records refuses
            # that study in one line where it is opened
            warnings.filterwarnings("ignore", message=CHOICES_WARNING)
            return _run(args)
    finally:  # called from Python (embedded, tests): the caller's handlers are put back
        interrupts.restore(handlers)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except (UsageError, GenotypeError, SpaceError, TableError, DataError, TabularError, NumberError) as e:
        lines = str(e).splitlines() or [type(e).__name__]
        print(f"hwnas: error: {lines[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        print(f"hwnas: error: file name too long: {str(e.filename)[:80]}...", file=sys.stderr)
        return 2
    except RecursionError:  # json/tomllib on [[[[...]]]] 100,000 deep
        print("hwnas: error: an input is nested too deeply to read (a damaged or hostile JSON/TOML file?)",
              file=sys.stderr)
        return 2
    except MemoryError:  # numpy's too-large arrays included
        print(f"hwnas: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # torch's allocators
        if "can't allocate memory" not in str(e) and "out of memory" not in str(e).lower():
            raise
        print(f"hwnas: error: {OUT_OF_MEMORY} ({str(e).splitlines()[0][:120]})", file=sys.stderr)
        return 1


OUT_OF_MEMORY = ("out of memory: the run needs more memory than this machine has (resolution, batch size, classes, "
                 "network width or number of networks too large?)")


if __name__ == "__main__":
    sys.exit(main())
