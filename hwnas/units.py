"""Parsing budgets (counts with SI suffixes, durations) and the one checked conversion of every number a user's
file or flag holds.

``number`` and ``integer`` are where a value read from JSON, TOML, a checkpoint or a study becomes a number the
code computes with: a bool, a string, NaN, infinity, an integer too large for a float (a 400-digit integer is
valid JSON and TOML, and ``float()`` of it raises OverflowError) or a value out of range is a ``NumberError``
(a ValueError) with a one-line message, which each caller turns into its own error type (the CLI prints one
that escapes as ``hwnas: error: ...``, exit 2). An integer without an upper bound given is still bounded by
``INT64_MAX``: no count the code keeps is larger (a loop over one would not end). ``dumps_strict`` is the one
``json.dumps`` of what hwnas prints or writes: strict JSON, never ``Infinity`` or ``NaN``."""

from __future__ import annotations

import json
import math
import re
from typing import Any

_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ms|us|µs|μs|s)?\s*$", re.IGNORECASE)
_WALL = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_WALL_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_SI = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_SECONDS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "μs": 1e-3}  # micro sign and Greek mu
_NOT_FINITE = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "+nan", "-nan"}
INT64_MAX = 2**63 - 1


class NumberError(ValueError):
    """A value that should be a number is not one, is not finite, or is out of range. One-line message."""


def shown(value: object, limit: int = 40) -> str:
    """``value`` as an error message shows it: short (a 400-digit integer as its first digits and its length),
    JSON's spelling of true, false and null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value.bit_length() <= 128:
            return str(value)
        sign = "-" if value < 0 else ""
        if value.bit_length() <= 50_000:  # beyond, str() takes seconds (or is refused by Python's digit limit)
            try:
                text = str(abs(value))
                return f"{sign}{text[:10]}... ({len(text)} digits)"
            except ValueError:
                pass
        return f"{sign}an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, float):
        return repr(value)
    text = repr(value) if isinstance(value, str) else f"{type(value).__name__} {str(value)[:limit]!r}"
    return text if len(text) <= limit else text[:limit] + "..."


def _number_range(low: float | None, high: float | None, positive: bool) -> str:
    if positive:
        return "a positive finite number" if high is None else f"a positive number (at most {high:g})"
    if low is not None and high is not None:
        return f"a number from {low:g} to {high:g}"
    if low is not None:
        return "a non-negative finite number" if low == 0 else f"a finite number >= {low:g}"
    return "a finite number" if high is None else f"a number at most {high:g}"


def _integer_range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"an integer from {low} to {high}"
    if high is not None:
        return f"an integer at most {high}"
    return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")


def number(value: object, what: str, *, low: float | None = None, high: float | None = None,
           positive: bool = False, must: str | None = None) -> float:
    """``value`` (an int or float read from a file) as a finite float in range, else NumberError naming ``what``:
    ``low``/``high`` inclusive bounds, ``positive`` (> 0); ``must`` replaces the described range in the
    message ("acc must be an accuracy in [0, 1], got ...")."""
    desc = must or _number_range(low, high, positive)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NumberError(f"{what} must be {desc}, got {shown(value)}")
    try:
        v = float(value)
    except OverflowError:  # an integer of more than 308 digits
        v = math.inf
    if not math.isfinite(v) or (positive and not v > 0) or (low is not None and v < low) \
            or (high is not None and v > high):
        raise NumberError(f"{what} must be {desc}, got {shown(value)}")
    return v


def integer(value: object, what: str, *, low: int | None = None, high: int | None = None,
            must: str | None = None) -> int:
    """``value`` (an int read from a file; not a bool, not a float) in [low, high] (``high`` None: at most
    INT64_MAX), else NumberError naming ``what``."""
    desc = must or _integer_range(low, high)
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) \
            or (high is not None and value > high):
        raise NumberError(f"{what} must be {desc}, got {shown(value)}")
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise NumberError(f"{what} must be {desc} (below 2^63), got {shown(value)}")
    return value


def is_number(value: object, *, low: float | None = None, high: float | None = None, positive: bool = False) -> bool:
    """Whether ``number`` accepts ``value`` (for checks that name the field themselves)."""
    try:
        number(value, "", low=low, high=high, positive=positive)
    except NumberError:
        return False
    return True


def is_integer(value: object, *, low: int | None = None, high: int | None = None) -> bool:
    """Whether ``integer`` accepts ``value``."""
    try:
        integer(value, "", low=low, high=high)
    except NumberError:
        return False
    return True


def dumps_strict(obj: Any, **kw: Any) -> str:
    """``json.dumps`` for everything hwnas prints or writes as JSON: strict JSON (``allow_nan=False``), never
    ``Infinity`` or ``NaN``, which other parsers refuse; a non-finite number is a NumberError."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError as e:  # "Out of range float values are not JSON compliant"
        raise NumberError(f"a result is not a finite number and cannot be written as strict JSON ({e})") from None


def _scaled(text: str, m: re.Match[str] | None, scale: dict[str, float], default: str, noun: str,
            example: str) -> float:
    quoted = shown(str(text).strip())
    if not m:
        if str(text).strip().lower() in _NOT_FINITE:
            raise NumberError(f"a {noun} must be a finite number, got {quoted}")
        raise NumberError(f"not a {noun}: {quoted} (e.g. {example})")
    v = float(m.group(1)) * scale[(m.group(2) or default).lower()]
    if not math.isfinite(v):  # float() of 1e400, or of 400 digits, is inf
        raise NumberError(f"a {noun} is too large (not a finite number): {quoted}")
    if not v > 0:
        raise NumberError(f"a {noun} must be positive: {quoted}")
    return v


def parse_count(text: str) -> float:
    """``400M``, ``0.4G``, ``4e8``, ``6m``, ``1500k`` -> a positive number (M = 10^6, G = 10^9)."""
    return _scaled(text, _COUNT.match(str(text)), _SI, "", "count", "400M, 0.4G, 4e8")


def parse_seconds(text: str) -> float:
    """A wall-clock time: ``300``, ``300s``, ``4.5m``, ``4.5min``, ``1h`` -> seconds (m is minutes here)."""
    return _scaled(text, _WALL.match(str(text)), _WALL_SECONDS, "s", "time limit", "300s, 4.5m, 1h")


def parse_ms(text: str) -> float:
    """``1.5ms``, ``800us``, ``0.002s``, ``1.5`` (ms) -> milliseconds."""
    return _scaled(text, _TIME.match(str(text)), _SECONDS, "ms", "duration", "1.5ms, 800us")
