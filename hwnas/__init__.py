"""hwnas: hardware-aware multi-objective neural architecture search.

Importing ``hwnas`` (and ``hwnas.genotype``, ``hwnas.space``, ``hwnas.walker``) does not import torch;
``hwnas.model`` does.
"""

from hwnas.genotype import Genotype, GenotypeError, Stage, parse_genotype
from hwnas.references import REFERENCE_NAMES, reference
from hwnas.spaces.base import SpaceError
from hwnas.spaces.mbconv import SearchSpace, StageChoices, make_divisible
from hwnas.walker import Layer, flops, params, walk

__version__ = "0.1.0"

__all__ = [
    "REFERENCE_NAMES", "Genotype", "GenotypeError", "Layer", "SearchSpace", "SpaceError", "Stage", "StageChoices",
    "__version__", "flops", "make_divisible", "params", "parse_genotype", "reference", "walk",
]
