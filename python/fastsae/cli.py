"""Old import path of :mod:`fastsae.run.cli`, where the code lives; kept so existing imports work."""
import sys

from .run import cli as _impl

sys.modules[__name__] = _impl
