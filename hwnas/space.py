"""Compatibility alias: the MBConv space lives in ``hwnas.spaces.mbconv`` (``hwnas.spaces`` has them all)."""

from hwnas.spaces.base import SpaceError
from hwnas.spaces.mbconv import GLOBAL_DIMS, STAGE_DIMS, SearchSpace, StageChoices, make_divisible

__all__ = ["GLOBAL_DIMS", "STAGE_DIMS", "SearchSpace", "SpaceError", "StageChoices", "make_divisible"]
