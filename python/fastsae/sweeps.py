"""Old import path of :mod:`fastsae.sae.sweeps`, where the code lives; kept so existing imports work."""
import sys

from .sae import sweeps as _impl

sys.modules[__name__] = _impl
