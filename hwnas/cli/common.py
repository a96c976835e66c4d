"""Shared CLI pieces: the one-line error convention, argument types, and reading user files."""

from __future__ import annotations

import argparse
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from hwnas.genotype import Genotype, GenotypeError, parse_genotype
from hwnas.references import REFERENCE_NAMES, reference
from hwnas.space import SearchSpace, SpaceError

FLOPS_HELP = "FLOPs are multiply-adds (MACs) of conv and linear layers, as in the MnasNet/EfficientNet papers"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = minimum - 1
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text[:40]!r}")
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


def load_space(recipe_path: str | None) -> SearchSpace:
    recipe = load_recipe(recipe_path)
    if "space" not in recipe:
        return SearchSpace.default()
    try:
        return SearchSpace.from_dict(recipe["space"])
    except (SpaceError, TypeError) as e:
        raise UsageError(f"recipe {recipe_path}: {e}") from None


def int_list(text: str) -> list[int]:
    """Comma-separated positive integers: ``1,64``."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return list(dict.fromkeys(values))


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so an interrupt never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def open_study(storage: str, name: str) -> Any:
    """An existing Optuna study, or a one-line error naming what is missing."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith("sqlite:///"):
        path = Path(storage.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UsageError(f"no such study storage: {storage} (file not found)")
        if not _is_optuna_sqlite(path):  # opening it would write Optuna's tables into someone else's database
            raise UsageError(f"{storage} is not an Optuna study storage (no studies table)")
    try:
        names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    except Exception as e:  # a broken URL or database
        raise UsageError(f"cannot open storage {storage}: {str(e).splitlines()[0]}") from None
    if name not in names:
        raise UsageError(f"no study {name!r} in {storage} (studies: {', '.join(sorted(names)) or 'none'})")
    study = optuna.load_study(study_name=name, storage=storage)
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
        raise UsageError(f"{storage}: {e}") from None
    return study


def _is_optuna_sqlite(path: Path) -> bool:
    """Whether an SQLite file holds Optuna's tables (looked at read-only)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'").fetchone() \
                is not None
    except sqlite3.Error:
        return False
