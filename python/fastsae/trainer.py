"""Old import path of :mod:`fastsae.sae.trainer`, where the code lives; kept so existing imports work."""
import sys

from .sae import trainer as _impl

sys.modules[__name__] = _impl
