"""Parsing budgets: counts with SI suffixes (FLOPs, params) and durations (latency)."""

from __future__ import annotations

import math
import re

_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ms|us|µs|μs|s)?\s*$", re.IGNORECASE)
_SI = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_SECONDS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "μs": 1e-3}  # micro sign and Greek mu


def parse_count(text: str) -> float:
    """``400M``, ``0.4G``, ``4e8``, ``6m``, ``1500k`` -> a positive number (M = 10^6, G = 10^9)."""
    m = _COUNT.match(str(text))
    if not m:
        raise ValueError(f"not a count: {text!r} (e.g. 400M, 0.4G, 4e8)")
    v = float(m.group(1)) * _SI[m.group(2).lower()]
    if not v > 0 or not math.isfinite(v):
        raise ValueError(f"a count must be positive: {text!r}")
    return v


def parse_ms(text: str) -> float:
    """``1.5ms``, ``800us``, ``0.002s``, ``1.5`` (ms) -> milliseconds."""
    m = _TIME.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 1.5ms, 800us)")
    v = float(m.group(1)) * _SECONDS[(m.group(2) or "ms").lower()]
    if not v > 0 or not math.isfinite(v):
        raise ValueError(f"a duration must be positive: {text!r}")
    return v
