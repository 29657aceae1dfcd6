"""Old import path of :mod:`fastsae.cooc._check` (the co-occurrence result checks), where the code lives; kept so existing imports work."""
import sys

from .cooc import _check as _impl

sys.modules[__name__] = _impl
