"""Old import path of :mod:`fastsae.cooc.forest` (the maximum spanning forest), where the code lives; kept so existing imports work."""
import sys

from .cooc import forest as _impl

sys.modules[__name__] = _impl
