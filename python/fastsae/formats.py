"""Old import path of :mod:`fastsae.sae.formats`, where the code lives; kept so existing imports work."""
import sys

from .sae import formats as _impl

sys.modules[__name__] = _impl
