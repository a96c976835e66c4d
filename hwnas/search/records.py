"""What hwnas reads back from a study it wrote, checked once where a study is opened (export, transfer's
source, a resumed search): a hand-edited or damaged database is a one-line error naming the trial and the
attribute, not a traceback minutes later. Pure Python (no torch, no Optuna import)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hwnas.genotype import GenotypeError, parse_genotype
from hwnas.units import is_integer, is_number, shown


class StudyRecordError(ValueError):
    """A study attribute hwnas wrote and reads back has the wrong type or value. One-line message."""


def _number(v: Any) -> bool:  # finite: NaN, infinity and an integer too large for a float are not
    return is_number(v)


def _count(v: Any) -> bool:
    return is_integer(v, low=0)  # at most 2^63 - 1


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _parses(parse: Callable[[str], Any]) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            parse(v)
        except (GenotypeError, ValueError):  # a space's own codec error is a ValueError
            return False
        return True

    return ok


_genotype = _parses(parse_genotype)


PRIMITIVE = (bool, int, float, str)  # what a categorical parameter's choices may be (and None), as Optuna stores them
# Optuna warns (a UserWarning) when it reads other choices back: the openers silence it, as this check refuses them
CHOICES_WARNING = "Choices for a categorical distribution"

# trial attribute -> (check, what it must be); None is "not recorded" for every attribute
TRIAL_ATTRS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "genotype": (_genotype, "a genotype string"),
    "acc": (lambda v: is_number(v, low=0, high=1), "an accuracy in [0, 1]"),
    "flops": (lambda v: is_number(v, low=0), "a non-negative number"),
    "params": (lambda v: is_number(v, low=0), "a non-negative number"),
    "latency_ms": (_number, "a number"),  # a prediction (a + b sum + c n): not clamped, so any finite value
    "population_quality": (_number, "a number"),
    "feasible": (_bool, "true or false"), "trained": (_bool, "true or false"),
    "interrupted": (_bool, "true or false"),
    "cached_from": (_count, "a trial number"), "source_trial": (_count, "a trial number"),
    "parent_trial": (_count, "a trial number"), "batch": (_count, "a trial number"),
}
PROBLEM_ATTRS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "resolution": (lambda v: is_integer(v, low=1, high=8192), "a positive integer (at most 8192)"),
    "num_classes": (lambda v: is_integer(v, low=1, high=1 << 20), "a positive integer (at most 1048576)"),
    "objectives": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of names"),
}


def _shown(v: Any) -> str:
    return shown(v) if isinstance(v, (int, float)) else repr(v)[:60]


def check_study_records(name: str, study_attrs: dict[str, Any], trials: Iterable[Any],
                        directions: int | None = None, parse: Callable[[str], Any] | None = None) -> None:
    """Raise StudyRecordError naming the first attribute of ``study_attrs["hwnas"]["problem"]`` or of a
    trial's ``user_attrs`` (Optuna ``FrozenTrial``s) that hwnas would misread, or (``directions``: the
    study's number of objectives) objectives and values that disagree with it. ``parse``: the space's
    architecture codec (default: MBConv genotypes)."""
    checks = dict(TRIAL_ATTRS)
    if parse is not None:
        checks["genotype"] = (_parses(parse), "an architecture string of the study's space")
    hw = study_attrs.get("hwnas")
    if hw is not None:
        problem = hw.get("problem") if isinstance(hw, dict) else None
        if not isinstance(problem, dict):
            raise StudyRecordError(f"study {name!r}: its hwnas settings hold no problem object "
                                   f"(got {_shown(hw)}): not written by hwnas, or damaged")
        for key, (ok, what) in PROBLEM_ATTRS.items():
            if problem.get(key) is not None and not ok(problem[key]):
                raise StudyRecordError(f"study {name!r}: problem {key} must be {what}, got {_shown(problem[key])}")
        objectives = problem.get("objectives")
        values = 1 if problem.get("reward", "pareto") != "pareto" else len(objectives or [])  # Problem.directions
        if directions is not None and objectives is not None and values != directions:
            raise StudyRecordError(f"study {name!r}: objectives {', '.join(objectives)} with reward "
                                   f"{problem.get('reward', 'pareto')} are {values} values, but the study has "
                                   f"{directions} optimisation directions: damaged")
    for t in trials:
        complete = getattr(t.state, "name", None) == "COMPLETE"
        if complete and t.values is None:  # Optuna completes a trial with its values: their rows were removed
            raise StudyRecordError(f"study {name!r}: trial {t.number} is complete but has no objective values: "
                                   "damaged")
        if directions is not None and t.values is not None and len(t.values) != directions:
            raise StudyRecordError(f"study {name!r}: trial {t.number} has {len(t.values)} objective values, the "
                                   f"study {directions} directions: damaged")
        for param, dist in (getattr(t, "distributions", None) or {}).items():  # Optuna's, as stored
            odd = [c for c in getattr(dist, "choices", ()) if c is not None and not isinstance(c, PRIMITIVE)]
            if odd:
                raise StudyRecordError(f"study {name!r}: trial {t.number} parameter {str(param)[:60]!r} has a "
                                       f"choice of type {type(odd[0]).__name__}: damaged")
        a = t.user_attrs
        for key, (ok, what) in checks.items():
            if a.get(key) is not None and not ok(a[key]):
                raise StudyRecordError(f"study {name!r}: trial {t.number} attribute {key} must be {what}, got "
                                       f"{_shown(a[key])}")
        if complete and (a.get("feasible") or a.get("trained")):  # what the reports and the cache read
            lost = [k for k in ("genotype", "acc") if a.get(k) is None]
            if lost:
                raise StudyRecordError(f"study {name!r}: trial {t.number} is a complete, "
                                       f"{'trained' if a.get('trained') else 'feasible'} trial without attribute "
                                       f"{' or '.join(lost)}: damaged")
