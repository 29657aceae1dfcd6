"""Old import path of :mod:`fastsae.run.search`, where the code lives; kept so existing imports work."""
import sys

from .run import search as _impl

sys.modules[__name__] = _impl
