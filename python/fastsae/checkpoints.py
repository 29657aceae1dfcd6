"""Old import path of :mod:`fastsae.sae.checkpoints`, where the code lives; kept so existing imports work."""
import sys

from .sae import checkpoints as _impl

sys.modules[__name__] = _impl
