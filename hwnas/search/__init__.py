"""The search layer: problem, strategies (Optuna + pymoo + evolution), loop, reports. Never imports torch.

The library API (``from hwnas.search import Problem, EvalResult, create_search``) is loaded on first use, so
that importing one module of this package (``hwnas.search.records``) does not import Optuna."""

from __future__ import annotations

from typing import Any

_API = {"Problem": "hwnas.search.problem", "ProblemError": "hwnas.search.problem", "EvalResult": "hwnas.search.run",
        "Search": "hwnas.search.run", "create_search": "hwnas.search.run", "Row": "hwnas.search.report"}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'hwnas.search' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_API[name]), name)
