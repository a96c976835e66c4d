"""Shared CLI pieces: the one-line error convention, argument types, and reading user files."""

from __future__ import annotations

import argparse
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from hwnas import atomic
from hwnas.genotype import Genotype, GenotypeError, parse_genotype
from hwnas.references import REFERENCE_NAMES, reference
from hwnas.space import SearchSpace, SpaceError
from hwnas.units import dumps_strict as dumps_strict  # the one json.dumps of all the CLI prints and writes
from hwnas.units import shown
from hwnas.urls import hide_secrets, mask_url, sqlite_path

FLOPS_HELP = "FLOPs are multiply-adds (MACs) of conv and linear layers, as in the MnasNet/EfficientNet papers"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


MAX_COUNT = 1_000_000_000  # an integer flag without a tighter bound (images, layers, trial numbers)


def _int_at_least(text: str, minimum: int, what: str, maximum: int = MAX_COUNT) -> int:
    try:
        v = int(text)
    except ValueError:
        v = minimum - 1
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text[:40]!r}")
    if v > maximum:
        raise argparse.ArgumentTypeError(f"expected a {what} integer (at most {maximum}), got {text[:40]!r}")
    return v


def int_in(low: int, high: int) -> Any:
    """An argparse type: an integer in [low, high] (bounds far beyond use keep absurd input from hanging or
    overflowing a backend)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = low - 1
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text[:40]!r}")
        return v

    parse.__name__ = f"integer {low}..{high}"
    return parse


SEED = int_in(0, 2**32 - 1)  # numpy's and torch's seeds
RESOLUTION = int_in(1, 8192)  # pixels
TRAIN_RESOLUTION = int_in(8, 8192)  # pixels a network trains at (random crops pad 4)
CLASSES = int_in(1, 1 << 20)
THREADS = int_in(1, 4096)
NETWORKS = int_in(1, 100_000)  # networks drawn, calibrated or validated
POPULATION = int_in(1, 10_000)  # pymoo compares every pair of a generation for duplicates
# bounds far beyond any real use, so that no input runs without end or overflows a float (recipes share them)
MAX_TRIALS = 1_000_000
TRIALS = int_in(1, MAX_TRIALS)
MAX_BATCH = 1 << 20
BATCH_SIZE = int_in(1, MAX_BATCH)
PROCESSES = int_in(1, 256)  # processes started (timing workers, evaluator processes)
PARALLEL = int_in(1, 4096)  # candidates trained together
RUNS = int_in(1, 100_000)  # timed runs
MAX_EPOCHS = 100_000.0
MAX_SECONDS = 1e7  # about 116 days
MAX_LR = 1e6


def positive_float_at_most(high: float) -> Any:
    """An argparse type: a number in (0, high]."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = -1.0
        if not 0 < v <= high:
            raise argparse.ArgumentTypeError(f"expected a positive number (at most {high:g}), got {text[:40]!r}")
        return v

    parse.__name__ = f"number in (0, {high:g}]"
    return parse


EPOCHS = positive_float_at_most(MAX_EPOCHS)
SECONDS = positive_float_at_most(MAX_SECONDS)
LR = positive_float_at_most(MAX_LR)


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text[:40]!r}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "non-negative")


def streamed_count(text: str) -> int:
    """A positive integer up to 2^63 - 1: how many of something produced one at a time and never held (a
    stream the reader stops), so no smaller bound is needed."""
    return _int_at_least(text, 1, "positive", 2**63 - 1)


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text[:40]!r}")
    return v


