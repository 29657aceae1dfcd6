"""Old import path of :mod:`fastsae.run.pipeline`, where the code lives; kept so existing imports work."""
import sys

from .run import pipeline as _impl

sys.modules[__name__] = _impl
