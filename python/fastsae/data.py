"""Old import path of :mod:`fastsae.sae.data`, where the code lives; kept so existing imports work."""
import sys

from .sae import data as _impl

sys.modules[__name__] = _impl
