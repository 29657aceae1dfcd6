"""Old import path of :mod:`fastsae.sae.model`, where the code lives; kept so existing imports work."""
import sys

from .sae import model as _impl

sys.modules[__name__] = _impl
