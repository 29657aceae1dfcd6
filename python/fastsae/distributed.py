"""Old import path of :mod:`fastsae.cooc.distributed` (co-occurrence across processes), where the code lives; kept so existing imports work."""
import sys

from .cooc import distributed as _impl

sys.modules[__name__] = _impl