def probability(text: str) -> float:
    """A rate in [0, 1) (dropout, drop path)."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return v


def shipped_dir(package: str, repo_folder: str) -> Path:
    """Data shipped inside the installed package (``package``), or the repository's top-level folder of
    the same files when hwnas runs from a source checkout."""
    try:
        p = Path(str(resources.files(package)))
        if p.is_dir():
            return p
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / repo_folder


# ---- reading user input ---------------------------------------------------------------------------
def load_arch(arg: str) -> tuple[str, Genotype]:
    """ARCH is a reference name, a genotype string, or a JSON file holding a genotype."""
    key = arg.strip().lower().replace("_", "-")
    if key in REFERENCE_NAMES:
        return key, reference(key)
    path = Path(arg)
    try:
        exists, is_file = path.exists(), path.is_file()
    except OSError:  # a name too long for a file (a long genotype string)
        exists = is_file = False
    if path.suffix.lower() == ".json" or (exists and "," not in arg):
        if not is_file:
            raise UsageError(f"genotype file not found: {arg[:200]}")
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
        raise UsageError(f"recipe {path} is a directory, not a TOML file" if p.is_dir()
                         else f"recipe not found: {path}")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"recipe {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot read recipe {path}: {e}") from None


def recipe_table(recipe: dict[str, Any], path: str | Path, *names: str) -> dict[str, Any]:
    """The recipe's table ``[names[0].names[1]...]``, or {} where it is not given; a value there that is not
    a table (``profile = 1``, ``[profile] cpu = 1``) is refused in one line naming the recipe and the key."""
    table: Any = recipe
    for i, name in enumerate(names):
        table = table.get(name, {})
        if not isinstance(table, dict):
            key = ".".join(names[: i + 1])
            got = shown(table) if isinstance(table, (int, float)) else \
                repr(table)[:40] if isinstance(table, str) else f"a {type(table).__name__}"
            raise UsageError(f"recipe {path}: [{key}] must be a table, got {got}")
    return table


def load_space(recipe_path: str | None) -> SearchSpace:
    recipe = load_recipe(recipe_path)
    if "space" not in recipe:
        return SearchSpace.default()
    try:
        return SearchSpace.from_dict(recipe["space"])
    except (SpaceError, TypeError) as e:
        raise UsageError(f"recipe {recipe_path}: {e}") from None


def int_list_in(low: int, high: int) -> Any:
    """An argparse type: comma-separated integers in [low, high]: ``1,64``."""
    def parse(text: str) -> list[int]:
        what = (f"expected comma-separated positive integers (at most {high})" if low == 1 else
                f"expected comma-separated integers from {low} to {high}") + f", got {text[:40]!r}"
        try:
            values = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(what) from None
        if not values or any(not low <= v <= high for v in values):
            raise argparse.ArgumentTypeError(what)
        return list(dict.fromkeys(values))

    parse.__name__ = f"integers {low}..{high}"
    return parse


int_list = int_list_in(1, MAX_COUNT)  # comma-separated positive integers
RESOLUTIONS = int_list_in(1, 8192)
BATCH_SIZES = int_list_in(1, 1 << 16)


def choice_list(*choices: str) -> Any:
    def parse(text: str) -> list[str]:
        values = [t.strip() for t in text.split(",") if t.strip()]
        bad = [v for v in values if v not in choices]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}, got {text!r}")
        return list(dict.fromkeys(values))

    return parse


def check_output_file(path: Path | str, what: str = "output") -> Path:
    """Refuse, before any work, an output file path that cannot be written: a directory there, a file where
    a parent folder should be, or a parent that cannot be created or written."""
    import os

    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {p} is a directory; give a file name")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{what} {p}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {p}: cannot write in {parent}")
    return p


def check_output_dir(path: Path | str, what: str = "output folder") -> Path:
    """As ``check_output_file`` for a folder that will be created if missing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {p} is a file, not a folder")
    if not p.exists():
        check_output_file(p, what)
    return p


def val_size_of(train_images: int, fraction: float) -> int:
    """Images carved from the training split for validation: ``fraction`` of them, 1 to 5,000 (the split a
    search measures accuracy on, and a supernet holds out)."""
    return max(1, min(5000, int(train_images * fraction)))


