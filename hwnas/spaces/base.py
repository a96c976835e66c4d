"""What every search space offers: named categorical dimensions and the operations strategies use.

A space is a product of named categorical dimensions (``dims``: ``(name, choices)`` pairs). A point is a
*choice vector*, one integer index per dimension (pymoo's encoding); ``to_choices``/``from_choices`` give
the dict-of-values view Optuna samples. The vector operations (validate, sample, mutate, crossover) are
the same for every space and live here; a space adds what is its own:

* ``decode(vector) -> arch`` and ``encode(arch) -> vector``: its one architecture type (frozen,
  hashable, with ``to_string()``), and ``parse(text) -> arch``, the string form that round-trips;
  ``canonical(arch)``, the representative of the network where several architectures spell one;
* ``flops(arch, resolution, num_classes)`` (multiply-adds) and ``params(arch, num_classes)``, pure;
* ``build(arch, num_classes, input_size)`` -> a ``torch.nn.Module`` (torch imported only there);
* ``info()``: a JSON-able description, and ``kind``, ``default_resolution``, ``default_num_classes``.

No torch here; every random operation takes an explicit ``numpy.random.Generator``; every retry loop is
bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


class SpaceError(ValueError):
    """Bad space definition, bad choice vector, or an architecture outside the space. One-line message."""


class CategoricalSpace:
    """Mixin: the vector operations of a space defined by ``self.dims``. Subclasses set ``dims``, ``name``
    and ``kind`` and implement the codec and costs (see the module docstring)."""

    dims: tuple[tuple[str, tuple[Any, ...]], ...]
    name: str
    kind: str = ""
    default_resolution: int = 224
    default_num_classes: int = 1000
    has_costs: bool = True  # False: no FLOPs/params model (a tabular space whose networks differ per task)

    # ---- description ----------------------------------------------------------------------------
    @property
    def n_dims(self) -> int:
        return len(self.dims)

    @property
    def upper_bounds(self) -> np.ndarray:
        """Inclusive upper bound of each integer dimension (lower bounds are 0)."""
        return np.array([len(opts) - 1 for _, opts in self.dims], dtype=np.int64)

    def size(self) -> int:
        """Number of distinct choice vectors (an upper bound on distinct networks)."""
        return math.prod(len(opts) for _, opts in self.dims)

    # ---- vectors --------------------------------------------------------------------------------
    def validate(self, vector: Sequence[int]) -> np.ndarray:
        v = np.asarray(vector)
        if v.shape != (self.n_dims,):
            raise SpaceError(f"choice vector has {v.size} entries, the space {self.name!r} has {self.n_dims}")
        if not np.issubdtype(v.dtype, np.integer):
            if not np.all(np.equal(np.mod(v, 1), 0)):
                raise SpaceError("choice vector entries must be integers")
            v = v.astype(np.int64)
        bad = np.flatnonzero((v < 0) | (v > self.upper_bounds))
        if bad.size:
            i = int(bad[0])
            raise SpaceError(f"choice {self.dims[i][0]}={int(v[i])} out of range 0..{int(self.upper_bounds[i])}")
        return v.astype(np.int64)

    def to_choices(self, vector: Sequence[int]) -> dict[str, Any]:
        v = self.validate(vector)
        return {name: opts[int(i)] for (name, opts), i in zip(self.dims, v, strict=True)}

    def from_choices(self, choices: Mapping[str, Any]) -> np.ndarray:
        out = []
        for name, opts in self.dims:
            if name not in choices:
                raise SpaceError(f"choice {name!r} missing")
            try:
                out.append(opts.index(choices[name]))
            except ValueError:
                raise SpaceError(f"{name}={choices[name]!r} is not a choice (choices: {list(opts)})") from None
        return np.array(out, dtype=np.int64)

    # ---- random operations (explicit RNG) ------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.upper_bounds + 1).astype(np.int64)

    def sample_where(
        self, rng: np.random.Generator, accept: Callable[[Any], bool], max_attempts: int = 10_000
    ) -> np.ndarray:
        """A uniform sample conditioned on ``accept`` (called with the decoded architecture); ``SpaceError``
        after ``max_attempts`` rejections."""
        for _ in range(max_attempts):
            v = self.sample(rng)
            if accept(self.decode(v)):
                return v
        raise SpaceError(f"no acceptable architecture in {max_attempts} samples: the constraint may be too tight")

    def mutate(self, vector: Sequence[int], rng: np.random.Generator, prob: float | None = None) -> np.ndarray:
        """Resample each dimension with probability ``prob`` (default 1/n_dims) to a *different* value;
        at least one dimension always changes (if any has two or more choices)."""
        v = self.validate(vector).copy()
        ub = self.upper_bounds
        mutable = np.flatnonzero(ub > 0)
        if mutable.size == 0:
            return v
        p = 1.0 / mutable.size if prob is None else prob
        picked = mutable[rng.random(mutable.size) < p]
        if picked.size == 0:
            picked = np.array([rng.choice(mutable)])
        for i in picked:
            shift = rng.integers(1, ub[i] + 1)  # any value but the current one
            v[i] = (v[i] + shift) % (ub[i] + 1)
        return v

    def crossover(self, a: Sequence[int], b: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        """Uniform crossover: each dimension from ``a`` or ``b`` with equal probability."""
        va, vb = self.validate(a), self.validate(b)
        return np.where(rng.random(self.n_dims) < 0.5, va, vb)

    # ---- what each space provides --------------------------------------------------------------------
    def decode(self, vector: Sequence[int]) -> Any:
        raise NotImplementedError

    def encode(self, arch: Any) -> np.ndarray:
        raise NotImplementedError

    def canonical(self, arch: Any) -> Any:
        """The one architecture that stands for ``arch``'s network among those the space can spell (two that
        build one network have one ``canonical``): what a search trains, caches and records. ``arch`` itself
        where every spelling is its own network or ``decode`` already gives the representative (MBConv)."""
        return arch

    def parse(self, text: str) -> Any:
        """The architecture a string (or, where the space has one, JSON) spells; ``SpaceError`` or the
        space's own codec error (a ``ValueError``) saying why not."""
        raise NotImplementedError

    def flops(self, arch: Any, resolution: int | None = None, num_classes: int | None = None) -> int:
        """Multiply-adds of convolution and linear layers at ``resolution`` (default: the space's)."""
        raise NotImplementedError

    def params(self, arch: Any, num_classes: int | None = None) -> int:
        raise NotImplementedError

    def build(self, arch: Any, num_classes: int | None = None, input_size: int | None = None) -> Any:
        """A ``torch.nn.Module`` for ``arch`` (imports torch)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "dims": [[n, list(o)] for n, o in self.dims],
                "size": self.size(), "default_resolution": self.default_resolution,
                "default_num_classes": self.default_num_classes}
