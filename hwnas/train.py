"""Compatibility alias: proxy training lives in ``hwnas.evaluators.training``.

``import hwnas.train`` gives that very module (not a copy), so its names, and monkeypatching them, are shared.
"""

import sys

from hwnas.evaluators import training

sys.modules[__name__] = training