def load_torch_file(path: str, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` of an untrusted file on the CPU, or one line naming the fault: not
    found, unreadable, damaged or not a PyTorch file (``what`` names it in the message)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} not found: {path}")
    import warnings

    import torch

    try:  # untrusted bytes: the unpickler fails on them in any way (IndexError, struct.error, ...)
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 10": the error line says it all
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a size it claims and cannot have (MemoryError) included
        why = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UsageError(f"cannot load {what} {path}: {why}" if isinstance(e, OSError) else
                         f"cannot load {what} {path} (damaged, or not a PyTorch {what.split()[-1]}): {why}") from None


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a uniquely named temporary file and rename (``hwnas.atomic``): an interrupt or error never
    leaves a truncated file, a temporary file, or the old file changed."""
    atomic.write_text_atomic(path, text)


def open_study(storage: str, name: str) -> Any:
    """An existing Optuna study, or a one-line error naming what is missing."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its storage retries: hwnas says what failed, once
    from hwnas.search.run import journal_path, storage_of

    shown = mask_url(storage)  # never the password
    path = sqlite_path(storage)
    if path is not None:
        if not path.is_file():
            raise UsageError(f"no such study storage: {shown} (file not found)")
        check_sqlite_study_file(storage, path)  # opening it would write Optuna's tables into someone else's file
    if (journal := journal_path(storage)) is not None and not Path(journal).is_file():
        raise UsageError(f"no such study storage: {shown} (journal file not found)")
    try:
        opened = storage_of(storage)
        names = {s.study_name for s in optuna.get_all_study_summaries(opened)}
    except Exception as e:  # a broken URL or database
        raise UsageError(f"cannot open storage {shown}: {hide_secrets(first_line(e), storage)}") from None
    if name not in names:
        listed = sorted(n if isinstance(n, str) else repr(n)[:60] for n in names)  # a damaged name: a BLOB
        raise UsageError(f"no study {name!r} in {shown} (studies: {', '.join(listed) or 'none'})")
    study = optuna.load_study(study_name=name, storage=opened)
    from hwnas.search.records import StudyRecordError, check_study_records

    hw = study.user_attrs.get("hwnas")
    kind = ((hw or {}).get("problem") or {}).get("space_kind") if isinstance(hw, dict) else None
    parse = None
    if isinstance(kind, str) and kind != "mbconv":  # architectures of a benchmark space
        from hwnas.spaces import get_space

        try:
            parse = get_space(kind).parse
        except ValueError as e:
            raise UsageError(f"study {name!r}: {e}") from None
    try:
        check_study_records(name, study.user_attrs, study.get_trials(deepcopy=False), len(study.directions), parse)
    except StudyRecordError as e:
        raise UsageError(f"{shown}: {e}") from None
    return study


def first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


# The tables of Optuna's RDB storage (optuna.storages._rdb.models, and alembic's revision table): Optuna creates a
# missing one, and the rows of its version tables, on opening a storage -- a write into the file. Optuna 5.1;
# tests/test_storage.py compares the list with the installed Optuna's.
OPTUNA_TABLES = ("studies", "study_directions", "study_user_attributes", "study_system_attributes", "trials",
                 "trial_params", "trial_values", "trial_intermediate_values", "trial_user_attributes",
                 "trial_system_attributes", "trial_heartbeats", "version_info", "alembic_version")
OPTUNA_VERSION_TABLES = ("version_info", "alembic_version")  # each holds one row


def check_sqlite_study_file(storage: str, path: Path, patience: float = 10.0) -> None:
    """Refuse (one line) an SQLite file that is no complete Optuna study storage: damaged or not SQLite at all
    (its header, its pages: ``PRAGMA quick_check``), an SQLite database without Optuna's tables, or one missing
    any of them or a row of its version tables (which opening it with Optuna would write, even for reading).
    Looked at read-only: never written.

    Another process may be creating the storage right now (a second worker, a dashboard, a script opening the
    study): its tables and version rows appear one by one. A verdict on a file that changed since the look
    before is therefore a second look's, for up to ``patience`` seconds; a file nobody writes gets it at once."""
    import time

    deadline = time.monotonic() + patience
    while True:
        before = _file_state(path)
        try:
            _check_sqlite_study_file(storage, path)
            return
        except UsageError as e:
            time.sleep(0.3)
            busy = isinstance(e, _Unreadable)  # locked: someone is writing it
            if (not busy and _file_state(path) == before) or time.monotonic() > deadline:
                raise


class _Unreadable(UsageError):
    """The file could not be read now (locked by a writer): no verdict on it yet."""


def _file_state(path: Path) -> tuple[tuple[int, int], ...] | None:
    """Size and change time of ``path`` and of its write-ahead log: what a writer changes."""
    state = []
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")):
        try:
            st = p.stat()
        except OSError:
            continue
        state.append((st.st_size, st.st_mtime_ns))
    return tuple(state) if state else None


def _check_sqlite_study_file(storage: str, path: Path) -> None:
    import contextlib
    import sqlite3

    shown_url = mask_url(storage)
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            check = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            empty = [t for t in OPTUNA_VERSION_TABLES
                     if t in tables and db.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() is None]
    except sqlite3.OperationalError as e:  # locked, unreadable: not a verdict on the file
        raise (_Unreadable if "locked" in str(e) else UsageError)(f"cannot read {shown_url}: {e}") from None
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        raise UsageError(f"{shown_url} is damaged or not an SQLite database ({e})") from None
    if check != ["ok"]:
        raise UsageError(f"{shown_url} is damaged or not an SQLite database (integrity check: "
                         f"{'; '.join(check)[:200]})")
    if "studies" not in tables:
        raise UsageError(f"{shown_url} is not an Optuna study storage (no studies table)")
    missing = [t for t in OPTUNA_TABLES if t not in tables]
    if missing:
        raise UsageError(f"{shown_url} is not a complete Optuna study storage (missing table"
                         f"{'s' * (len(missing) > 1)} {', '.join(missing)}): damaged, or not written by Optuna")
    if empty:
        raise UsageError(f"{shown_url} is not a complete Optuna study storage (no row in table"
                         f"{'s' * (len(empty) > 1)} {', '.join(empty)}): damaged")
